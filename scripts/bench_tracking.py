#!/usr/bin/env python3
"""Benchmark tracking mode against per-frame estimation on a synthetic sequence of a moving object (issue 11).

A driller_like slides and turns on a textured table (resting pose, smooth trajectory, 30 frames/s), rendered
with exact depth by vfm_pose_ros.data.render. Three runs over the same frames:

* per-frame: ``estimator.predict`` on every frame (no filter);
* filtered: per-frame estimation + the temporal filter (outliers, SO(3)/translation smoothing), no warm start;
* tracking: the filter + tracking mode (ICP warm-started from the track's prediction, skipping the keypoint
  stage while the depth confirms the pose; full estimation as fallback and every ``--redetect-every`` frames).

Jitter is the deviation of the estimated frame-to-frame motion from the ground-truth motion (object centre, mm;
relative rotation, degrees); throughput is frames per second of the estimation calls (rendering excluded).

    .venv/bin/python scripts/bench_tracking.py [--frames 90] [--checkpoint models/dinov2_small.pt] [--oracle]

Uses models/dinov2_small.pt when it exists, else (or with --oracle) the DINOv2 pipeline with an oracle head
(perfect segmentation and votes from the ground truth: the geometric stages only); it prints which.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vfm_pose_ros.core.catalogue import Catalogue  # noqa: E402
from vfm_pose_ros.core.metrics import add  # noqa: E402
from vfm_pose_ros.core.tracking import PoseTracker, TrackingConfig  # noqa: E402
from vfm_pose_ros.core.transforms import rotation_angle_deg  # noqa: E402
from vfm_pose_ros.core.types import Frame, GroundTruthPose  # noqa: E402
from vfm_pose_ros.paths import default_catalogue_dir  # noqa: E402

OBJECT = "driller_like"


def noisy_depth(depth: np.ndarray, rng, sigma_mm_at_1m: float, dropout: float) -> np.ndarray:
    """Structured-light/stereo-like depth noise: Gaussian with sigma growing with z squared, 1 mm quantisation,
    and a fraction of missing pixels. Exact rendered depth would make per-frame ICP unrealistically steady."""
    d = depth.astype(np.float64)
    valid = d > 0
    d[valid] += rng.normal(0.0, 1.0, int(valid.sum())) * sigma_mm_at_1m * 1e-3 * d[valid] ** 2
    d = np.round(d * 1000.0) / 1000.0
    d[rng.random(d.shape) < dropout] = 0.0
    return d.astype(np.float32)


def render_sequence(catalogue: Catalogue, n: int, fps: float, seed: int = 0, depth_noise_mm: float = 2.0,
                    dropout: float = 0.02):
    """Frames of OBJECT sliding and turning on a table: (Frame with .gts, R_gt, t_gt) per frame."""
    from tqdm import tqdm

    from vfm_pose_ros.data.render import Light, Plane, Renderer
    from vfm_pose_ros.data.scenes import LMO_K, SceneGenerator, _look_at, _rot_z, random_background, random_texture

    rng = np.random.default_rng(seed)
    obj = catalogue[OBJECT]
    Rs, p = SceneGenerator([obj]).stable_poses(obj)
    R_rest = Rs[int(np.argmax(p))]
    z0 = -(obj.vertices @ R_rest.T)[:, 2].min()
    elev, dist = math.radians(40.0), 0.75
    cam = dist * np.array([math.cos(elev), 0.0, math.sin(elev)])
    R_cw, t_cw = _look_at(cam, np.array([0.0, 0.0, 0.05]))
    plane = Plane(normal=R_cw[:, 2], origin=t_cw, axes=np.stack([R_cw[:, 0], R_cw[:, 1]]),
                  texture=random_texture(rng), texel_m=0.002, max_depth=2.5)
    background = random_background(rng, 480, 640)
    renderer = Renderer(640, 480, K=LMO_K)
    light = Light(direction=(-0.4, -0.6, -1.0), intensity=0.7, ambient=0.35)
    out = []
    for k in tqdm(range(n), desc="render", unit="frame"):
        s = k / fps
        xy = np.array([0.08 * math.sin(2 * math.pi * s / 4.0), 0.05 * math.sin(2 * math.pi * s / 2.5)])
        yaw = 1.2 + 0.7 * math.sin(2 * math.pi * s / 3.0)
        Rw = _rot_z(yaw) @ R_rest
        R, t = R_cw @ Rw, R_cw @ np.array([xy[0], xy[1], z0]) + t_cw
        res = renderer.render([(obj, R, t)], background=background, light=light, plane=plane)
        depth = noisy_depth(res.depth, rng, depth_noise_mm, dropout) if depth_noise_mm > 0 else res.depth
        frame = Frame(rgb=res.rgb, K=LMO_K.copy(), depth=depth, stamp_ns=int(round((1.0 + s) * 1e9)))
        frame.gts = [GroundTruthPose(obj_id=obj.class_id, name=OBJECT, R=R, t=t, visib_fract=res.visib_fract[0],
                                     mask=res.masks_visib[0])]
        out.append((frame, R, t))
    return out


def load(args, catalogue):
    """(estimator, description): the trained checkpoint when present, else the oracle-head pipeline."""
    from vfm_pose_ros.models import dinov2

    ckpt = Path(args.checkpoint)
    if not args.oracle and ckpt.is_file():
        est = dinov2.Estimator.from_checkpoint(ckpt, device=args.device)
        return est, f"DINOv2 checkpoint {ckpt} ({est.config.get('backbone')}, {est.config.get('img_size')} px)"
    import torch

    torch.manual_seed(0)
    cfg = {**dinov2.SMALL_CONFIG, "img_size": 112}
    est = dinov2.OracleEstimator(dinov2.build_net(cfg, catalogue), catalogue, device=args.device)
    why = "--oracle" if args.oracle else f"{ckpt} not found"
    return est, f"DINOv2 pipeline with an ORACLE head ({why}): network error excluded, geometric stages only"


def run(mode: str, est, frames, args, catalogue) -> dict:
    from tqdm import tqdm

    tracker = None
    if mode != "per-frame":
        cfg = TrackingConfig(smoothing=args.smoothing, velocity_gain=args.velocity_gain,
                             warm_start=mode == "tracking", redetect_every=args.redetect_every,
                             min_fitness=args.min_fitness)
        tracker = PoseTracker(est, cfg, catalogue)
    est.predict(frames[0][0])  # warm-up (lazy initialisation) outside the timing
    poses, times = [], []
    for frame, _, _ in tqdm(frames, desc=mode, unit="frame", leave=False):
        t0 = time.perf_counter()
        out = tracker.step(frame) if tracker else est.predict(frame)
        times.append(time.perf_counter() - t0)
        mine = [p for p in out if p.name == OBJECT]
        poses.append(max(mine, key=lambda p: p.score) if mine else None)
    obj = catalogue[OBJECT]
    pts = obj.eval_points(1000)
    c = obj.bbox_center
    dt_mm, dr_deg, errs = [], [], []
    for k, ((_, Rg, tg), p) in enumerate(zip(frames, poses)):
        errs.append(add(p.R, p.t, Rg, tg, pts) if p is not None else np.inf)
        q = poses[k - 1] if k else None
        if p is None or q is None:
            continue
        _, Rg0, tg0 = frames[k - 1]
        move_est = (p.R @ c + p.t) - (q.R @ c + q.t)
        move_gt = (Rg @ c + tg) - (Rg0 @ c + tg0)
        dt_mm.append(1000 * np.linalg.norm(move_est - move_gt))
        dr_deg.append(float(rotation_angle_deg(p.R @ q.R.T, Rg @ Rg0.T)))
    errs = np.array(errs)
    res = {
        "mode": mode, "frames": len(frames), "posed": int(np.isfinite(errs).sum()),
        "fps": len(times) / sum(times), "ms_median": 1000 * float(np.median(times)),
        "jitter_mm_mean": float(np.mean(dt_mm)) if dt_mm else None,
        "jitter_mm_p95": float(np.percentile(dt_mm, 95)) if dt_mm else None,
        "jitter_deg_mean": float(np.mean(dr_deg)) if dr_deg else None,
        "jitter_deg_p95": float(np.percentile(dr_deg, 95)) if dr_deg else None,
        "add_mm_median": 1000 * float(np.median(errs)),
        "add_01d": float(np.mean(errs < 0.1 * obj.diameter)),
    }
    if tracker:
        res["full_estimations"] = tracker.stats.full
        res["tracked_frames"] = tracker.stats.tracked
        res["fallbacks"] = tracker.stats.fallbacks
        res["rejected_outliers"] = tracker.filter.stats.rejected
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=90)
    ap.add_argument("--fps", type=float, default=30.0, help="frame rate of the synthetic sequence")
    ap.add_argument("--checkpoint", default=str(REPO / "models" / "dinov2_small.pt"))
    ap.add_argument("--oracle", action="store_true", help="use the oracle head even when the checkpoint exists")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoothing", type=float, default=0.5)
    ap.add_argument("--velocity-gain", type=float, default=0.3)
    ap.add_argument("--min-fitness", type=float, default=0.6)
    ap.add_argument("--redetect-every", type=int, default=15)
    ap.add_argument("--depth-noise-mm", type=float, default=2.0,
                    help="depth noise sigma at 1 m (grows with z^2; 0 = exact rendered depth)")
    ap.add_argument("--dropout", type=float, default=0.02, help="fraction of depth pixels missing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    catalogue = Catalogue.from_dir(default_catalogue_dir())
    frames = render_sequence(catalogue, args.frames, args.fps, args.seed, args.depth_noise_mm, args.dropout)
    est, what = load(args, catalogue)
    print(f"estimator: {what}; device {est.device}")
    gt_move = [1000 * np.linalg.norm(frames[k][2] - frames[k - 1][2]) for k in range(1, len(frames))]
    gt_rot = [float(rotation_angle_deg(frames[k][1], frames[k - 1][1])) for k in range(1, len(frames))]
    print(f"sequence: {len(frames)} frames at {args.fps:g} fps; ground-truth motion per frame: "
          f"{np.mean(gt_move):.1f} mm, {np.mean(gt_rot):.2f} deg (mean); depth noise {args.depth_noise_mm:g} mm "
          f"at 1 m, {100 * args.dropout:g} % missing")
    results = [run(m, est, frames, args, catalogue) for m in ("per-frame", "filtered", "tracking")]

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    print(f"\n{'mode':<10} {'frames/s':>8} {'ms/frame':>8} {'jitter mm':>17} {'jitter deg':>17} "
          f"{'ADD med mm':>10} {'ADD-0.1d':>8} {'posed':>6}  notes")
    print(f"{'':<10} {'':>8} {'':>8} {'mean / p95':>17} {'mean / p95':>17}")
    for r in results:
        notes = ""
        if "tracked_frames" in r:
            notes = (f"full {r['full_estimations']}, tracked {r['tracked_frames']}, fallbacks {r['fallbacks']}, "
                     f"outliers {r['rejected_outliers']}")
        print(f"{r['mode']:<10} {r['fps']:>8.1f} {r['ms_median']:>8.1f} "
              f"{f(r['jitter_mm_mean'], '.2f'):>8} / {f(r['jitter_mm_p95'], '.2f'):<6} "
              f"{f(r['jitter_deg_mean'], '.3f'):>8} / {f(r['jitter_deg_p95'], '.3f'):<6} "
              f"{r['add_mm_median']:>10.2f} {r['add_01d']:>8.2f} {r['posed']:>3}/{r['frames']}  {notes}")
    base, trk = results[0], results[2]
    if base["jitter_mm_mean"] and trk["jitter_mm_mean"]:
        print(f"\ntracking vs per-frame: jitter x{trk['jitter_mm_mean'] / base['jitter_mm_mean']:.2f} (mm), "
              f"x{trk['jitter_deg_mean'] / base['jitter_deg_mean']:.2f} (deg); throughput "
              f"x{trk['fps'] / base['fps']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"estimator": what, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
