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
counted (``ros.detections_without_ground_truth``) and otherwise ignored, and so are detections of
classes outside the catalogue (``ros.detections_unknown_class``, by name under ``ros.unknown_classes``).

Scoring is :class:`vfm_pose_ros.core.metrics.PoseEvaluator`, the code ``vfm-pose eval`` uses,
with the catalogue's meshes, so the report has the same keys and numbers as the offline
evaluation of the same predictions. Running totals go out once per second as JSON on
``~/summary`` (std_msgs/String) and as a DiagnosticStatus on ``/diagnostics``. The report is
written to ``output_dir`` as ``report.json``, ``frames.csv`` (one row per ground-truth instance,
with its stamp) and ``report.md``:

* on shutdown (Ctrl-C / SIGINT, SIGTERM),
* on a message on ``~/write_report`` (std_msgs/Empty) or a call of the ``~/write_report``
  service (std_srvs/Trigger, where std_srvs is installed),
* when the bag player has announced the end of the bag (``done_topic``, default
  ``/bag_player/done``, carrying how many frames it sent) and every sent frame has been
  scored, or ``match_timeout_s`` after that announcement; pending ground truth is then
  scored as gaps. With ``exit_after_report`` the node then exits (the benchmark graph ends).

With ``bag`` set, the report says whether the whole bag was played: ``status`` is ``complete`` or
``incomplete`` (``ros.frames_played`` of ``ros.frames_in_bag``, e.g. when a node of the benchmark
graph died and the launcher stopped it), and the final report scores the ground truth of the frames
never played, read from the bag, as failures (``ros.unplayed_frames``).

Ctrl-C does not interrupt a frame being scored: the node finishes it, takes the messages
already received, scores pending ground truth as gaps and writes the report. Report files are
replaced atomically (written beside, then renamed), so a reader never sees half a report.

Bad input never stops the node: a detection with a malformed pose (non-finite, non-unit
quaternion) is dropped and ground truth naming an object outside the catalogue is skipped,
each counted under ``ros.input_problems`` in the report. A frame complete before any camera
info has arrived waits for one (up to ``match_timeout_s``), so MSPD is not lost to message order.
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Empty, Header, String

from ..core.catalogue_loader import load_catalogue, parse_object_names
from ..core.types import GroundTruthPose, ObjectPose
from ..data.stream_evaluation import Scorer  # also imported from here by tests
from ..paths import default_catalogue_dir
from ..report.tables import markdown_report
from . import convert
from .env import configure_ros_env
from .params import EVALUATOR_PARAMS, declare_checked

try:
    from vision_msgs.msg import Detection3DArray
except ImportError:  # pragma: no cover - depends on the installation; the node says how to fix it at start
    Detection3DArray = None

NODE_NAME = "vfm_pose_evaluator"

# Parameters: type, range, description and default (vfm_pose_ros.ros.params, checked at start); none is dynamic
DEFAULTS = {name: p.default for name, p in EVALUATOR_PARAMS.items()}


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


class EvaluatorNode(Node):
    """The evaluator node (rclpy must be initialised): scores detections against ground truth, writes the report."""

    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        if Detection3DArray is None:
            raise ValueError("vision_msgs is not importable: build the interface packages (`make interfaces`) "
                             "or source a ROS 2 install that has ros-<distro>-vision-msgs")
        self.p = declare_checked(self, EVALUATOR_PARAMS)  # ParameterError (a ValueError): one line, exit 1
        cat_dir = Path(self.p["catalogue_dir"]) if self.p["catalogue_dir"] else default_catalogue_dir()
        catalogue = load_catalogue(cat_dir)
        frame_ids = self._expected_frames()
        self._depth: OrderedDict[int, object] = OrderedDict()  # stamp -> depth (metres), the last few frames
        self._depth_lock = threading.Lock()
        self.scorer = Scorer(catalogue, max_points=int(self.p["max_points"]) or None,
                             timeout_s=float(self.p["match_timeout_s"]), frame_ids=frame_ids,
                             camera=lambda stamp: self._K.get(stamp, self._latest_K),
                             depth=self._take_depth if self.p["vsd"] else None,
                             vsd_delta=float(self.p["vsd_delta_mm"]) / 1000.0,
                             objects=parse_object_names(self.p["objects"]),
                             frames_in_bag=len(frame_ids) or None)
        self._obj_ids = {o.name: o.class_id for o in catalogue}
        self._K: OrderedDict[int, tuple] = OrderedDict()
        self._latest_K = None
        self._write_lock = threading.Lock()
        self._done_at: float | None = None  # when the player said it finished
        self._frames_sent: int | None = None
        self.finished = False
        self._connect()
        self.get_logger().info(f"scoring {self.p['detections_topic']} against {self.p['ground_truth_topic']} "
                               f"({len(catalogue)} objects from {cat_dir}); report -> {self.p['output_dir']}")

    def _expected_frames(self) -> dict:
        """Stamp -> (scene, image) of the bag's frames the player will send; empty without ``bag``."""
        if not self.p["bag"]:
            return {}
        from ..data.rosbag import bag_metadata

        frame_ids = {int(f[0]): (int(f[1]), int(f[2])) for f in bag_metadata(self.p["bag"]).get("frames", [])}
        if self.p["max_frames"]:  # the player sends the first N frames by stamp: only those are expected
            frame_ids = dict(sorted(frame_ids.items())[: int(self.p["max_frames"])])
        return frame_ids

    def _connect(self) -> None:
        """Subscriptions, the report service, the summary and diagnostics publishers and the summary timer."""
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
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(float(self.p["summary_period_s"]), self._tick)

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
            self.scorer.mark_received(stamp)
            self.get_logger().error(f"ground truth at {stamp} ns has malformed poses {invalid[:3]}; check the "
                                    "bag (frame skipped)", throttle_duration_sec=5.0)
            return
        unknown = sorted({g.name for g in gts if g.name not in self._obj_ids})
        if unknown:
            self.scorer.count_problem("ground_truth_unknown_object")
            self.scorer.mark_received(stamp)
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
        unknown = sorted({p.name for p in poses if p.name not in self._obj_ids})
        if unknown:  # counted by the scorer (ros.detections_unknown_class); a catalogue mismatch, most likely
            self.get_logger().warning(f"detections of classes outside the catalogue {unknown} are not scored; "
                                      "set catalogue_dir to the pose node's catalogue", throttle_duration_sec=5.0)
        self.scorer.add_detections(stamp, poses)

    def _on_done(self, msg):
        try:
            self._frames_sent = int(json.loads(msg.data).get("frames_sent"))
        except (ValueError, TypeError, AttributeError):
            self._frames_sent = None
        self._done_at = time.monotonic()
        self.get_logger().info(f"the bag player finished ({self._frames_sent} frames sent); the report follows "
                               "once they are scored")

    def _score_unplayed(self) -> None:
        """The bag's frames that never arrived (the graph stopped early) count as failures in a final report."""
        in_bag = self.scorer.frames_in_bag
        if not self.p["bag"] or in_bag is None or len(self.scorer.received) >= in_bag:
            return
        from ..data.rosbag import ground_truth_by_stamp

        try:
            frames = ground_truth_by_stamp(self.p["bag"], self.p["ground_truth_topic"])
        except (OSError, ValueError) as exc:  # the report still says incomplete; it just cannot score them
            self.scorer.count_problem("bag_unreadable_for_unplayed_frames")
            print(f"[{NODE_NAME}] cannot read the ground truth of the unplayed frames from {self.p['bag']}: "
                  f"{exc}", file=sys.stderr, flush=True)
            return
        expected = self.scorer.frame_ids  # the bag's frames, or its first max_frames
        self.scorer.score_unplayed({s: [g for g in gts if g.name in self._obj_ids] for s, gts in frames.items()
                                    if not expected or s in expected})

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
        summary = _json_safe(self.scorer.summary())
        self.pub_summary.publish(String(data=json.dumps(summary)))
        self.pub_diag.publish(DiagnosticArray(header=self._header(), status=[self.diagnostics(summary)]))

    def _header(self):
        return Header(stamp=self.get_clock().now().to_msg())

    def diagnostics(self, summary: dict):
        """The running totals as a DiagnosticStatus (WARN while detections name unknown classes)."""
        keys = ("n_frames", "frames_played", "frames_in_bag", "frames_matched", "n_gaps", "unplayed_frames",
                "detections_without_ground_truth", "detections_unknown_class", "duplicate_messages")
        values = [KeyValue(key=k, value=str(summary.get(k))) for k in keys]
        values += [KeyValue(key=f"problem_{k}", value=str(n)) for k, n in summary["input_problems"].items()]
        level, message = DiagnosticStatus.OK, f"{summary['n_frames']} frames scored"
        if summary["detections_unknown_class"]:
            level = DiagnosticStatus.WARN
            message += (f"; {summary['detections_unknown_class']} detections of classes outside the catalogue "
                        f"({', '.join(summary['unknown_classes'])})")
        return DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: evaluation",
                                message=message, values=values)

    def write_report(self, why: str, final: bool = False) -> Path:
        """Write the report files; ``final`` first scores every pending ground truth as a gap."""
        with self._write_lock:
            if final:
                self.scorer.expire(everything=True)
                self._score_unplayed()
            out = Path(self.p["output_dir"])
            rep = self.scorer.write(out, markdown=markdown_report)
            o, ros = rep["overall"], rep["ros"]
            acc = "-" if o["add_s_01d_acc"] is None else f"{o['add_s_01d_acc']:.3f}"
            msg = (f"report ({why}) -> {out}/report.json: {rep['n_frames']} frames, {o['n_gt']} instances, "
                   f"ADD(-S)-0.1d {acc}, {ros['n_gaps']} frames without detections")
            if rep["status"] == "incomplete":
                msg += (f"; INCOMPLETE: {ros['frames_played']} of {ros['frames_in_bag']} frames played, the "
                        f"{ros['unplayed_frames']} never played scored as failures")
            if self.context.ok():
                self.get_logger().info(msg)
            else:  # after Ctrl-C the context is gone, and with it /rosout
                print(f"[{NODE_NAME}] {msg}", file=sys.stderr, flush=True)
            return out


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
