"""The evaluator node: scores the pose node's detections against ground truth replayed from a bag.

Subscribes to the detections (default ``/vfm_pose/detections``), the ground truth
(``/ground_truth/detections``, class_id = object name, as ``vfm-pose make-bag`` writes it),
the camera info (for MSPD) and, with ``vsd`` (default on), the depth image (for VSD and so
BOP's average recall; frames whose depth never came have none, and BOP AR is then reported
as not available). The bag writes depth before the colour image, so a frame's depth is in
before its detections. A frame is the pair of messages with the *same* header
stamp; whichever comes first waits up to ``match_timeout_s`` for its partner. Ground truth
whose detections never come is scored as a frame with no prediction (every instance a
failure) and listed under ``ros.gaps`` in the report; detections without ground truth are
counted (``ros.detections_without_ground_truth``) and otherwise ignored.

Scoring is :class:`vfm_pose_ros.core.metrics.PoseEvaluator`, the code ``vfm-pose eval`` uses,
with the catalogue's meshes, so the report has the same keys and numbers as the offline
evaluation of the same predictions. Running totals go out once per second as JSON on
``~/summary`` (std_msgs/String). The report is written to ``output_dir`` as ``report.json``,
``frames.csv`` (one row per ground-truth instance, with its stamp) and ``report.md``:

* on shutdown (Ctrl-C / SIGINT, SIGTERM),
* on a message on ``~/write_report`` (std_msgs/Empty) or a call of the ``~/write_report``
  service (std_srvs/Trigger, where std_srvs is installed),
* when the bag player has announced the end of the bag (``done_topic``, default
  ``/bag_player/done``, carrying how many frames it sent) and every sent frame has been
  scored, or ``match_timeout_s`` after that announcement; pending ground truth is then
  scored as gaps. With ``exit_after_report`` the node then exits (the benchmark graph ends).

Ctrl-C does not interrupt a frame being scored: the node finishes it, takes the messages
already received, scores pending ground truth as gaps and writes the report. Report files are
replaced atomically (written beside, then renamed), so a reader never sees half a report.

Bad input never stops the node: a detection with a malformed pose (non-finite, non-unit
quaternion) is dropped and ground truth naming an object outside the catalogue is skipped,
each counted under ``ros.input_problems`` in the report. A frame complete before any camera
info has arrived waits for one (up to ``match_timeout_s``), so MSPD is not lost to message order.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from .env import configure_ros_env
from .params import EVALUATOR_PARAMS, declare_checked

NODE_NAME = "vfm_pose_evaluator"

# Parameters: type, range, description and default (vfm_pose_ros.ros.params, checked at start); none is dynamic
DEFAULTS = {name: p.default for name, p in EVALUATOR_PARAMS.items()}


def markdown_report(report: dict) -> str:
    """The report's per-object and overall rows as a Markdown table, plus the ROS run's frame accounting."""
    from ..core.metrics import format_report_markdown

    lines = [format_report_markdown(report)]
    ros = report.get("ros", {})
    lines += ["", f"{report['n_frames']} frames scored; {ros.get('frames_matched', 0)} matched with detections, "
                  f"{len(ros.get('gaps', []))} without (failures), {ros.get('detections_without_ground_truth', 0)} "
                  "detection messages without ground truth."]
    return "\n".join(lines) + "\n"


class Scorer:
    """Stamp matching and scoring, without ROS (the node feeds it; tests can too).

    ``add_ground_truth`` / ``add_detections`` take a stamp and a list of poses; a frame is
    scored as soon as both halves are there; :meth:`expire` scores ground truth that waited
    longer than ``timeout_s`` as a gap.
    """

    def __init__(self, catalogue, max_points: int | None = None, timeout_s: float = 10.0, frame_ids=None,
                 camera=None, depth=None, vsd_delta: float = 0.015):
        from ..core.metrics import PoseEvaluator

        self.catalogue = catalogue
        self.camera = camera  # stamp -> (K, image width) or None: intrinsics looked up when a frame is scored
        self.depth = depth  # stamp -> depth (metres) or None, looked up (and released) when a frame is scored
        renderer = None
        if depth is not None:
            from ..data.render import DepthPatches

            renderer = DepthPatches()
        self.evaluator = PoseEvaluator(catalogue, max_points=max_points, renderer=renderer, vsd_delta=vsd_delta)
        self.timeout_s = float(timeout_s)
        self.frame_ids = frame_ids or {}  # stamp -> (scene_id, im_id)
        self.lock = threading.Lock()
        self.pending_gt: OrderedDict[int, tuple] = OrderedDict()  # stamp -> (gts, K, width, t)
        self.pending_det: OrderedDict[int, tuple] = OrderedDict()  # stamp -> (poses, t)
        self.waiting_camera: OrderedDict[int, tuple] = OrderedDict()  # complete, no intrinsics yet: (gts, poses,
        # matched, t)
        self.problems: dict[str, int] = {}  # bad input seen by the node, by kind (report: ros.input_problems)
        self.scored: set[int] = set()
        self.rows: list[dict] = []
        self.gaps: list[int] = []
        self.matched = 0
        self.det_without_gt = 0
        self.duplicates = 0
        self.unknown_classes: dict[str, int] = {}
        self.n_detections = 0

    def _known(self, poses):
        out = []
        for p in poses:
            if p.name in self.catalogue:
                out.append(p)
            else:
                self.unknown_classes[p.name] = self.unknown_classes.get(p.name, 0) + 1
        return out

    def count_problem(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self.problems[kind] = self.problems.get(kind, 0) + n

    def add_ground_truth(self, stamp: int, gts, K=None, width=None, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            if stamp in self.scored or stamp in self.pending_gt or stamp in self.waiting_camera:
                self.duplicates += 1
                return
            if stamp in self.pending_det:
                poses, _ = self.pending_det.pop(stamp)
                self._score(stamp, gts, poses, K, width, matched=True, now=now)
            else:
                self.pending_gt[stamp] = (gts, K, width, now)

    def add_detections(self, stamp: int, poses, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.n_detections += len(poses)
            poses = self._known(poses)
            if stamp in self.scored or stamp in self.pending_det or stamp in self.waiting_camera:
                self.duplicates += 1
                return
            if stamp in self.pending_gt:
                gts, K, width, _ = self.pending_gt.pop(stamp)
                self._score(stamp, gts, poses, K, width, matched=True, now=now)
            else:
                self.pending_det[stamp] = (poses, now)

    def expire(self, now: float | None = None, everything: bool = False) -> None:
        """Score ground truth that waited too long as gaps; drop detections that found no ground truth; score
        frames that waited too long for camera info without it."""
        now = time.monotonic() if now is None else now
        with self.lock:
            for stamp in [s for s, v in self.pending_gt.items() if everything or now - v[3] > self.timeout_s]:
                gts, K, width, _ = self.pending_gt.pop(stamp)
                self._score(stamp, gts, [], K, width, matched=False, now=now)
            for stamp in [s for s, v in self.pending_det.items() if everything or now - v[1] > self.timeout_s]:
                self.pending_det.pop(stamp)
                self.det_without_gt += 1
            for stamp in [s for s, v in self.waiting_camera.items() if everything or now - v[3] > self.timeout_s]:
                gts, poses, matched, _ = self.waiting_camera.pop(stamp)
                self._score(stamp, gts, poses, None, None, matched, force=True)

    def camera_arrived(self) -> None:
        """Score the frames that were waiting for intrinsics (the node calls this on camera info)."""
        with self.lock:
            for stamp in list(self.waiting_camera):
                gts, poses, matched, t = self.waiting_camera.pop(stamp)
                self._score(stamp, gts, poses, None, None, matched, now=t)

    def _score(self, stamp, gts, poses, K, width, matched: bool, now: float | None = None,
               force: bool = False) -> None:
        if K is None and self.camera is not None:  # camera info can arrive after the ground truth (other topic)
            K, width = self.camera(stamp) or (None, None)
            if K is None and not force:  # none yet: wait (MSPD needs K), at most timeout_s
                self.waiting_camera[stamp] = (gts, poses, matched, time.monotonic() if now is None else now)
                return
        scene_id, im_id = self.frame_ids.get(stamp, (None, None))
        depth = self.depth(stamp) if self.depth is not None else None
        results = self.evaluator.add_frame(gts, poses, K=K, image_width=width, scene_id=scene_id, im_id=im_id,
                                           depth=depth)
        self.scored.add(stamp)
        if matched:
            self.matched += 1
        else:
            self.gaps.append(stamp)
        for r in results:
            self.rows.append({"stamp_ns": stamp, "detections_received": matched, **r.to_dict()})

    def report(self) -> dict:
        """``PoseEvaluator.report()`` (the keys of ``vfm-pose eval``), plus ``dataset`` and ``ros`` sections."""
        with self.lock:
            rep = self.evaluator.report()
            rep["dataset"] = {
                "root": None, "split": None, "targets": False,
                "n_results": self.n_detections,
                "n_results_scored": self.n_detections - sum(self.unknown_classes.values()),
                "n_results_outside_dataset": self.det_without_gt,
                "unknown_obj_ids": sorted(self.unknown_classes),
                "mean_time_per_image_s": None,
            }
            rep["ros"] = {
                "frames_matched": self.matched,
                "gaps": sorted(self.gaps),
                "n_gaps": len(self.gaps),
                "detections_without_ground_truth": self.det_without_gt,
                "duplicate_messages": self.duplicates,
                "pending_ground_truth": len(self.pending_gt),
                "pending_detections": len(self.pending_det),
                "waiting_for_camera_info": len(self.waiting_camera),
                "input_problems": dict(sorted(self.problems.items())),
            }
            return rep

    def write(self, out_dir) -> dict:
        """Write report.json, frames.csv and report.md under ``out_dir``; returns the report."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rep = self.report()
        with self.lock:
            rows = sorted(self.rows, key=lambda r: (r["stamp_ns"], r["name"], r["gt_id"]))
        fields = list(rows[0]) if rows else ["stamp_ns", "detections_received"]  # InstanceResult.to_dict's order
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        _write_atomic(out / "frames.csv", buf.getvalue())
        _write_atomic(out / "report.md", markdown_report(rep))
        _write_atomic(out / "report.json", json.dumps(rep, indent=2) + "\n")  # last: its presence means complete
        return rep

    def summary(self) -> dict:
        """Running totals for ~/summary (cheap: the overall row only)."""
        rep = self.report()
        o = rep["overall"]
        keep = ("n_gt", "n_predicted", "add_mean_mm", "adds_mean_mm", "rot_err_mean_deg", "trans_err_mean_mm",
                "add_01d_acc", "add_s_01d_acc", "acc_5cm5deg", "auc_add", "bop19_average_recall")
        return {"n_frames": rep["n_frames"], **{k: o.get(k) for k in keep}, **rep["ros"],
                "gaps": rep["ros"]["gaps"][-20:]}


def _write_atomic(path: Path, text: str) -> None:
    """Write beside, then rename: a reader (or a kill mid-write) sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def _make_node_class():
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Empty, String
    from vision_msgs.msg import Detection3DArray

    from ..core.catalogue import Catalogue
    from ..core.types import GroundTruthPose, ObjectPose
    from ..paths import default_catalogue_dir
    from . import convert

    class EvaluatorNode(Node):
        def __init__(self, **node_kwargs):
            super().__init__(NODE_NAME, **node_kwargs)
            self.p = declare_checked(self, EVALUATOR_PARAMS)  # ParameterError (a ValueError): one line, exit 1
            cat_dir = Path(self.p["catalogue_dir"]) if self.p["catalogue_dir"] else default_catalogue_dir()
            catalogue = Catalogue.from_dir(cat_dir)
            frame_ids = {}
            if self.p["bag"]:
                from ..data.rosbag import bag_metadata

                frame_ids = {int(f[0]): (int(f[1]), int(f[2])) for f in bag_metadata(self.p["bag"]).get("frames", [])}
            self._depth: OrderedDict[int, object] = OrderedDict()  # stamp -> depth (metres), the last few frames
            self._depth_lock = threading.Lock()
            self.scorer = Scorer(catalogue, max_points=int(self.p["max_points"]) or None,
                                 timeout_s=float(self.p["match_timeout_s"]), frame_ids=frame_ids,
                                 camera=lambda stamp: self._K.get(stamp, self._latest_K),
                                 depth=self._take_depth if self.p["vsd"] else None,
                                 vsd_delta=float(self.p["vsd_delta_mm"]) / 1000.0)
            self._obj_ids = {o.name: o.class_id for o in catalogue}
            self._K: OrderedDict[int, tuple] = OrderedDict()
            self._latest_K = None
            self._write_lock = threading.Lock()
            self._done_at: float | None = None  # when the player said it finished
            self._frames_sent: int | None = None
            self.finished = False

            reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            if self.p["vsd"]:  # created first: rclpy serves ready subscriptions in creation order, so a frame's
                # depth is taken in before its detections when both wait (the node busy scoring)
                self.create_subscription(Image, self.p["depth_topic"], self._on_depth, reliable)
            self.create_subscription(Detection3DArray, self.p["detections_topic"], self._on_detections, reliable)
            self.create_subscription(Detection3DArray, self.p["ground_truth_topic"], self._on_ground_truth, reliable)
            self.create_subscription(CameraInfo, self.p["camera_info_topic"], self._on_camera_info,
                                     qos_profile_sensor_data)
            if self.p["done_topic"]:
                latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
                self.create_subscription(String, self.p["done_topic"], self._on_done, latched)
            self.create_subscription(Empty, "~/write_report", lambda _: self.write_report("requested"), 10)
            try:
                from std_srvs.srv import Trigger

                self.create_service(Trigger, "~/write_report", self._on_trigger)
            except ImportError:  # std_srvs is optional (the topic does the same)
                pass
            self.pub_summary = self.create_publisher(String, "~/summary", 10)
            self.create_timer(float(self.p["summary_period_s"]), self._tick)
            self.get_logger().info(f"scoring {self.p['detections_topic']} against {self.p['ground_truth_topic']} "
                                   f"({len(catalogue)} objects from {cat_dir}); report -> {self.p['output_dir']}")

        def _on_camera_info(self, msg):
            K, (w, _) = convert.camera_info_to_K(msg)
            entry = (K, float(w) if w else None)
            self._latest_K = entry
            self._K[convert.stamp_to_ns(msg.header.stamp)] = entry
            while len(self._K) > 1000:
                self._K.popitem(last=False)
            if self.scorer.waiting_camera:
                self.scorer.camera_arrived()

        def _on_depth(self, msg):
            # kept as the message (16UC1: half the bytes of float metres), converted when its frame is scored;
            # a frame scored without detections needs none (every instance is a failure)
            with self._depth_lock:
                self._depth[convert.stamp_to_ns(msg.header.stamp)] = msg
                while len(self._depth) > 30:
                    self._depth.popitem(last=False)

        def _take_depth(self, stamp):
            with self._depth_lock:
                msg = self._depth.pop(stamp, None)
            if msg is None:
                return None
            try:
                return convert.image_to_depth(msg)
            except ValueError as exc:  # ImageConversionError included
                self.scorer.problems["depth_unreadable"] = self.scorer.problems.get("depth_unreadable", 0) + 1
                self.get_logger().warning(f"depth image unreadable ({exc}): no VSD for that frame",
                                          throttle_duration_sec=5.0)
                return None

        def _on_ground_truth(self, msg):
            stamp = convert.stamp_to_ns(msg.header.stamp)
            invalid: list = []
            gts = [GroundTruthPose(obj_id=int(self._obj_ids.get(name, 0)), name=name, R=R, t=t)
                   for name, R, t, _ in convert.detection_array_to_list(msg, invalid)]
            if invalid:  # scoring the rest would count the frame's missing instances as the estimator's misses
                self.scorer.count_problem("ground_truth_invalid_pose", len(invalid))
                self.get_logger().error(f"ground truth at {stamp} ns has malformed poses {invalid[:3]}; check the "
                                        "bag (frame skipped)", throttle_duration_sec=5.0)
                return
            unknown = sorted({g.name for g in gts if g.name not in self._obj_ids})
            if unknown:
                self.scorer.count_problem("ground_truth_unknown_object")
                self.get_logger().error(f"ground truth names objects not in the catalogue: {unknown}; set "
                                        "catalogue_dir to the catalogue the bag was made with (frame skipped)",
                                        throttle_duration_sec=5.0)
                return
            self.scorer.add_ground_truth(stamp, gts)

        def _on_detections(self, msg):
            stamp = convert.stamp_to_ns(msg.header.stamp)
            invalid: list = []
            poses = [ObjectPose(name=name, R=R, t=t, score=score if math.isfinite(score) else 0.0)
                     for name, R, t, score in convert.detection_array_to_list(msg, invalid)]
            if invalid:  # scored as missing (a robot could not use them either)
                self.scorer.count_problem("detection_invalid_pose", len(invalid))
                self.get_logger().warning(f"detections at {stamp} ns with malformed poses dropped: {invalid[:3]}",
                                          throttle_duration_sec=5.0)
            self.scorer.add_detections(stamp, poses)

        def _on_done(self, msg):
            try:
                self._frames_sent = int(json.loads(msg.data).get("frames_sent"))
            except (ValueError, TypeError, AttributeError):
                self._frames_sent = None
            self._done_at = time.monotonic()
            self.get_logger().info(f"the bag player finished ({self._frames_sent} frames sent); the report follows "
                                   "once they are scored")

        def _on_trigger(self, request, response):
            path = self.write_report("service call")
            response.success, response.message = True, str(path)
            return response

        def _tick(self):
            self.scorer.expire()
            if self._done_at is not None:
                all_scored = self._frames_sent is not None and len(self.scorer.scored) >= self._frames_sent \
                    and not self.scorer.pending_gt and not self.scorer.waiting_camera
                if all_scored or time.monotonic() - self._done_at > self.scorer.timeout_s:
                    self._done_at = None
                    self.write_report("end of bag", final=True)
                    self.finished = bool(self.p["exit_after_report"])
            self.pub_summary.publish(String(data=json.dumps(_json_safe(self.scorer.summary()))))

        def write_report(self, why: str, final: bool = False) -> Path:
            """Write the report files; ``final`` first scores every pending ground truth as a gap."""
            with self._write_lock:
                if final:
                    self.scorer.expire(everything=True)
                out = Path(self.p["output_dir"])
                rep = self.scorer.write(out)
                o = rep["overall"]
                acc = "-" if o["add_s_01d_acc"] is None else f"{o['add_s_01d_acc']:.3f}"
                msg = (f"report ({why}) -> {out}/report.json: {rep['n_frames']} frames, {o['n_gt']} instances, "
                       f"ADD(-S)-0.1d {acc}, {rep['ros']['n_gaps']} frames without detections")
                if self.context.ok():
                    self.get_logger().info(msg)
                else:  # after Ctrl-C the context is gone, and with it /rosout
                    print(f"[{NODE_NAME}] {msg}", file=sys.stderr, flush=True)
                return out

    return EvaluatorNode


def EvaluatorNode(**kwargs):
    """Create the evaluator node (rclpy must be initialised)."""
    return _make_node_class()(**kwargs)


def main(args: list[str] | None = None) -> int:
    """Console script ``evaluator_node``: on Ctrl-C / SIGTERM, score pending frames as gaps and write the report."""
    configure_ros_env()
    import rclpy

    from . import spin

    spin.init(args)
    try:
        node = EvaluatorNode()
    except (FileNotFoundError, ValueError) as exc:
        print(f"evaluator_node: {exc}", file=sys.stderr)
        rclpy.shutdown()
        return 1
    try:
        why = spin.spin(node, drain_s=1.0, should_stop=lambda: node.finished)
        if why != "finished":  # Ctrl-C / SIGTERM: what arrived is scored, what is missing counts as gaps
            node.write_report(f"{why.lower()}", final=True)
    finally:
        spin.shutdown(node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
