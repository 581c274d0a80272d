"""FramePipeline without ROS: the per-frame path the pose node, predict, compare and bench share."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.tracking import PoseTracker, TrackingConfig
from vfm_pose_ros.core.types import ObjectPose, Prediction
from vfm_pose_ros.paths import default_catalogue_dir
from vfm_pose_ros.pipeline import CameraFrame, FramePipeline, PipelineSettings

W, H = 640, 480
K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
CATALOGUE = Catalogue.from_dir(default_catalogue_dir())


class StubEstimator:
    """Answers every frame with ``poses`` and a backbone time; ``track`` holds the previous poses (2 ms of ICP)."""

    backend = "stub"

    def __init__(self, poses=(), fail: Exception | None = None):
        self.catalogue = CATALOGUE
        self.poses = list(poses)
        self.fail = fail
        self.frames = []

    def predict(self, frame):
        self.frames.append(frame)
        if self.fail is not None:
            raise self.fail
        return Prediction(self.poses, {"backbone": 4.0, "total": 5.0})

    def track(self, frame, previous, min_fitness=None):
        return Prediction(previous, {"icp": 2.0, "total": 2.0})


def pose(name="can_like", z=0.8, score=0.9, x=0.0):
    return ObjectPose(name, np.eye(3), np.array([x, 0.0, z]), score=score)


def camera_frame(stamp_ns=1_000, K_=K, depth_m=0.8, size=(W, H)):
    depth = np.full((H, W), depth_m, np.float32) if depth_m is not None else None
    return CameraFrame(rgb=np.zeros((H, W, 3), np.uint8), K=K_, depth=depth, stamp_ns=stamp_ns, camera_size=size)


NODE_LIKE = PipelineSettings(score_threshold=0.3, plausibility_gates=True)


def test_the_pipeline_imports_no_ros():
    code = ("import sys, vfm_pose_ros.pipeline; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'vfm_pose_ros') and "
            "(m.startswith('rclpy') or m.startswith('vfm_pose_ros.ros'))); assert not bad, bad")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_a_valid_frame_gives_numbered_poses_and_stage_times():
    est = StubEstimator([pose("driller_like", score=0.6), pose("can_like", score=0.7, x=0.1),
                         pose("driller_like", score=0.9, x=0.1)])
    result = FramePipeline(est, settings=NODE_LIKE).process(camera_frame())
    assert result.outcome == "inferred" and result.reason == "" and result.counters == {"frames_inferred": 1}
    assert [(p.name, p.instance, p.score) for p in result.poses] == [
        ("driller_like", 0, 0.9), ("can_like", 0, 0.7), ("driller_like", 1, 0.6)]
    assert {"backbone", "total", "validate", "infer", "select"} <= set(result.timings_ms)
    assert result.timings_ms["backbone"] == 4.0 and result.timings_ms["infer"] >= 0.0


def test_stage_times_come_also_when_nothing_is_found():
    result = FramePipeline(StubEstimator([]), settings=NODE_LIKE).process(camera_frame())
    assert result.poses == [] and result.reason == "no object found" and result.timings_ms["backbone"] == 4.0


def test_an_invalid_frame_is_refused_with_a_reason_and_a_counter():
    est = StubEstimator([pose()])
    pipeline = FramePipeline(est, settings=NODE_LIKE)
    normalised = np.array([[0.94, 0, 0.5], [0, 1.25, 0.5], [0, 0, 1]])
    result = pipeline.process(camera_frame(K_=normalised))
    assert result.outcome == "rejected" and result.poses == [] and "K looks normalised" in result.reason
    assert result.counters == {"rejected_implausible_intrinsics": 1}
    assert result.warnings[0][0] == "rejected_implausible_intrinsics" and "refused" in result.warnings[0][1]
    result = pipeline.process(camera_frame(size=(320, 240)))
    assert result.counters == {"rejected_size_mismatch": 1}
    assert est.frames == []  # the estimator never saw a refused frame


def test_stamps_going_backwards_are_refused_once():
    pipeline = FramePipeline(StubEstimator([pose()]), settings=NODE_LIKE)
    assert pipeline.process(camera_frame(stamp_ns=2_000)).outcome == "inferred"
    back = pipeline.process(camera_frame(stamp_ns=1_000))
    assert back.outcome == "rejected" and back.counters == {"rejected_stamp_backwards": 1}
    assert pipeline.process(camera_frame(stamp_ns=1_500)).outcome == "inferred"  # the new timeline goes on


def test_gates_and_threshold_withhold_poses_with_counters():
    est = StubEstimator([pose(z=4.0, score=0.5), pose("driller_like", z=0.8, score=0.1)])
    result = FramePipeline(est, settings=NODE_LIKE).process(camera_frame(depth_m=0.8))
    assert result.poses == [] and result.counters["withheld_low_score"] == 1
    assert "below score_threshold 0.30" in result.reason
    est.poses = [pose(z=4.0, score=0.5)]  # depth says 0.8 m: the can would stand metres behind the surface
    result = FramePipeline(est, settings=NODE_LIKE).process(camera_frame(depth_m=0.8))
    assert result.counters["withheld_depth_mismatch"] == 1 and "behind the measured surface" in result.reason
    ungated = FramePipeline(est, settings=PipelineSettings(score_threshold=0.3)).process(camera_frame(depth_m=0.8))
    assert len(ungated.poses) == 1


def test_invalid_and_unknown_poses_are_dropped_with_warnings():
    est = StubEstimator([pose(z=-0.5), pose("banana")])
    result = FramePipeline(est, settings=NODE_LIKE).process(camera_frame())
    assert result.poses == [] and result.counters["poses_rejected_bad_pose"] == 1
    assert result.counters["unknown_object"] == 1
    assert {k for k, _ in result.warnings} == {"poses_rejected_bad_pose", "unknown_object"}


def test_depth_sanitised_and_counted_and_left_out_when_off():
    est = StubEstimator([])
    cf = camera_frame()
    cf.depth[:2, :5] = np.nan
    result = FramePipeline(est, settings=NODE_LIKE).process(cf)
    assert result.counters["depth_nonfinite_pixels"] == 10 and result.counters["frames_with_nonfinite_depth"] == 1
    assert np.all(np.isfinite(est.frames[-1].depth))
    FramePipeline(est, settings=PipelineSettings(use_depth=False)).process(cf)
    assert est.frames[-1].depth is None


def test_a_failing_estimator_and_a_bad_prompt_end_in_one_outcome_each():
    result = FramePipeline(StubEstimator(fail=RuntimeError("CUDA out of memory"))).process(camera_frame())
    assert result.outcome == "failed" and result.counters == {"failed": 1}
    assert "RuntimeError: CUDA out of memory" in result.reason and isinstance(result.error, RuntimeError)
    pipeline = FramePipeline(StubEstimator([pose()]), settings=PipelineSettings(prompt="the banana"))
    pipeline.prompt_error = "prompt 'the banana' names no known object"
    assert pipeline.process(camera_frame()).counters == {"rejected_unknown_prompt": 1}
    pipeline.prompt_error = None
    assert pipeline.process(camera_frame()).outcome == "inferred"


def test_tracker_path_counts_modes_and_carries_the_trackers_times():
    est = StubEstimator([pose()])
    pipeline = FramePipeline(est, settings=NODE_LIKE, tracker=PoseTracker(est, TrackingConfig(redetect_every=100)))
    first = pipeline.process(camera_frame(stamp_ns=1_000_000_000))
    second = pipeline.process(camera_frame(stamp_ns=1_033_000_000))
    assert first.counters["frames_estimated"] == 1 and first.timings_ms["backbone"] == 4.0
    assert second.counters["frames_tracked"] == 1 and second.timings_ms["icp"] == 2.0
    assert "backbone" not in second.timings_ms and len(est.frames) == 1  # tracked: the network did not run
    assert [p.instance for p in second.poses] == [0]


def test_from_params_builds_the_tracker_and_refuses_bad_tracking_values():
    params = {"score_threshold": 0.5, "prompt": "the can", "use_depth": False, "plausibility_gates": True,
              "max_distance_m": 2.0, "tracking_enabled": True, "tracking_redetect_every": 5}
    pipeline = FramePipeline.from_params(StubEstimator(), params)
    assert pipeline.tracker is not None and pipeline.tracker.config.redetect_every == 5
    assert pipeline.settings.gates.max_distance_m == 2.0 and pipeline.settings.prompt == "the can"
    with pytest.raises(ValueError, match="smoothing"):
        FramePipeline.from_params(StubEstimator(), {**params, "tracking_smoothing": 1.5})


def test_a_prompted_object_not_in_view_says_so():
    from vfm_pose_ros.core.prompts import ObjectMatch, Resolution

    est = StubEstimator([pose("can_like", score=0.1)])
    est.resolve_prompt = lambda prompt: Resolution(prompt, (ObjectMatch("can_like", 0.8),))
    settings = PipelineSettings(score_threshold=0.3, plausibility_gates=True, prompt="the soda tin")
    result = FramePipeline(est, settings=settings).process(camera_frame())
    assert result.poses == [] and result.outcome == "inferred"
    assert result.reason.startswith("can_like (prompt 'the soda tin') not in view: 1 result(s) below score_threshold")
    # found: no such reason
    est.poses = [pose("can_like", score=0.9)]
    assert FramePipeline(est, settings=settings).process(camera_frame()).reason == ""
