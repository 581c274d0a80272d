#!/usr/bin/env python3
"""Do bf16 and fp16 autocast give the poses fp32 gives? On synthetic frames, for each checkpoint.

For every pose fp32 gets right (ADD(-S) under 0.1 of the diameter against the ground truth), the same
object's pose at each half precision is compared with the fp32 one, symmetry-aware (the smallest
difference over the object's symmetry transforms, discretised finely): translation in mm and rotation
in degrees. The issue's target is within 1 mm / 0.5 degrees; "right" counts the poses that are right
anyway (the can upside down is, under ADD-S, though 180 degrees away). Runs on the CPU (CPU autocast does float16
too) or on CUDA with --device cuda.

The reference rows ("fp32 ±1 grey") run fp32 again on the same frames with each colour value moved by -1, 0
or +1 at random, less than a camera's own noise: how far fp32 agrees with itself where a fit barely wins,
which is the floor any precision is held against.

    PYTHONPATH=. python scripts/precision_agreement.py --frames 12 --json /tmp/precision.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vfm_pose_ros.core.catalogue import Catalogue  # noqa: E402
from vfm_pose_ros.core.metrics import add_s, symmetry_transformations  # noqa: E402
from vfm_pose_ros.core.transforms import rotation_angle_deg  # noqa: E402
from vfm_pose_ros.core.types import Frame  # noqa: E402
from vfm_pose_ros.paths import default_catalogue_dir  # noqa: E402

HALF = ("bf16", "fp16")
SYM_STEP = 0.0005  # metres of surface motion per step of a continuous symmetry: well under 0.5 degrees


def pose_difference(obj, sym, R_a, t_a, R_b, t_b) -> tuple[float, float]:
    """(mm, degrees) between two poses, minimised over the symmetry transforms (normalised 1 mm ~ 0.5 deg)."""
    Rs = R_b @ sym[:, :3, :3]
    ts = t_b + sym[:, :3, 3] @ R_b.T
    dt = np.linalg.norm(ts - t_a, axis=1) * 1e3
    dr = np.array([rotation_angle_deg(R_a, R) for R in Rs])
    k = int(np.argmin(np.maximum(dt / 1.0, dr / 0.5)))
    return float(dt[k]), float(dr[k])


NOISE_ROW = "fp32 ±1 grey"


def is_right(pose, obj, gts, pts) -> bool:
    """ADD(-S) under 0.1 of the diameter against one of the object's ground-truth instances ``gts``."""
    return min(add_s(pose.R, pose.t, g.R, g.t, pts, obj.symmetric) for g in gts) <= 0.1 * obj.diameter


def grey_noise(rgb: np.ndarray, seed: int) -> np.ndarray:
    """``rgb`` with every value moved by -1, 0 or +1 (uniformly, seeded), clipped to 0..255."""
    step = np.random.default_rng(seed).integers(-1, 2, size=rgb.shape)
    return np.clip(rgb.astype(np.int16) + step, 0, 255).astype(np.uint8)


def run(checkpoint: str, frames, catalogue, device: str, noise_draws: int = 2) -> dict:
    """Per input ("rgb", "rgbd"): how many fp32 poses are right, and per compared variant (the half precisions,
    then the noise reference) how many of them it reproduces, with the misses as (frame, object, mm, degrees,
    still right)."""
    from vfm_pose_ros.models import load_estimator

    syms = {o.name: symmetry_transformations(o.symmetry, SYM_STEP) for o in catalogue}
    # (name, precision, seed of the frames' noise, None for none)
    variants = [(h, h, None) for h in HALF] + [(f"noise{k}", "fp32", 1000 * (k + 1)) for k in range(noise_draws)]
    estimators = {prec: load_estimator(checkpoint, device=device, precision=prec) for prec in ("fp32", *HALF)}
    out = {}
    for use_depth in (False, True):
        def predict(prec: str, fi: int, noise_seed: int | None = None, use_depth: bool = use_depth):
            f = frames[fi]
            rgb = f.rgb if noise_seed is None else grey_noise(f.rgb, noise_seed)
            return estimators[prec].predict(Frame(rgb=rgb, K=f.K, depth=f.depth if use_depth else None))

        reference = [predict("fp32", fi) for fi in range(len(frames))]
        poses = {name: [predict(prec, fi, None if seed is None else seed + fi) for fi in range(len(frames))]
                 for name, prec, seed in variants}
        rows = {name: [] for name in poses}
        right = 0
        for fi, f in enumerate(frames):
            for p in reference[fi]:
                obj = catalogue[p.name]
                gts = [g for g in f.gts if g.name == p.name]
                pts = obj.eval_points(500)
                if not gts or not is_right(p, obj, gts, pts):
                    continue
                right += 1
                for name in poses:
                    same = [q for q in poses[name][fi] if q.name == p.name]
                    if not same:
                        rows[name].append((fi, p.name, float("inf"), float("inf"), False))
                        continue
                    q = min(same, key=lambda q: np.linalg.norm(q.t - p.t))
                    rows[name].append((fi, p.name, *pose_difference(obj, syms[p.name], q.R, q.t, p.R, p.t),
                                       is_right(q, obj, gts, pts)))
        key = "rgbd" if use_depth else "rgb"
        out[key] = {"fp32_right": right}
        for h in HALF:
            out[key][h] = _agreement(rows[h])
        if noise_draws:
            out[key][NOISE_ROW] = _agreement([r for name in poses if name.startswith("noise") for r in rows[name]])
    return out


def _agreement(rows: list[tuple]) -> dict:
    """Counts and spread of (frame, object, mm, degrees, still right) rows, and the rows outside 1 mm / 0.5
    degrees. "still_right": the variant's pose is right too (ADD(-S) < 0.1 d), whether or not it is the same."""
    a = np.array([r[2:4] for r in rows], dtype=float).reshape(-1, 2)
    ok = (a[:, 0] <= 1.0) & (a[:, 1] <= 0.5)
    return {"within_1mm_0.5deg": int(ok.sum()), "of": len(a), "still_right": sum(r[4] for r in rows),
            "median_mm": _r(np.median(a[:, 0])) if len(a) else None,
            "max_mm": _r(a[:, 0].max()) if len(a) else None,
            "median_deg": _r(np.median(a[:, 1])) if len(a) else None,
            "max_deg": _r(a[:, 1].max()) if len(a) else None,
            "misses": [[fi, name, _r(mm), _r(deg), right] for (fi, name, mm, deg, right), good in zip(rows, ok)
                       if not good]}


def _r(x) -> float | str:
    return "inf" if not np.isfinite(x) else round(float(x), 3)


def main(argv=None) -> int:
    from vfm_pose_ros.data.scenes import SceneConfig, SceneGenerator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", nargs="+", default=["models/dinov2_small.pt", "models/clip_small.pt"])
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--noise-draws", type=int, default=2,
                    help="fp32 runs on frames with ±1 grey level of noise, the reference rows (0: none)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.noise_draws < 0 or args.frames < 1:
        ap.error("--noise-draws must be 0 or more and --frames 1 or more")
    for ck in args.checkpoints:
        if not Path(ck).is_file():
            print(f"error: checkpoint {ck} not found", file=sys.stderr)
            return 2
    catalogue = Catalogue.from_dir(default_catalogue_dir())
    gen = SceneGenerator(list(catalogue), SceneConfig(), seed=args.seed)
    frames = [gen.frame(i) for i in range(args.frames)]
    results = {ck: run(ck, frames, catalogue, args.device, args.noise_draws) for ck in args.checkpoints}
    print(f"{'checkpoint':20s} {'input':5s} {'fp32 right':>10s} {'against fp32':13s} {'within':>9s} {'right':>6s} "
          f"{'med mm':>7s} {'max mm':>7s} {'med deg':>7s} {'max deg':>7s}")
    misses = []
    for ck, r in results.items():
        for key, v in r.items():
            for name, s in v.items():
                if name == "fp32_right":
                    continue
                print(f"{Path(ck).name:20s} {key:5s} {v['fp32_right']:10d} {name:13s} "
                      f"{s['within_1mm_0.5deg']:>4d}/{s['of']:<4d} {s['still_right']:>6d} "
                      f"{s['median_mm']!s:>7s} {s['max_mm']!s:>7s} "
                      f"{s['median_deg']!s:>7s} {s['max_deg']!s:>7s}")
                misses += [f"  {Path(ck).name} {key} {name}: frame {fi} {obj} {mm} mm {deg} deg"
                           f" ({'still right' if right else 'wrong'})" for fi, obj, mm, deg, right in s["misses"]]
    if misses:
        print("outside 1 mm / 0.5 deg:", *misses, sep="\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"frames": args.frames, "seed": args.seed, "device": args.device,
                                         "noise_draws": args.noise_draws, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
