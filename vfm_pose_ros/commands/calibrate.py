"""Fit a checkpoint's score calibration: scores that are the chance a pose is right (core.score_calibration).

The checkpoint runs through the pose node's own frame pipeline (config/pose.yaml gates, no score
threshold) on synthetic frames it never trained or is tested on: ``--frames`` frames of seed
``--seed`` holding catalogue objects, and as many holding only background and distractors, so a pose on
an empty scene counts as a wrong one. A pose is right when its ADD(-S) error is under 0.1 of the
object's diameter. One logistic model per input (RGB-D, RGB) is written beside the checkpoint
(``CHECKPOINT.calibration.json``), with a reliability plot (``.png``).

Example::

    vfm-pose calibrate --checkpoint models/dinov2_small.pt
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CALIBRATION_SEED = 5  # synthetic seeds: 1 training, 2 and 3 test splits, 5 calibration
EMPTY_STREAM = 8  # a scene-generator stream no benchmark or split draws from (bench.phantom uses 7)
RIGHT = 0.1  # ADD(-S) / diameter under which a pose is right
# operating points reported (phantom rate, right poses published)
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint file (default: the shipped models/BACKEND_small.pt of --backend)")
    p.add_argument("--backend", choices=["dinov2", "clip", "hybrid"], help="checked against the checkpoint's backend")
    p.add_argument("--frames", type=int, default=150, help="frames with objects (and as many without; default 150)")
    p.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="scene seed of the frames with objects")
    p.add_argument("--width", type=int, default=640, help="image size of the rendered frames (default 640x480)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--catalogue", help="catalogue (folder or YAML) holding the checkpoint's objects with their meshes, "
                                       "to render the frames (default: the package's config/objects)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true")


@dataclass
class CalibrationFrame:
    """One calibration frame's poses (kept with no score threshold), what they are judged against, and which
    of the frame's ``n_objects`` ground-truth instances each is right for (none: wrong)."""

    context: object  # core.score_calibration.Context
    n_objects: int
    poses: list = field(default_factory=list)
    right_for: list = field(default_factory=list)  # per pose: set of ground-truth indices


def collect(estimator, catalogue, frames: int, seed: int, with_depth: bool, progress: bool = True,
            size: tuple[int, int] = (640, 480)) -> list[CalibrationFrame]:
    """``frames`` frames with objects and ``frames`` frames without, through the node's pipeline with no score
    threshold; each pose judged right or wrong."""
    from tqdm import tqdm

    from ..bench.common import scaled_K
    from ..bench.phantom import empty_frames
    from ..core.metrics import add_s
    from ..core.score_calibration import Context
    from ..data.scenes import SceneConfig, SceneGenerator
    from ..pipeline import CameraFrame, FramePipeline, PipelineSettings
    from ..ros.graph import load_pose_defaults

    params = {**load_pose_defaults(), "score_threshold": 0.0, "use_depth": with_depth}
    pipeline = FramePipeline(estimator, catalogue, PipelineSettings.from_params(params))
    w, h = size
    with_objects = SceneGenerator(list(catalogue), SceneConfig(width=w, height=h, K=scaled_K(w, h)), seed=seed)
    empty = empty_frames(catalogue, frames, w, h, seed=seed, stream=EMPTY_STREAM)
    out = []
    mode = "RGB-D" if with_depth else "RGB"
    for i in tqdm(range(2 * frames), desc=f"calibration frames, {mode}", unit="frame", disable=not progress):
        sf = with_objects.frame(i // 2) if i % 2 == 0 else next(empty)
        depth = sf.depth.astype(np.float32)
        result = pipeline.process(CameraFrame(rgb=sf.rgb, K=sf.K, depth=depth))
        if result.outcome == "failed":
            raise result.error
        record = CalibrationFrame(Context(catalogue, sf.K, depth if with_depth else None), len(sf.gts))
        for p in result.poses:
            obj = catalogue[p.name]
            pts = obj.eval_points(500)
            record.poses.append(p)
            record.right_for.append({k for k, g in enumerate(sf.gts) if g.name == p.name and
                                     add_s(p.R, p.t, g.R, g.t, pts, obj.symmetric) < RIGHT * obj.diameter})
        out.append(record)
    return out


def operating_points(records: list[CalibrationFrame], scores: list[np.ndarray], thresholds) -> list[dict]:
    """Per score threshold: the share of frames without objects that would publish a pose, and the share of
    ground-truth instances published right."""
    rows = []
    empty = [(r, s) for r, s in zip(records, scores) if r.n_objects == 0]
    full = [(r, s) for r, s in zip(records, scores) if r.n_objects > 0]
    n_objects = sum(r.n_objects for r, _ in full)
    for th in thresholds:
        phantom = sum(bool((s >= th).any()) for _, s in empty) / max(1, len(empty))
        found = sum(len(set().union(*[rf for rf, v in zip(r.right_for, s) if v >= th])) for r, s in full)
        rows.append({"threshold": th, "phantom_rate": round(phantom, 4),
                     "published_right": round(found / max(1, n_objects), 4)})
    return rows


def plot_reliability(data: dict, path: Path) -> None:
    """Calibrated score against the observed share of right poses, per input (``data``: mode -> (scores,
    labels)), in 10 bins with their pose counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(5 * len(data), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], data):
        prob, y = data[mode]
        edges = np.linspace(0, 1, 11)
        idx = np.clip(np.digitize(prob, edges) - 1, 0, 9)
        xs = [prob[idx == b].mean() for b in range(10) if (idx == b).any()]
        ys = [y[idx == b].mean() for b in range(10) if (idx == b).any()]
        ns = [int((idx == b).sum()) for b in range(10) if (idx == b).any()]
        ax.plot([0, 1], [0, 1], color="0.7", lw=1)
        ax.plot(xs, ys, "o-")
        for x, yy, n in zip(xs, ys, ns):
            ax.annotate(str(n), (x, yy), textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.set(title=f"{mode}: {len(y)} poses, {int(y.sum())} right", xlabel="calibrated score",
               ylabel="share right (ADD(-S) < 0.1 d)", xlim=(0, 1), ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    from ..core.catalogue_loader import load_catalogue
    from ..core.score_calibration import (
        MODES,
        ScoreCalibration,
        base_rate_model,
        feature_names,
        features,
        fingerprint,
        fit_logistic,
        save_calibration,
        sidecar_path,
    )
    from ..models import load_estimator
    from .predict import checkpoint_path

    if args.width < 32 or args.height < 32:
        raise ValueError(f"--width/--height {args.width}x{args.height}: at least 32x32 pixels")
    if args.frames < 10:
        raise ValueError(f"--frames {args.frames}: calibration needs at least 10 frames (150 by default)")
    checkpoint = checkpoint_path(args.checkpoint, args.backend)
    est = load_estimator(checkpoint, device=args.device, backend=args.backend)
    est.score_calibration = None  # fit on the raw scores
    backend = est.backend
    scenes = load_catalogue(args.catalogue, names=est.catalogue.names)  # with meshes: the renderer needs them
    models, reliability, summary = {}, {}, {}
    for mode in MODES:
        records = collect(est, scenes, args.frames, args.seed, mode == "rgbd", progress=not args.quiet,
                          size=(args.width, args.height))
        names = feature_names(backend, mode)
        X = [features(r.poses, names, r.context) for r in records]
        y = [np.array([int(bool(rf)) for rf in r.right_for], int) for r in records]
        X_all, y_all = np.vstack(X), np.concatenate(y)
        if len(y_all) == 0:
            print(f"{mode}: no poses at all: nothing to fit; this input keeps raw scores")
            continue
        if y_all.min() == y_all.max():
            model = base_rate_model(y_all)
            print(f"{mode}: {len(y_all)} poses, {int(y_all.sum())} right: nothing tells right from wrong; every "
                  f"pose scores the base rate {model.probability_of(np.zeros((1, 0)))[0]:.4f}")
            X = [np.zeros((len(x), 0)) for x in X]
        else:
            model = fit_logistic(X_all, y_all, names)
        models[mode] = model
        calibrated = [model.probability_of(x) for x in X]
        raw = [np.array([p.score for p in r.poses]) for r in records]
        reliability[mode] = (np.concatenate(calibrated), y_all)
        summary[mode] = {
            "poses": int(len(y_all)), "right": int(y_all.sum()),
            "brier_raw": round(float(np.mean((np.concatenate(raw) - y_all) ** 2)), 4),
            "brier_calibrated": round(float(np.mean((np.concatenate(calibrated) - y_all) ** 2)), 4),
            "calibrated": operating_points(records, calibrated, THRESHOLDS),
            "raw": operating_points(records, raw, THRESHOLDS)}
    files = getattr(est, "source_files", [checkpoint])
    cal = ScoreCalibration(backend, fingerprint(files), models, {
        "frames_with_objects": args.frames, "frames_without": args.frames, "seed": args.seed,
        "size": f"{args.width}x{args.height}",
        "empty_stream": EMPTY_STREAM, "right": f"ADD(-S) < {RIGHT} d", **summary})
    path = save_calibration(cal, checkpoint)
    png = sidecar_path(checkpoint).with_suffix(".png")
    if reliability:
        plot_reliability(reliability, png)
    print(f"wrote {path}" + (f" and {png}" if reliability else ""))
    for mode, s in summary.items():
        weights = "".join(f"{n} {w:+.2f}, " for n, w in zip(models[mode].names, models[mode].weights))
        print(f"  {mode}: {s['poses']} poses, {s['right']} right; Brier score raw {s['brier_raw']:.3f} -> "
              f"calibrated {s['brier_calibrated']:.3f}; {weights}bias {models[mode].bias:+.2f}")
        print("    score threshold        " + "".join(f"{t:>8g}" for t in THRESHOLDS))
        for kind in ("raw", "calibrated"):
            print(f"    {kind:10s} phantom %  " + "".join(f"{100 * r['phantom_rate']:8.1f}" for r in s[kind]))
            print(f"    {kind:10s} right %    " + "".join(f"{100 * r['published_right']:8.1f}" for r in s[kind]))
    return 0
