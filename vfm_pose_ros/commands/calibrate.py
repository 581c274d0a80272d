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
from pathlib import Path

import numpy as np

CALIBRATION_SEED = 5  # synthetic seeds: 1 training, 2 and 3 test splits, 5 calibration
EMPTY_STREAM = 8  # a scene-generator stream no benchmark or split draws from (bench.phantom uses 7)
RIGHT = 0.1  # ADD(-S) / diameter under which a pose is right


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="checkpoint file (default: the shipped models/BACKEND_small.pt of --backend)")
    p.add_argument("--backend", choices=["dinov2", "clip", "hybrid"], help="checked against the checkpoint's backend")
    p.add_argument("--frames", type=int, default=150, help="frames with objects (and as many without; default 150)")
    p.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="scene seed of the frames with objects")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true")


def collect(estimator, catalogue, frames: int, seed: int, with_depth: bool, progress: bool = True):
    """(poses, labels, contexts): every pose the node's pipeline keeps with no score threshold, right (1) or
    wrong (0), on ``frames`` frames with objects and ``frames`` frames without."""
    from tqdm import tqdm

    from ..bench.common import scaled_K
    from ..core.metrics import add_s
    from ..core.score_calibration import Context
    from ..data.scenes import SceneConfig, SceneGenerator
    from ..pipeline import CameraFrame, FramePipeline, PipelineSettings
    from ..ros.graph import load_pose_defaults

    params = {**load_pose_defaults(), "score_threshold": 0.0, "use_depth": with_depth}
    pipeline = FramePipeline(estimator, catalogue, PipelineSettings.from_params(params))
    with_objects = SceneGenerator(list(catalogue), SceneConfig(), seed=seed)
    empty = SceneGenerator(list(catalogue), SceneConfig(width=640, height=480, K=scaled_K(640, 480), empty_prob=1.0),
                           seed=seed)
    poses, labels, contexts = [], [], []
    mode = "RGB-D" if with_depth else "RGB"
    for i in tqdm(range(2 * frames), desc=f"calibration frames, {mode}", unit="frame", disable=not progress):
        sf = with_objects.frame(i // 2) if i % 2 == 0 else empty.frame(i // 2, stream=EMPTY_STREAM)
        depth = sf.depth.astype(np.float32)
        result = pipeline.process(CameraFrame(rgb=sf.rgb, K=sf.K, depth=depth))
        if result.outcome == "failed":
            raise result.error
        context = Context(catalogue, sf.K, depth if with_depth else None)
        for p in result.poses:
            obj = catalogue[p.name]
            gts = [g for g in sf.gts if g.name == p.name]
            pts = obj.eval_points(500)
            right = any(add_s(p.R, p.t, g.R, g.t, pts, obj.symmetric) < RIGHT * obj.diameter for g in gts)
            poses.append(p)
            labels.append(int(right))
            contexts.append(context)
    return poses, np.array(labels, int), contexts


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
    from ..core.score_calibration import (
        MODES,
        ScoreCalibration,
        feature_names,
        features,
        fingerprint,
        fit_logistic,
        save_calibration,
        sidecar_path,
    )
    from ..models import load_estimator
    from .predict import checkpoint_path

    if args.frames < 10:
        raise ValueError(f"--frames {args.frames}: calibration needs at least 10 frames (150 by default)")
    checkpoint = checkpoint_path(args.checkpoint, args.backend)
    est = load_estimator(checkpoint, device=args.device, backend=args.backend)
    est.score_calibration = None  # fit on the raw scores
    backend = est.backend
    models, reliability, summary = {}, {}, {}
    for mode in MODES:
        poses, y, contexts = collect(est, est.catalogue, args.frames, args.seed, mode == "rgbd",
                                     progress=not args.quiet)
        names = feature_names(backend, mode)
        X = np.vstack([features([p], names, c) for p, c in zip(poses, contexts)]) if poses else np.zeros((0, 0))
        if len(y) == 0 or y.min() == y.max():
            print(f"{mode}: {len(y)} poses, {int(y.sum())} right: nothing to fit; this input keeps raw scores")
            continue
        model = fit_logistic(X, y, names)
        models[mode] = model
        prob = np.array([model.probability([p], c)[0] for p, c in zip(poses, contexts)])
        reliability[mode] = (prob, y)
        summary[mode] = {"poses": int(len(y)), "right": int(y.sum()),
                         "brier_raw": round(float(np.mean((np.array([p.score for p in poses]) - y) ** 2)), 4),
                         "brier_calibrated": round(float(np.mean((prob - y) ** 2)), 4)}
    files = getattr(est, "source_files", [checkpoint])
    cal = ScoreCalibration(backend, fingerprint(files), models, {
        "frames_with_objects": args.frames, "frames_without": args.frames, "seed": args.seed,
        "empty_stream": EMPTY_STREAM, "right": f"ADD(-S) < {RIGHT} d", **summary})
    path = save_calibration(cal, checkpoint)
    png = sidecar_path(checkpoint).with_suffix(".png")
    if reliability:
        plot_reliability(reliability, png)
    print(f"wrote {path}" + (f" and {png}" if reliability else ""))
    for mode, s in summary.items():
        weights = ", ".join(f"{n} {w:+.2f}" for n, w in zip(models[mode].names, models[mode].weights))
        print(f"  {mode}: {s['poses']} poses, {s['right']} right; Brier score raw {s['brier_raw']:.3f} -> "
              f"calibrated {s['brier_calibrated']:.3f}; {weights}, bias {models[mode].bias:+.2f}")
    return 0
