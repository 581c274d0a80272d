"""The nodes' parameters, in one table each: type, range or choices, dynamic or not, description.

The pose node and the evaluator node declare their parameters from these tables and check every
value with :func:`check_value` / :func:`check_values`, both at start (a bad value ends the node with
one line naming the parameter and its range, before any model is loaded) and when a parameter is
set while the node runs (the same text comes back as the refusal's reason). Without one table the
two paths drifted: ``score_threshold:=-1`` started although the same value was refused at run time,
and ``sync_tolerance_ms:=-5`` was taken both ways and then no colour/depth pair ever matched.

The pose node's defaults stay in config/pose.yaml (the one place they are written: launch files and
``vfm-pose launch`` read it too); a test checks that the table and the file name the same parameters.
The evaluator has no parameters file, so its defaults are in its table. ROS-free.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

INF = math.inf


class ParameterError(ValueError):
    """A parameter value the node cannot start with; the message is one line naming it and its range."""


@dataclass(frozen=True)
class Param:
    """One parameter: ``type`` (bool, int, float or str), an optional numeric range (``low``/``high``,
    open at a bound where ``*_open``), optional ``choices`` or a regex ``pattern`` for strings."""

    name: str
    type: type
    description: str
    dynamic: bool = False
    low: float = -INF
    high: float = INF
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    pattern: str | None = None
    default: object = None  # where the node has no parameters file (the evaluator)

    def range_text(self) -> str:
        """What values are allowed, as a phrase ("a number in [0, 1]", "one of clip, dinov2")."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) if c == "" else str(c) for c in self.choices)
        if self.type is bool:
            return "true or false"
        if self.type is str:
            return f"text matching {self.pattern}" if self.pattern else "text"
        kind = "a whole number" if self.type is int else "a number"
        fmt = (lambda v: f"{v:g}")
        if self.low == -INF and self.high == INF:
            return kind
        if self.high == INF:
            return f"{kind} {'>' if self.low_open else '>='} {fmt(self.low)}"
        if self.low == -INF:
            return f"{kind} {'<' if self.high_open else '<='} {fmt(self.high)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{kind} in {left}{fmt(self.low)}, {fmt(self.high)}{right}"

    def check(self, value) -> str | None:
        """None when ``value`` is allowed, else one line naming the parameter, the value and the range."""
        ok = True
        if self.type is bool:
            ok = isinstance(value, bool)
        elif self.type in (int, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and (self.type is float or isinstance(value, int))
            if ok:
                v = float(value)
                ok = math.isfinite(v) and (v > self.low if self.low_open else v >= self.low) \
                    and (v < self.high if self.high_open else v <= self.high)
        elif self.type is str:
            ok = isinstance(value, str) and (self.pattern is None or re.fullmatch(self.pattern, value) is not None)
        if ok and self.choices is not None:
            ok = value in self.choices
        if ok:
            return None
        return f"parameter {self.name}={value!r} refused: {self.name} must be {self.range_text()}"


def _p(name, type_, description, **kw) -> tuple[str, Param]:
    return name, Param(name, type_, description, **kw)


_TOPIC = r"[~/A-Za-z_{][A-Za-z0-9_/~{}]*"
_TOPIC_OR_EMPTY = rf"(|{_TOPIC})"

POSE_PARAMS: dict[str, Param] = dict([
    # --- model (read at start)
    _p("backend", str, "pose backend; must be the checkpoint's ('' = the checkpoint's)",
       choices=("", "clip", "dinov2", "hybrid")),
    _p("checkpoint", str, "a checkpoint from `vfm-pose train`"),
    _p("weights", str, "backbone weights file for full-size configs ('' = as the checkpoint says)"),
    _p("catalogue_dir", str, "object catalogue directory ('' = the catalogue stored in the checkpoint)"),
    _p("device", str, "auto (cuda if available), cpu, cuda or cuda:N", pattern=r"auto|cpu|cuda(:\d+)?"),
    _p("precision", str, "inference precision", choices=("auto", "fp32", "fp16", "bf16")),
    # --- inputs (read at start, except sync_tolerance_ms)
    _p("image_topic", str, "colour image topic", pattern=_TOPIC),
    _p("camera_info_topic", str, "camera info topic", pattern=_TOPIC),
    _p("depth_topic", str, "depth image topic, aligned to colour", pattern=_TOPIC),
    _p("use_depth", bool, "use depth (ICP refinement, the depth plausibility gate); false = RGB only"),
    _p("icp_refine_top", int, "ICP starts refined past the coarse pass (0 = the checkpoint's, 2 unless it says; "
       "16: every start, a point or two more accurate for about half again the depth stage's time)", low=0, high=64),
    _p("input_qos", str, "QoS of the image subscriptions", choices=("sensor_data", "reliable")),
    _p("sync_tolerance_ms", float, "colour and depth stamps may differ by this much", dynamic=True,
       low=0.0, high=10_000.0),
    _p("camera_info_wait_ms", float, "a frame arriving before any camera_info waits this long for one",
       low=0.0, high=60_000.0),
    _p("queue_size", int, "frames waiting for inference (older ones are dropped as stale)", low=1, high=1000),
    # --- what is published
    _p("prompt", str, "text naming the object(s) and grasp (checked against the catalogue too)", dynamic=True),
    _p("score_threshold", float, "results below this score are withheld and counted (calibrated checkpoints: the "
       "chance the pose is right)", dynamic=True,
       low=0.0, high=1.0),
    _p("plausibility_gates", bool, "withhold implausible poses (the gates below); false publishes every valid result",
       dynamic=True),
    _p("min_distance_m", float, "poses nearer the camera than this are withheld (withheld_distance; 0 = no minimum)",
       dynamic=True, low=0.0, high=1000.0),
    _p("max_distance_m", float, "poses farther than this are withheld (withheld_distance; 0 = no maximum)",
       dynamic=True, low=0.0, high=1000.0),
    _p("min_projected_px", float, "poses whose object would span fewer pixels are withheld "
       "(withheld_projected_size; 0 = no minimum)", dynamic=True, low=0.0, high=10_000.0),
    _p("max_projected_size", float, "poses whose object would span more than this many image sizes are withheld "
       "(withheld_projected_size; 0 = no maximum)", dynamic=True, low=0.0, high=1000.0),
    _p("depth_tolerance_m", float, "with depth: poses standing farther than this behind or in front of the measured "
       "surface are withheld (withheld_depth_mismatch; 0 = no depth gate)", dynamic=True, low=0.0, high=100.0),
    _p("publish_tf", bool, "broadcast TF for each published object", dynamic=True),
    _p("grasp_frames", str, "which grasp frames go to TF", dynamic=True, choices=("selected", "all", "none")),
    _p("publish_markers", bool, "publish ~/markers", dynamic=True),
    _p("publish_debug_image", bool, "publish ~/debug_image", dynamic=True),
    _p("diagnostics_period_s", float, "/diagnostics publishing period", low=0.0, high=3600.0, low_open=True),
    _p("warn_every_n", int, "repeated input problems are logged once per N", dynamic=True, low=1),
    # --- temporal filtering and tracking (read at start; limits as core.tracking.TrackingConfig)
    _p("tracking_enabled", bool, "per-object tracks: outlier rejection, smoothing, tracking mode"),
    _p("tracking_warm_start", bool, "tracking mode (needs depth): ICP from the last pose"),
    _p("tracking_smoothing", float, "0 = raw estimates; towards 1 = smoother", low=0.0, high=1.0, high_open=True),
    _p("tracking_velocity_gain", float, "constant-velocity gain of the alpha-beta filter", low=0.0, high=2.0,
       high_open=True),
    _p("tracking_max_jump_mm", float, "translation jump beyond which an estimate is an outlier", low=0.0,
       low_open=True),
    _p("tracking_max_jump_deg", float, "rotation jump beyond which an estimate is an outlier", low=0.0, high=180.0,
       low_open=True),
    _p("tracking_min_fitness", float, "tracking mode holds while depth confirms this share of the visible surface",
       low=0.0, high=1.0),
    _p("tracking_timeout_s", float, "a track not updated for this long is dropped", low=0.0, low_open=True),
    _p("tracking_redetect_every", int, "tracking mode: a full estimation at least every N frames", low=1),
    _p("tracking_roi_reuse", bool, "tracking mode: the tracks' 2D boxes replace detection"),
])

EVALUATOR_PARAMS: dict[str, Param] = dict([
    _p("detections_topic", str, "the pose node's detections", pattern=_TOPIC, default="/vfm_pose/detections"),
    _p("ground_truth_topic", str, "ground truth (class_id = object name)", pattern=_TOPIC,
       default="/ground_truth/detections"),
    _p("camera_info_topic", str, "camera info (for MSPD)", pattern=_TOPIC, default="/camera/color/camera_info"),
    _p("depth_topic", str, "depth image (for VSD)", pattern=_TOPIC, default="/camera/aligned_depth_to_color/image_raw"),
    _p("vsd", bool, "VSD (and BOP AR) for frames whose depth arrives; false: no depth subscription", default=True),
    _p("vsd_delta_mm", float, "BOP's VSD visibility tolerance (5 for ITODD)", low=0.0, low_open=True, high=1000.0,
       default=15.0),
    _p("done_topic", str, "the player's end-of-bag message ('' = ignore)", pattern=_TOPIC_OR_EMPTY,
       default="/bag_player/done"),
    _p("catalogue_dir", str, "object catalogue: YAML folder, BOP models folder, dataset root or mesh ('' = the "
       "package's config/objects)", default=""),
    _p("objects", str, "comma-separated object names to score, the others left out ('' = every catalogue object)",
       default=""),
    _p("max_points", int, "model points for the metrics; 0 = all vertices", low=0, default=0),
    _p("match_timeout_s", float, "how long a message waits for its partner with the same stamp", low=0.0,
       low_open=True, high=3600.0, default=10.0),
    _p("exit_after_report", bool, "exit once the end-of-bag report is written (the benchmark graph)", default=False),
    _p("output_dir", str, "where report.json, frames.csv and report.md go", pattern=r".+", default="vfm_pose_eval"),
    _p("bag", str, "the replayed bag, to label rows with BOP scene_id / im_id ('' = none)", default=""),
    _p("max_frames", int, "the player's --max-frames: only the bag's first N frames are expected (0 = all)", low=0,
       default=0),
    _p("summary_period_s", float, "~/summary publishing period", low=0.0, low_open=True, high=3600.0, default=1.0),
])


def check_value(table: dict[str, Param], name: str, value, current: dict | None = None) -> str | None:
    """None when ``name`` may take ``value`` (given the other ``current`` values), else one line saying why."""
    param = table.get(name)
    if param is None:
        return None  # use_sim_time and other standard parameters
    error = param.check(value)
    if error is None and current is not None:
        error = _relations(table, {**current, name: value})
    return error


def check_values(table: dict[str, Param], values: dict) -> list[str]:
    """Every problem with a complete set of values (start-up): one line each, in table order."""
    errors = [e for name, p in table.items() if name in values and (e := p.check(values[name]))]
    if not errors:
        rel = _relations(table, values)
        if rel:
            errors.append(rel)
    return errors


def _relations(table: dict[str, Param], values: dict) -> str | None:
    """Checks across parameters."""
    if table is POSE_PARAMS:
        lo, hi = values.get("min_distance_m", 0.0), values.get("max_distance_m", 0.0)
        if hi and lo >= hi:
            return (f"parameters min_distance_m={lo!r} and max_distance_m={hi!r}: the working range is empty; "
                    "min_distance_m must be below max_distance_m (or max_distance_m 0 for no maximum)")
    return None


def descriptor_kwargs(param: Param) -> dict:
    """Keyword arguments for rcl_interfaces ParameterDescriptor (``ros2 param describe`` shows them)."""
    return {"description": param.description, "read_only": not param.dynamic,
            "additional_constraints": param.range_text()}


def declare_checked(node, table: dict[str, Param], defaults: dict | None = None) -> dict:
    """Declare the parameters (``defaults``, else the table's own) on an rclpy node with their descriptors and
    return the values, or raise :class:`ParameterError` with one line naming the first bad parameter and its
    range (a value of the wrong type too, which rclpy itself refuses with a traceback)."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    if defaults is None:
        defaults = {name: p.default for name, p in table.items()}
    values = {}
    for name, default in defaults.items():
        param = table.get(name)
        descriptor = ParameterDescriptor(**descriptor_kwargs(param)) if param else ParameterDescriptor()
        try:
            values[name] = node.declare_parameter(name, default, descriptor).value
        except (InvalidParameterTypeException, InvalidParameterValueException, TypeError) as exc:
            what = param.range_text() if param else f"of the type of {default!r}"
            raise ParameterError(f"parameter {name} refused: a value of the wrong type ({exc.__class__.__name__}); "
                                 f"{name} must be {what}") from None
    errors = check_values(table, values)
    if errors:
        raise ParameterError(errors[0])
    return values
