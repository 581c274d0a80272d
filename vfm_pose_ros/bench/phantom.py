"""Phantom rate: how often the pose node would publish a pose on a frame that holds no catalogue object.

A grasp planner acts on every pose the node publishes, so a pose on an empty scene is worse than a
missed object. The frames come from the synthetic engine with ``empty_prob`` 1.0 (background and
1-2 distractor shapes, no catalogue object: ``vfm-pose synth --empty-frac 1.0``); each goes through
each backend's shipped checkpoint (models/<backend>_small.pt, as config/pose.yaml loads it) with and
without depth, and then through the node's own selection with its default parameters
(config/pose.yaml: ``score_threshold`` and the plausibility gates). A frame counts as a phantom when
anything is left to publish. Target (issue 22): at most 1 % of the frames, per backend and input.

No rclpy: the node's selection is a plain function; torch runs on the caller's thread.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

PHANTOM_BACKENDS = ("dinov2", "clip", "hybrid")
TARGET_RATE = 0.01  # published frames / empty frames
INPUTS = {"rgbd": True, "rgb": False}  # key -> with depth
SCENE_STREAM = 7  # a stream of the scene generator no other benchmark or split draws from


def empty_frames(catalogue, n: int, width: int = 640, height: int = 480, seed: int = 0, stream: int = SCENE_STREAM):
    """``n`` rendered frames (SyntheticFrame) with background and distractors only, depth included; ``stream``
    keeps them apart from other draws of the generator (``vfm-pose calibrate`` uses its own)."""
    from ..data.scenes import SceneConfig, SceneGenerator
    from .common import scaled_K

    cfg = SceneConfig(width=width, height=height, K=scaled_K(width, height), empty_prob=1.0)
    gen = SceneGenerator(list(catalogue), cfg, seed=seed)
    return (gen.frame(i, stream=stream) for i in range(n))


def published_poses(estimator, catalogue, rgb, K, depth, params: dict) -> tuple[list, list[str]]:
    """(poses the node would publish for this frame, why each other result was dropped): the node's own
    FramePipeline with the node's parameters ``params`` (config/pose.yaml keys)."""
    from ..pipeline import CameraFrame, FramePipeline, PipelineSettings

    h, w = rgb.shape[:2]
    pipeline = FramePipeline(estimator, catalogue, PipelineSettings.from_params(params))
    result = pipeline.process(CameraFrame(rgb=rgb, K=K, depth=depth, camera_size=(w, h)))
    if result.outcome == "failed":
        raise result.error
    dropped = [key.removeprefix("withheld_")
               for key, n in result.counters.items() if key.startswith("withheld_") for _ in range(n)]
    dropped += ["bad_pose"] * result.counters.get("poses_rejected_bad_pose", 0)
    dropped += ["unknown_object"] * result.counters.get("unknown_object", 0)
    return result.poses, dropped


def load_shipped(backend: str, device: str):
    """The estimator the pose node loads by default for ``backend`` (models/<backend>_small.pt)."""
    from ..models import load_estimator
    from ..ros.env import find_package_file

    path = find_package_file(f"models/{backend}_small.pt")  # FileNotFoundError: the section fails and says so
    return load_estimator(str(path), device=device, backend=backend), str(path)


def measure_phantom_rate(n_frames: int, backends=PHANTOM_BACKENDS, width: int = 640, height: int = 480,
                         device: str = "cpu", progress: bool = False, load=load_shipped, seed: int = 0) -> dict:
    """Count, per backend and input (``rgbd``, ``rgb``), the empty frames on which a pose would be published.

    ``load(backend, device)`` returns (estimator, source); the default loads the shipped checkpoints."""
    from tqdm import tqdm

    from ..ros.graph import load_pose_defaults
    from .common import default_catalogue

    if n_frames < 1:
        raise ValueError(f"the phantom section needs at least one frame, got {n_frames}")
    defaults = load_pose_defaults()
    catalogue = default_catalogue()
    loaded = {b: load(b, device) for b in backends}
    rows = {f"{b}/{key}": {"backend": b, "depth": with_depth, "source": loaded[b][1], "frames": 0,
                           "frames_published": 0, "objects_published": 0, "dropped": Counter(), "max_score": None,
                           "published_examples": []}
            for b in backends for key, with_depth in INPUTS.items()}
    frames = empty_frames(catalogue, n_frames, width, height, seed=seed)
    for index, sf in enumerate(tqdm(frames, total=n_frames, desc="phantom", unit="frame", disable=not progress)):
        for row in rows.values():
            params = {**defaults, "use_depth": row["depth"]}
            poses, dropped = published_poses(loaded[row["backend"]][0], catalogue, sf.rgb, sf.K,
                                             sf.depth.astype(np.float32), params)
            _count(row, index, poses, dropped)
    for row in rows.values():
        row["rate"] = row["frames_published"] / row["frames"]
        row["dropped"] = dict(sorted(row["dropped"].items()))
    return {"frames": n_frames, "size": f"{width}x{height}", "target_rate": TARGET_RATE,
            "score_threshold": float(defaults["score_threshold"]),
            "plausibility_gates": bool(defaults["plausibility_gates"]), "rows": rows}


def _count(row: dict, index: int, poses: list, dropped: list[str]) -> None:
    row["frames"] += 1
    row["dropped"].update(dropped)
    if not poses:
        return
    row["frames_published"] += 1
    row["objects_published"] += len(poses)
    best = max(float(p.score) for p in poses)
    row["max_score"] = best if row["max_score"] is None else max(row["max_score"], best)
    if len(row["published_examples"]) < 5:  # what a phantom looked like, for the JSON
        row["published_examples"].append({"frame": index, "poses": [
            {"name": p.name, "score": round(float(p.score), 3), "t": [round(float(v), 3) for v in p.t]}
            for p in poses]})


def phantom_lines(res: dict) -> str:
    """The lines printed when the section completes."""
    head = (f"  {res['frames']} empty {res['size']} frames (no catalogue object), score_threshold "
            f"{res['score_threshold']:g}, gates {'on' if res['plausibility_gates'] else 'off'}:")
    return "\n".join([head] + [f"  {key}: published on {r['frames_published']}/{r['frames']} frames "
                               f"({100 * r['rate']:.1f} %), dropped {r['dropped'] or 'nothing'}"
                               for key, r in res["rows"].items()])


def phantom_targets(res: dict | None) -> list[dict]:
    """Issue 22's target per backend and input, in the form of :func:`vfm_pose_ros.bench.tables.targets`."""
    if not res:
        return []
    return [{"target": f"phantom rate {key} (empty frames with a published pose)", "value": r["rate"],
             "limit": f"<= {TARGET_RATE}", "met": r["rate"] <= TARGET_RATE,
             "note": f"{r['frames_published']}/{r['frames']} frames, {res['size']}"}
            for key, r in res["rows"].items()]


def phantom_rows(res: dict | None) -> list[list[str]]:
    """Rows of the printed 'other sections' table."""
    if not res:
        return []
    return [[f"phantom {key} ({res['frames']} empty frames)",
             f"{r['frames_published']} frames published ({100 * r['rate']:.1f} %, target <= "
             f"{100 * TARGET_RATE:g} %), {r['objects_published']} poses, max score {_score(r['max_score'])}"]
            for key, r in res["rows"].items()]


def _score(v) -> str:
    return "-" if v is None else f"{v:.2f}"
