"""Throughput of the ROS-free parts: the evaluator (metrics per frame) and the synthetic renderer.

The evaluator is timed twice: :class:`vfm_pose_ros.core.metrics.PoseEvaluator` alone (the issue's
target: one object, a 2,000-point model, at least 500 frames/s), and the evaluator node's
:class:`~vfm_pose_ros.data.stream_evaluation.Scorer` (stamp matching + the same metrics + the rows it keeps
for frames.csv), which is what a replay pays per frame. The cost of ``report()`` at the end of the
run is timed too: the evaluator node also builds it once a second for its ~/summary topic.
"""
from __future__ import annotations

import time

import numpy as np

from .common import summarize, time_calls


def _dense_object(name: str, faces: int):
    """A procedural catalogue object with about ``faces`` faces (enough vertices for a 2k-point model)."""
    from ..data.procedural import make_object, to_object_model

    return to_object_model(make_object(name, faces=faces))


def _poses(n: int, rng, noise_deg: float = 5.0, noise_m: float = 0.01):
    from scipy.spatial.transform import Rotation

    R_gt = Rotation.random(n, random_state=rng.integers(1 << 31)).as_matrix()
    t_gt = np.c_[rng.uniform(-0.2, 0.2, (n, 2)), rng.uniform(0.5, 1.5, n)]
    R_est = (Rotation.from_rotvec(rng.normal(size=(n, 3)) * np.radians(noise_deg)) * Rotation.from_matrix(R_gt)
             ).as_matrix()
    t_est = t_gt + rng.normal(size=(n, 3)) * noise_m
    return R_gt, t_gt, R_est, t_est


def measure_evaluator(frames: int = 1000, points: int = 2000, objects=("driller_like", "can_like")) -> dict:
    """Frames/s of PoseEvaluator.add_frame and of the node's Scorer, one object per frame, MSPD on (K given)."""
    from ..core.catalogue import Catalogue
    from ..core.metrics import PoseEvaluator
    from ..core.types import GroundTruthPose, ObjectPose
    from ..data.scenes import LMO_K
    from ..data.stream_evaluation import Scorer

    out: dict = {"frames": frames, "points": points}
    for name in objects:
        obj = _dense_object(name, faces=max(3 * points, 4000))
        cat = Catalogue([obj])
        pts = len(obj.eval_points(points))
        n = frames if not obj.symmetric else max(5, frames // 100)  # continuous symmetry: ~0.5 s per frame
        rng = np.random.default_rng(0)
        R_gt, t_gt, R_est, t_est = _poses(n, rng)
        gts = [[GroundTruthPose(obj_id=obj.class_id, name=name, R=R_gt[i], t=t_gt[i])] for i in range(n)]
        preds = [[ObjectPose(name=name, R=R_est[i], t=t_est[i], score=0.9)] for i in range(n)]
        ev = PoseEvaluator(cat, max_points=points)
        ev.add_frame(gts[0], preds[0], K=LMO_K, image_width=640)  # per-object set-up (KD-tree, symmetries) once
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(n):
            ev.add_frame(gts[i], preds[i], K=LMO_K, image_width=640)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        ev.report()
        report_ms = (time.perf_counter() - t1) * 1e3

        scorer = Scorer(cat, max_points=points)
        scorer.add_ground_truth(0, gts[0], K=LMO_K, width=640.0)
        scorer.add_detections(0, preds[0])
        t2 = time.perf_counter()
        for i in range(n):
            scorer.add_ground_truth(i + 1, gts[i], K=LMO_K, width=640.0)
            scorer.add_detections(i + 1, preds[i])
        ds = time.perf_counter() - t2
        t3 = time.perf_counter()
        scorer.summary()
        summary_ms = (time.perf_counter() - t3) * 1e3
        out[name] = {
            "model_points": pts, "symmetry": obj.symmetry.kind, "frames": n,
            "frames_per_s": round(n / dt, 1), "ms_per_frame": round(dt * 1e3 / n, 3),
            "cpu_ms_per_frame": round(cpu * 1e3 / n, 3), "node_scorer_frames_per_s": round(n / ds, 1),
            "report_ms": round(report_ms, 1), "node_summary_ms": round(summary_ms, 1),
            "instances_in_report": n + 1,
        }
    return out


def measure_renderer(frames: int = 30, width: int = 640, height: int = 480, faces: int = 10_000) -> dict:
    """Frames/s of data.render.Renderer for a ~10k-face mesh at VGA (rgb, depth and masks), random poses."""
    from scipy.spatial.transform import Rotation

    from ..data.render import Light, Renderer
    from ..data.scenes import LMO_K

    obj = _dense_object("driller_like", faces=faces)
    renderer = Renderer(width, height, LMO_K)
    rng = np.random.default_rng(0)
    poses = [(Rotation.random(random_state=rng.integers(1 << 31)).as_matrix(),
              np.array([0.0, 0.0, rng.uniform(0.5, 1.0)])) for _ in range(frames + 1)]
    it = iter(poses)

    def render():
        R, t = next(it)
        renderer.render([(obj, R, t)], light=Light())

    cpu: list[float] = []
    wall = time_calls(render, frames, warmup=1, cpu_ms=cpu, progress=False)
    s = summarize(wall)
    return {"faces": int(len(obj.faces)), "size": f"{width}x{height}", "ms_per_frame": s,
            "frames_per_s": round(1e3 / s["median"], 1), "cpu_ms_median": summarize(cpu)["median"]}
