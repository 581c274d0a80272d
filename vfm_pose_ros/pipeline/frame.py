"""One camera frame in, the poses fit to publish out, with why, what to count and where the time went.

The pose node runs :class:`FramePipeline` between decoding its messages and publishing, and
``vfm-pose predict``, ``compare --dataset`` and ``bench`` run the same object, so what they
measure is what the node does. Per frame, in order:

1. refused while the prompt names no catalogue object (``prompt_error``, set by the owner);
2. checked (:func:`vfm_pose_ros.core.validation.validate_frame`): colour image, intrinsics against the image
   and the CameraInfo size, depth with NaN/inf/negative set to 0 (counted);
3. stamp order (:class:`vfm_pose_ros.core.validation.StampOrder`);
4. the tracker (:class:`vfm_pose_ros.core.tracking.PoseTracker`) when there is one, else the estimator;
5. :func:`vfm_pose_ros.pipeline.selection.select_poses`: the one validity pass, the score threshold, the
   plausibility gates (:mod:`vfm_pose_ros.core.plausibility`) and the one instance numbering.

Every frame ends in one outcome (``inferred``, ``rejected``, ``failed``) with one counter for it. ROS-free: it
imports core/, never ros/ or rclpy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..core.plausibility import GateConfig, check_pose
from ..core.score_calibration import Context
from ..core.types import Frame, ObjectPose
from ..core.validation import InvalidInput, StampOrder, validate_frame
from .selection import select_poses

OUTCOMES = ("inferred", "rejected", "failed")
TRACKER_MODE_COUNTERS = {"track": "frames_tracked", "roi": "frames_roi", "full": "frames_estimated"}
PIPELINE_STAGES = ("validate", "infer", "select")  # the pipeline's own entries in FrameResult.timings_ms


@dataclass
class CameraFrame:
    """One decoded camera frame before any check: what the node takes from its messages, the CLI from a dataset."""

    rgb: np.ndarray  # HxWx3 uint8 RGB
    K: np.ndarray  # 3x3 intrinsics, pixels
    depth: np.ndarray | None = None  # HxW metres aligned to colour, or None
    stamp_ns: int = 0
    frame_id: str = "camera_color_optical_frame"
    camera_size: tuple[int, int] | None = None  # (width, height) CameraInfo gave with K; must match the image
    boxes_2d: dict[str, np.ndarray] | None = None  # external 2D detections: name -> [x0, y0, x1, y1]

    @classmethod
    def of(cls, sample, stamp_ns: int = 0) -> CameraFrame:
        """The frame of a dataset sample (a BOP or synthetic scene frame: ``rgb``, ``K``, ``depth``)."""
        return cls(rgb=sample.rgb, K=sample.K, depth=sample.depth, stamp_ns=stamp_ns)


@dataclass(frozen=True)
class PipelineSettings:
    """What the pipeline reads per frame: the pose node's parameters of the same names. The defaults keep every
    valid pose (no threshold, no gates), as ``vfm-pose predict`` writes results for BOP scoring."""

    score_threshold: float = 0.0
    prompt: str = ""
    use_depth: bool = True
    plausibility_gates: bool = False
    gates: GateConfig = GateConfig()

    @classmethod
    def from_params(cls, params: dict) -> PipelineSettings:
        return cls(score_threshold=float(params["score_threshold"]), prompt=str(params.get("prompt") or ""),
                   use_depth=bool(params["use_depth"]), plausibility_gates=bool(params["plausibility_gates"]),
                   gates=GateConfig.from_params(params))


@dataclass
class FrameResult:
    """The answer for one frame: the poses to publish (empty with a ``reason``), counter increments, stage times.

    ``warnings`` are (counter key, message) pairs for the caller to log, throttled; each key is also in
    ``counters``. ``timings_ms`` holds the estimator's own stages and :data:`PIPELINE_STAGES`.
    """

    poses: list[ObjectPose] = field(default_factory=list)
    reason: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    outcome: str = "inferred"  # one of OUTCOMES
    error: Exception | None = None  # what the estimator raised (outcome "failed")

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + int(n)

    def warn(self, key: str, message: str) -> None:
        self.count(key)
        self.warnings.append((key, message))

    def fail(self, error: Exception) -> FrameResult:
        """This frame failed (the estimator raised): no poses, counted as ``failed``; counters so far kept."""
        self.poses, self.reason = [], f"inference failed: {type(error).__name__}: {error}"
        self.outcome, self.error = "failed", error
        self.count("failed")
        return self


class FramePipeline:
    """Validation, stamp order, tracker or estimator, selection: see the module docstring.

    ``settings`` may be replaced at any time (the node does on a parameter change); a frame reads it once.
    """

    def __init__(self, estimator, catalogue=None, settings: PipelineSettings | None = None, tracker=None):
        self.estimator = estimator
        self.catalogue = catalogue if catalogue is not None else estimator.catalogue
        self.settings = settings or PipelineSettings()
        self.tracker = tracker
        self.stamp_order = StampOrder()
        self.prompt_error: str | None = None  # while set, every frame is refused (unknown_prompt)

    @classmethod
    def from_params(cls, estimator, params: dict, catalogue=None) -> FramePipeline:
        """From the pose node's parameters (config/pose.yaml keys); ValueError for bad tracking parameters."""
        tracker = None
        if params.get("tracking_enabled"):
            from ..core.tracking import PoseTracker, TrackingConfig

            tracker = PoseTracker(estimator, TrackingConfig.from_params(params))
        return cls(estimator, catalogue, PipelineSettings.from_params(params), tracker)

    @staticmethod
    def refused(error: InvalidInput, stamp_ns: int = 0) -> FrameResult:
        """The answer for a frame refused for bad input, also one its owner could not decode."""
        result = FrameResult(reason=str(error), outcome="rejected")
        result.warn(f"rejected_{error.reason_code}", f"frame at {stamp_ns} ns refused: {error.message}")
        return result

    def process(self, camera_frame: CameraFrame) -> FrameResult:
        settings = self.settings
        result = FrameResult()
        t0 = time.perf_counter()
        try:
            if self.prompt_error:
                raise InvalidInput("unknown_prompt", self.prompt_error)
            frame = self._checked(camera_frame, settings, result)
        except InvalidInput as exc:
            return self.refused(exc, camera_frame.stamp_ns)
        t1 = time.perf_counter()
        try:
            raw = self._estimate(frame, result)
            t2 = time.perf_counter()
            self._select(raw, frame, settings, result)
        except Exception as exc:  # the estimator (or a gate) failed on this frame: an empty answer, counted
            return result.fail(exc)
        result.count("frames_inferred")
        result.timings_ms.update(getattr(raw, "timings_ms", {}))  # also when nothing was found
        result.timings_ms.update(validate=(t1 - t0) * 1e3, infer=(t2 - t1) * 1e3,
                                 select=(time.perf_counter() - t2) * 1e3)
        return result

    def _checked(self, cf: CameraFrame, settings: PipelineSettings, result: FrameResult) -> Frame:
        """The estimator's input, or InvalidInput; sanitised depth counted."""
        depth = cf.depth if settings.use_depth else None
        check = validate_frame(cf.rgb, cf.K, depth, camera_size=cf.camera_size)
        self.stamp_order.check(cf.stamp_ns)
        if check.depth_nonfinite:
            result.count("depth_nonfinite_pixels", check.depth_nonfinite)
            result.warn("frames_with_nonfinite_depth", check.warnings[0])
        return Frame(rgb=cf.rgb, K=cf.K, depth=check.depth, prompt=settings.prompt or None, stamp_ns=cf.stamp_ns,
                     frame_id=cf.frame_id, boxes_2d=cf.boxes_2d)

    def _estimate(self, frame: Frame, result: FrameResult) -> list[ObjectPose]:
        """The estimator's (or tracker's) poses, their scores calibrated when the estimator has a calibration."""
        if self.tracker is None:
            raw = self.estimator.predict(frame)
        else:
            raw = self.tracker.step(frame)
            result.count(TRACKER_MODE_COUNTERS.get(self.tracker.last_mode, "frames_estimated"))
        calibration = getattr(self.estimator, "score_calibration", None)
        if calibration is not None:
            calibration.apply(raw, Context(self.catalogue, frame.K, frame.depth))
        return raw

    def _select(self, raw, frame: Frame, settings: PipelineSettings, result: FrameResult) -> None:
        gate = None
        if settings.plausibility_gates:
            size = (frame.rgb.shape[1], frame.rgb.shape[0])
            gate = (lambda p: check_pose(p.R, p.t, self.catalogue[p.name], frame.K, size, frame.depth,
                                         settings.gates))
        sel = select_poses(raw, self.catalogue, settings.score_threshold, settings.prompt, gate=gate)
        for _, failure in sel.gated:
            result.count(f"withheld_{failure.code}")
        for name, message in sel.rejected:
            result.warn("poses_rejected_bad_pose", f"{name}: {message}")
        for name in sel.unknown:
            result.warn("unknown_object", f"estimator returned {name!r}, not in the catalogue")
        if sel.withheld:
            result.count("withheld_low_score", sel.withheld)
        result.poses, result.reason = sel.poses, sel.reason
        if settings.prompt and not sel.poses:
            resolve = getattr(self.estimator, "resolve_prompt", None)  # cached per prompt
            resolution = resolve(settings.prompt) if resolve is not None else None
            if resolution is not None and resolution.names:
                named = " and ".join(resolution.names)
                result.reason = f"{named} (prompt {settings.prompt!r}) not in view: {sel.reason}"
