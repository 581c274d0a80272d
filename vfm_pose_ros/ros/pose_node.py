"""The pose node: camera frames in, object poses out (Detection3DArray, TF, markers, debug image, diagnostics).

Thin by design: messages are decoded and built by :mod:`vfm_pose_ros.ros.convert`; each frame goes through
:class:`vfm_pose_ros.pipeline.FramePipeline` (validation, stamp order, tracker or estimator from
:mod:`vfm_pose_ros.models`, selection: the path ``vfm-pose predict`` and ``bench`` run too).
What this file adds is the run-time behaviour:

* colour + depth synchronised by stamp (``message_filters`` when importable, else
  :class:`vfm_pose_ros.ros.sync.ApproximateSync`); camera_info cached (a frame that comes
  before any camera_info waits ``camera_info_wait_ms`` for one, then is counted as
  ``no_camera_info`` with a warning once per ``warn_every_n``);
* inference on a worker thread, never on the executor: the newest ``queue_size`` frames
  wait (1 by default), older ones are dropped and counted as ``dropped_stale``;
* exactly one Detection3DArray per processed frame, empty when nothing passed, so consumers
  (and a lockstep bag player) know the frame was handled; why it was empty is in
  /diagnostics (``last_empty_reason`` and the counters);
* every colour image is accounted for in /diagnostics: ``images_in`` = ``frames_inferred`` (valid input,
  through the estimator or tracker)
  + ``frames_rejected`` (the sum of ``rejected_<reason>``, reasons from
  :data:`vfm_pose_ros.core.validation.REASONS`) + ``no_camera_info`` + ``failed`` +
  ``dropped_stale`` + ``sync_unmatched`` (never paired with a depth image) + ``sync_pending``
  + ``frames_pending`` (waiting for or in inference);
* never a non-finite, non-orthonormal or behind-camera pose (``poses_rejected_bad_pose``); results below
  ``score_threshold`` are withheld (``withheld_low_score``), and so are implausible ones
  (:mod:`vfm_pose_ros.core.plausibility`: outside the working range ``withheld_distance``, of an
  implausible projected size ``withheld_projected_size``, off the measured depth ``withheld_depth_mismatch``);
* a prompt naming no catalogue object (clip, hybrid) is refused when set; given at start it makes
  every frame refused (``rejected_unknown_prompt``) until a valid one is set, rather than posing
  whatever the network guesses;
* TF ``<camera optical frame> -> <name>_<k>`` and ``<name>_<k> -> <name>_<k>_grasp_<grasp>``
  (tf2_ros where importable, else a TFMessage publisher on /tf with tf2's QoS);
* the prompt is a dynamic parameter, validated for prompt-driven backends (clip, hybrid).

A missing or unreadable checkpoint or weights file is fatal: the node logs what is missing and
how to fix it, and exits with status 1 (it cannot do anything useful, and a supervisor or
launch file should see the failure rather than a node that is up but silent).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import MarkerArray

from ..core.plausibility import GATE_REASONS
from ..core.prompts import keyword_objects
from ..core.validation import InvalidInput
from ..pipeline import CameraFrame, FramePipeline, FrameResult, PipelineSettings
from . import convert
from .env import configure_ros_env, find_package_file
from .graph import load_pose_defaults
from .node_runtime import LatestQueue, Stats
from .params import POSE_PARAMS, ParameterError, check_value, declare_checked

try:
    from vision_msgs.msg import Detection3DArray
except ImportError:  # pragma: no cover - depends on the installation; the node says how to fix it at start
    Detection3DArray = None

NODE_NAME = "vfm_pose"
PROMPT_BACKENDS = ("clip", "hybrid")  # backends that pick objects from the prompt

# Parameters: type, range or choices, dynamic or not, description (vfm_pose_ros.ros.params); defaults: config/pose.yaml
PARAMS = POSE_PARAMS
DYNAMIC = {name for name, p in PARAMS.items() if p.dynamic}  # the others are read once at start


class StartupError(RuntimeError):
    """The node cannot start (missing checkpoint, weights, bad parameter); the message says how to fix it."""


def resolve_path(value: str) -> Path:
    """A user path: absolute, or relative to the working directory, else to the package's share/source tree."""
    p = Path(os.path.expanduser(value))
    if p.is_absolute() or p.exists():
        return p
    try:
        return find_package_file(p)
    except FileNotFoundError:
        return p


def prompt_error(prompt: str, estimator, catalogue, backend: str) -> str | None:
    """Why a prompt cannot be used (None when it can): by meaning through the estimator's prompt resolver, by
    whole words for estimators whose network heads resolve prompts."""
    if backend not in PROMPT_BACKENDS:
        return None
    known = ", ".join(catalogue.names)
    if not prompt.strip():
        return f"the {backend} backend needs a prompt naming an object (known: {known})"
    resolve = getattr(estimator, "resolve_prompt", None)
    resolution = resolve(prompt) if resolve is not None else None
    if resolution is None:
        return None if keyword_objects(prompt, catalogue) else f"prompt {prompt!r} names no known object ({known})"
    return f"{resolution.refusal} (known: {known})" if resolution.refusal else None


class PoseNode(Node):
    """The pose node (rclpy must be initialised); ``estimator`` replaces the checkpoint's (tests)."""

    def __init__(self, estimator=None, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        if Detection3DArray is None:
            raise StartupError("vision_msgs is not importable: build the interface packages (`make interfaces`) "
                               "or source a ROS 2 install that has ros-<distro>-vision-msgs")
        self.defaults = load_pose_defaults()
        try:  # checked before any model is loaded
            self.p = declare_checked(self, PARAMS, self.defaults)
        except ParameterError as exc:
            raise StartupError(str(exc)) from None

        self.stats = Stats()
        # a catalogue of its own is read first: a broken mesh fails in a second, not after the model load
        own_catalogue = self._load_catalogue() if self.p["catalogue_dir"] else None
        self.estimator = estimator if estimator is not None else self._load_estimator()
        self.backend = getattr(self.estimator, "backend", "") or self.p["backend"]
        self.catalogue = own_catalogue if own_catalogue is not None else self.estimator.catalogue
        try:
            self.pipeline = FramePipeline.from_params(self.estimator, self.p, self.catalogue)
        except ValueError as exc:
            raise StartupError(f"tracking parameters: {exc}") from exc
        self._check_start_prompt()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._create_outputs()
        self._create_inputs()

        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._work, name="vfm_pose_inference", daemon=True)
        self.worker.start()
        self.create_timer(float(self.p["diagnostics_period_s"]), self._publish_diagnostics)
        depth = f" + depth {self.p['depth_topic']}" if self.p["use_depth"] else " (RGB only)"
        self.get_logger().info(f"ready: {self.estimator!r}; listening to {self.p['image_topic']}{depth}; "
                               f"publishing {self.resolve_topic_name('~/detections')}")

    @property
    def tracker(self):
        """Temporal filtering and tracking mode (vfm_pose_ros.core.tracking), when enabled."""
        return self.pipeline.tracker

    # ------------------------------------------------------------------ start-up

    def _check_start_prompt(self) -> None:
        error = self._prompt_error(self.p["prompt"])
        if error and self.p["prompt"]:
            self.pipeline.prompt_error = error
            self.get_logger().error(f"{error}: every frame is refused until a valid prompt is set (ros2 param "
                                    f"set {self.get_fully_qualified_name()} prompt \"the <object>\")")
        elif error:
            self.get_logger().info(f"no prompt: the {self.backend} backend looks for every catalogue object "
                                   f"({', '.join(self.catalogue.names)}); set the prompt parameter to choose one")

    def _create_outputs(self) -> None:
        reliable10 = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_det = self.create_publisher(Detection3DArray, "~/detections", reliable10)
        self.pub_markers = self.create_publisher(MarkerArray, "~/markers", reliable10)
        self.pub_debug = self.create_publisher(Image, "~/debug_image", QoSProfile(depth=2))
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", reliable10)
        self.tf_broadcaster = self._tf_broadcaster()

    def _create_inputs(self) -> None:
        # reliable input is meant to be lossless: a history of 20 absorbs bursts while the executor is starved
        # of CPU (inference on the worker); the node's own queue then drops stale frames, counted
        qos = qos_profile_sensor_data if self.p["input_qos"] == "sensor_data" else QoSProfile(
            depth=20, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self._camera_info = None
        self._info_event = threading.Event()
        self.create_subscription(CameraInfo, self.p["camera_info_topic"], self._on_camera_info, qos)
        self.queue = LatestQueue(self.p["queue_size"])
        self.sync = None
        self._subscribe_images(qos)

    def _load_estimator(self):
        from ..models import load_estimator

        ckpt = self.p["checkpoint"]
        if not ckpt:
            raise StartupError("parameter 'checkpoint' is empty: give a checkpoint from `vfm-pose train` "
                               "(-p checkpoint:=/path/model.pt, or checkpoint:=... with vfm-pose launch)")
        path = resolve_path(ckpt)
        if not path.is_file():
            raise StartupError(f"checkpoint not found: {ckpt} (looked in {Path.cwd()} and the package); "
                               "train one with `vfm-pose train ... --out CKPT` and pass checkpoint:=CKPT")
        overrides = {}
        if self.p["weights"]:
            weights = resolve_path(self.p["weights"])
            if not weights.is_file():
                raise StartupError(f"weights file not found: {self.p['weights']}; pass the backbone weights "
                                   "(.safetensors/.pth) with weights:=PATH, or '' to use the checkpoint's setting")
            overrides["weights"] = str(weights)
        if self.p["precision"] != "auto":
            overrides["precision"] = self.p["precision"]
        if self.p["icp_refine_top"]:
            overrides["icp_refine_top"] = self.p["icp_refine_top"]
        t0 = time.perf_counter()
        try:
            est = load_estimator(str(path), device=self.p["device"], backend=self.p["backend"] or None,
                                 **overrides)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise StartupError(f"cannot load the {self.p['backend'] or ''} estimator from {path}: {exc}") from exc
        self.get_logger().info(f"loaded {path} in {time.perf_counter() - t0:.1f} s")
        if est.score_calibration is None:
            self.get_logger().warning(
                f"{path} has no score calibration ({path}.calibration.json, for these weights): scores are the "
                f"backend's own and score_threshold {self.p['score_threshold']:g} means something else for each "
                f"backend; fit one with `vfm-pose calibrate --checkpoint {path}`")
        return est

    def _load_catalogue(self):
        if self.p["catalogue_dir"]:
            from ..core.catalogue_loader import load_catalogue

            d = resolve_path(self.p["catalogue_dir"])
            try:
                return load_catalogue(d)
            except (OSError, ValueError) as exc:
                raise StartupError(f"cannot read the catalogue {d}: {exc}") from exc
        return self.estimator.catalogue

    def _tf_broadcaster(self):
        try:
            from tf2_ros import TransformBroadcaster

            broadcaster = TransformBroadcaster(self)
            return lambda transforms: broadcaster.sendTransform(transforms)
        except ImportError:
            from tf2_msgs.msg import TFMessage

            # tf2_ros's DynamicBroadcasterQoS: reliable, volatile, keep last 100
            pub = self.create_publisher(TFMessage, "/tf", QoSProfile(depth=100,
                                                                     reliability=ReliabilityPolicy.RELIABLE))
            return lambda transforms: pub.publish(TFMessage(transforms=transforms))


    def _subscribe_images(self, qos):
        tol_s = float(self.p["sync_tolerance_ms"]) / 1000.0
        if not self.p["use_depth"]:
            self.create_subscription(Image, self.p["image_topic"], self._on_image_only, qos)
            return
        try:
            import message_filters
        except ImportError:
            message_filters = None
        if message_filters is not None:  # pragma: no cover - not installed here
            subs = [message_filters.Subscriber(self, Image, t, qos_profile=qos)
                    for t in (self.p["image_topic"], self.p["depth_topic"])]
            self._mf = message_filters.ApproximateTimeSynchronizer(subs, queue_size=10, slop=tol_s)
            self._mf.registerCallback(self._on_frame)
            subs[0].registerCallback(lambda _: self.stats.add("images_in"))
            subs[1].registerCallback(lambda _: self.stats.add("depth_in"))
            return
        from .sync import ApproximateSync

        self.sync = ApproximateSync(2, int(tol_s * 1e9), self._on_frame, queue_size=10)
        self.create_subscription(Image, self.p["image_topic"], lambda m: self._on_synced(0, "images_in", m), qos)
        self.create_subscription(Image, self.p["depth_topic"], lambda m: self._on_synced(1, "depth_in", m), qos)

    # ------------------------------------------------------------------ parameters

    def _prompt_error(self, prompt: str) -> str | None:
        return prompt_error(prompt, self.estimator, self.catalogue, self.backend)

    def _on_set_parameters(self, params):
        current = dict(self.p)
        for param in params:
            if param.name not in self.defaults:
                continue  # use_sim_time and other standard parameters
            if param.name not in DYNAMIC:
                return SetParametersResult(successful=False,
                                           reason=f"{param.name} is read at start: restart the node to change it")
            error = check_value(PARAMS, param.name, param.value, current)  # the start-up check, the same text
            if error is None and param.name == "prompt":
                error = self._prompt_error(param.value)
            if error:
                return SetParametersResult(successful=False, reason=error)
            current[param.name] = param.value
        for param in params:
            if param.name in self.defaults:
                self.p[param.name] = param.value
                if param.name == "sync_tolerance_ms" and self.sync is not None:
                    self.sync.tolerance_ns = int(float(param.value) * 1e6)
                if param.name == "prompt":
                    self.pipeline.prompt_error = None  # validated above
                    self.get_logger().info(f"prompt is now {param.value!r}")
        self.pipeline.settings = PipelineSettings.from_params(self.p)  # read whole by the next frame
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks (executor thread)

    def _on_camera_info(self, msg):
        self._camera_info = msg
        self._info_event.set()

    def _on_image_only(self, image):
        self.stats.add("images_in")
        self._on_frame(image, None)

    def _on_synced(self, stream: int, key: str, msg):
        self.stats.add(key)
        self.sync.add(stream, convert.stamp_to_ns(msg.header.stamp), msg)

    def _on_frame(self, image, depth):
        self.stats.add("frames_in")
        dropped = self.queue.put((image, depth, time.monotonic()))
        if dropped:
            self.stats.add("dropped_stale", dropped)

    # ------------------------------------------------------------------ worker thread

    def _work(self):
        while not self._stop.is_set():
            item = self.queue.get(timeout=0.1)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as exc:  # never let the worker die: count, log, go on
                self.stats.add("publish_failed")  # _process counts every other failure itself
                self.get_logger().error(f"publishing a result failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=5.0)

    def _warn_every(self, key: str, text: str) -> None:
        n = self.stats.add(key)
        every = max(1, int(self.p["warn_every_n"]))
        if n == 1 or n % every == 0:
            self.get_logger().warning(f"{text} [{key}: {n} so far; logged every {every}]")

    def _process(self, image, depth_msg, t_recv):
        """One frame: exactly one outcome counter and one published answer (see the module docstring)."""
        if not self._info_event.is_set():
            self._info_event.wait(float(self.p["camera_info_wait_ms"]) / 1000.0)
        info = self._camera_info
        if info is None:
            reason = (f"no camera_info received on {self.p['camera_info_topic']}: frames cannot be used "
                      "without intrinsics; check the topic name and that the camera driver publishes it")
            self._warn_every("no_camera_info", reason)
            self.stats.last_frame_rejected = True
            self._publish(image.header, [], reason, t_recv)
            return
        try:
            frame, result = self._run_pipeline(image, depth_msg, info)
        except Exception as exc:  # a message no check foresaw: still one outcome and one answer
            frame, result = None, FrameResult().fail(exc)
        self._count(result)
        self.stats.last_frame_rejected = result.outcome != "inferred"
        self._publish(image.header, result.poses, result.reason, t_recv,
                      frame if self.p["publish_debug_image"] else None)

    def _run_pipeline(self, image, depth_msg, info) -> tuple[CameraFrame | None, FrameResult]:
        """Decode the messages and run the pipeline; a message that cannot be decoded is refused like a bad frame."""
        stamp_ns = convert.stamp_to_ns(image.header.stamp)
        try:
            rgb = convert.image_to_rgb(image)
        except convert.ImageConversionError as exc:
            return None, self.pipeline.refused(InvalidInput(exc.reason, f"colour image: {exc}"), stamp_ns)
        depth = None
        if self.p["use_depth"] and depth_msg is not None:
            try:
                depth = convert.image_to_depth(depth_msg)
            except convert.ImageConversionError as exc:
                return None, self.pipeline.refused(InvalidInput(exc.reason, f"depth image: {exc}"), stamp_ns)
        K, size = convert.camera_info_to_K(info)
        frame = CameraFrame(rgb=rgb, K=K, depth=depth, stamp_ns=stamp_ns, frame_id=image.header.frame_id,
                            camera_size=size)
        return frame, self.pipeline.process(frame)

    def _count(self, result: FrameResult) -> None:
        """The frame's counters and stage times into the diagnostics; its warnings logged, throttled."""
        warned: dict[str, int] = {}
        for key, _ in result.warnings:
            warned[key] = warned.get(key, 0) + 1
        for key, n in result.counters.items():
            if n - warned.get(key, 0):
                self.stats.add(key, n - warned.get(key, 0))
        for key, text in result.warnings:
            self._warn_every(key, text)
        if result.outcome == "failed":
            self.get_logger().error(result.reason, throttle_duration_sec=5.0)
        if result.outcome == "inferred":  # the estimator ran: its stages (0 where one did not run) and its time
            with self.stats.lock:
                self.stats.infer_ms.append(result.timings_ms.get("infer", 0.0))
            self.stats.add_stages({k: v for k, v in result.timings_ms.items() if k != "infer"})

    def _publish(self, header, poses, reason, t_recv, frame: CameraFrame | None = None):
        if self._stop.is_set():
            return
        self.pub_det.publish(convert.poses_to_detection_array(poses, self.catalogue, header))
        if self.p["publish_tf"] and poses and self.tf_broadcaster is not None:
            self.tf_broadcaster(convert.pose_transforms(poses, self.catalogue, header, self.p["grasp_frames"]))
        if self.p["publish_markers"]:
            self.pub_markers.publish(convert.pose_markers(poses, self.catalogue, header))
        if frame is not None:
            try:
                self.pub_debug.publish(convert.rgb_to_image(
                    convert.draw_debug_image(frame.rgb, frame.K, poses, self.catalogue), header))
            except (convert.ImageConversionError, ValueError) as exc:
                self.get_logger().warning(f"debug image skipped: {exc}", throttle_duration_sec=5.0)
        self.stats.add("frames_processed")
        self.stats.add("objects_published", len(poses))
        self.stats.last_frame_empty = not poses
        if not poses:
            self.stats.add("empty_results")
            self.stats.last_empty_reason = reason
        with self.stats.lock:
            self.stats.latency_ms.append((time.monotonic() - t_recv) * 1e3)

    # ------------------------------------------------------------------ diagnostics

    def diagnostics(self):
        """The DiagnosticStatus for the current counters (also used by tests)."""
        rate_in, rate_done = self.stats.rates()
        p50, p95, infer, stages = self.stats.percentiles()
        with self.stats.lock:
            counts = dict(self.stats.counts)
            last_empty = self.stats.last_empty_reason
        rejected = sum(n for k, n in counts.items() if k.startswith("rejected_"))
        outcomes = counts.get("frames_inferred", 0) + rejected + counts.get("no_camera_info", 0) \
            + counts.get("failed", 0)
        sync_unmatched = self.sync.unmatched if self.sync else 0
        sync_pending = self.sync.pending if self.sync else 0
        fmt = (lambda v: "" if v is None else f"{v:.1f}")
        values = {"input_rate_hz": f"{rate_in:.2f}", "processed_rate_hz": f"{rate_done:.2f}",
                  "latency_p50_ms": fmt(p50), "latency_p95_ms": fmt(p95), "inference_median_ms": fmt(infer),
                  "backend": self.backend, "prompt": self.p["prompt"], "last_empty_reason": last_empty,
                  "sync_unmatched": str(sync_unmatched), "sync_pending": str(sync_pending),
                  "frames_rejected": str(rejected),
                  "frames_pending": str(counts.get("frames_in", 0) - counts.get("dropped_stale", 0) - outcomes)}
        values.update({f"stage_{name}_median_ms": fmt(ms) for name, ms in sorted(stages.items())})
        for key in ("images_in", "frames_in", "frames_processed", "frames_inferred", "dropped_stale", "failed",
                    "no_camera_info", "withheld_low_score", *(f"withheld_{code}" for code in GATE_REASONS),
                    "empty_results", "objects_published"):
            values[key] = str(counts.get(key, 0))
        for key, n in sorted(counts.items()):
            if key not in values:
                values[key] = str(n)
        level, message = DiagnosticStatus.OK, f"{rate_done:.1f} Hz processed"
        if counts.get("frames_in", 0) == 0:
            level, message = DiagnosticStatus.WARN, f"no frames received on {self.p['image_topic']}"
        elif counts.get("failed", 0) and not counts.get("objects_published", 0):
            level, message = DiagnosticStatus.ERROR, "inference fails on every frame; see the node's log"
        elif self._camera_info is None:
            level, message = DiagnosticStatus.WARN, f"no camera_info on {self.p['camera_info_topic']}"
        elif self.stats.last_frame_rejected:
            level, message = DiagnosticStatus.WARN, f"last frame refused: {last_empty}"
        elif self.stats.last_frame_empty:
            message = f"{rate_done:.1f} Hz processed; last frame empty: {last_empty}"
        return DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: pose estimation",
                                message=message, hardware_id=self.backend,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _publish_diagnostics(self):
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostics()]
        self.pub_diag.publish(msg)

    def stop(self):
        self._stop.set()
        self.worker.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    """Console script ``pose_node``: spin until Ctrl-C / SIGTERM; exit 1 with a message when start-up fails."""
    configure_ros_env()
    import rclpy

    from . import spin

    spin.init(args)
    try:
        node = PoseNode()
    except StartupError as exc:
        print(f"pose_node: {exc}", file=sys.stderr)
        rclpy.shutdown()
        return 1
    try:
        spin.spin(node)
    finally:
        node.stop()
        spin.shutdown(node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
