"""The pose node in its own process over DDS, with a small randomly initialised CLIP checkpoint.

A random network still returns poses (or nothing), so these tests check structure and
behaviour, not accuracy: one answer per processed frame with the image's header, every
encoding accepted, frames before camera_info answered empty and counted, the prompt changed
at run time (and bad prompts refused), TF parents, stale frames dropped and counted, and a
missing checkpoint failing fast with a clear message.
"""
from __future__ import annotations

import re
import signal
import time

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (interfaces/)")
pytest.importorskip("torch", reason="torch is not installed (requirements/ml.txt)")

from vfm_pose_ros.core.transforms import is_rotation  # noqa: E402
from vfm_pose_ros.ros import convert  # noqa: E402

from .private_ros import close_private_node, private_node, stop_process  # noqa: E402

pytestmark = pytest.mark.ros
K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
W, H = 320, 240
FRAME_ID = "camera_color_optical_frame"


class Feeder:
    """The test's own ROS node: publishes camera frames, collects what the pose node publishes."""

    def __init__(self, proc):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage
        from vision_msgs.msg import Detection3DArray

        self.proc = proc
        self.ctx, self.node, self.executor = private_node("pose_node_test_feeder")
        reliable = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = self.node.create_publisher(Image, "/camera/color/image_raw", reliable)
        self.pub_depth = self.node.create_publisher(Image, "/camera/aligned_depth_to_color/image_raw", reliable)
        self.pub_info = self.node.create_publisher(CameraInfo, "/camera/color/camera_info", reliable)
        self.detections, self.tf, self.diagnostics, self.debug = [], [], [], []
        n = self.node
        n.create_subscription(Detection3DArray, "/vfm_pose/detections", self.detections.append, 100)
        n.create_subscription(TFMessage, "/tf", self.tf.append, QoSProfile(depth=100))
        n.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        n.create_subscription(Image, "/vfm_pose/debug_image", self.debug.append, 10)

    def spin_until(self, cond, timeout=60.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond():
            self.executor.spin_once(timeout_sec=0.05)
            if self.proc.poll() is not None:
                raise AssertionError(f"pose node exited ({self.proc.returncode}): {self.proc.stderr.read()}")
        return cond()

    def wait_connected(self):
        assert self.spin_until(lambda: all(p.get_subscription_count() for p in (self.pub_image, self.pub_info))
                               and self.node.count_publishers("/vfm_pose/detections"), 90), "pose node not up"

    def send(self, stamp_ns, encoding="rgb8", depth_encoding="16UC1", info=True, wait=True):
        rng = np.random.default_rng(stamp_ns % 1000)
        header = convert.make_header(stamp_ns, FRAME_ID)
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        if info:
            self.pub_info.publish(convert.K_to_camera_info(K, W, H, header))
        self.pub_depth.publish(convert.depth_to_image(np.full((H, W), 0.8, np.float32), header, depth_encoding))
        if encoding in convert.COLOR_ENCODINGS:
            image = convert.rgb_to_image(rgb, header, encoding)
        else:  # an encoding the node must refuse
            image = convert.rgb_to_image(rgb, header)
            image.encoding = encoding
        self.pub_image.publish(image)
        if wait:
            assert self.spin_until(lambda: self.answer(stamp_ns) is not None), f"no answer for {stamp_ns}"
            return self.answer(stamp_ns)
        return None

    def answer(self, stamp_ns):
        for d in self.detections:
            if convert.stamp_to_ns(d.header.stamp) == stamp_ns:
                return d
        return None

    def counters(self, until=lambda c: True, timeout=10.0) -> dict:
        """The pose node's diagnostics values from the next /diagnostics message for which ``until`` holds.

        The node counts a frame as processed just after publishing its answer, so a message taken
        between the two lags by one frame: tests that compare counts wait for them to settle.
        """
        def latest():
            status = [s for m in self.diagnostics for s in m.status if s.name.startswith("/vfm_pose:")][-1]
            return {kv.key: kv.value for kv in status.values} | {"_message": status.message}

        n0 = len(self.diagnostics)
        self.spin_until(lambda: len(self.diagnostics) > n0 and until(latest()), timeout)
        return latest()

    def set_prompt(self, prompt: str):
        from rclpy.parameter import Parameter
        from rclpy.parameter_client import AsyncParameterClient

        client = AsyncParameterClient(self.node, "/vfm_pose")
        assert client.wait_for_services(timeout_sec=10.0)
        future = client.set_parameters([Parameter("prompt", Parameter.Type.STRING, prompt)])
        assert self.spin_until(future.done, 10)
        return future.result().results[0]

    def close(self):
        close_private_node(self.ctx, self.node, self.executor)


@pytest.fixture
def pose_node(spawn_python, clip_checkpoint):
    proc = spawn_python("-m", "vfm_pose_ros.ros.pose_node", "--ros-args",
                        "-p", f"checkpoint:={clip_checkpoint}", "-p", "backend:=clip", "-p", "device:=cpu",
                        "-p", "input_qos:=reliable", "-p", "score_threshold:=0.0",
                        "-p", "plausibility_gates:=false", "-p", "camera_info_wait_ms:=200.0",
                        "-p", "publish_debug_image:=true", "-p", "diagnostics_period_s:=0.3", "-p", "warn_every_n:=1",
                        "-p", "grasp_frames:=all")
    feeder = None
    try:  # the node process is stopped whatever fails, the feeder's own start included
        feeder = Feeder(proc)
        feeder.wait_connected()
        yield proc, feeder
    finally:
        if feeder is not None:
            feeder.close()
        stop_process(proc)


def _check_detections(msg, stamp_ns):
    assert convert.stamp_to_ns(msg.header.stamp) == stamp_ns and msg.header.frame_id == FRAME_ID
    for det in msg.detections:
        assert det.header == msg.header
        assert re.fullmatch(r"(driller_like|can_like)_\d+", det.id)
        assert det.results[0].hypothesis.class_id == det.id.rsplit("_", 1)[0]
        R, t = convert.msg_to_pose(det.results[0].pose.pose)
        assert is_rotation(R) and np.all(np.isfinite(t)) and t[2] > 0
        assert min(det.bbox.size.x, det.bbox.size.y, det.bbox.size.z) > 0


def test_pose_node_end_to_end(pose_node):
    proc, f = pose_node
    stamp = 1_000_000_000
    # a frame before any camera_info: answered empty, counted, warned about; the node stays up
    ans = f.send(stamp, info=False)
    _check_detections(ans, stamp)
    assert ans.detections == []

    # every supported colour encoding, with 16UC1 and 32FC1 depth
    for i, enc in enumerate(convert.COLOR_ENCODINGS):
        stamp += 100_000_000
        ans = f.send(stamp, encoding=enc, depth_encoding="16UC1" if i % 2 else "32FC1")
        _check_detections(ans, stamp)
    assert any(d.detections for d in f.detections), "the random net published nothing (threshold 0)"

    # an encoding the node cannot read: answered empty and counted by reason
    stamp += 100_000_000
    assert f.send(stamp, encoding="yuv422").detections == []

    c = f.counters(until=lambda c: c["frames_processed"] == c["frames_in"])
    assert c["no_camera_info"] == "1" and c["rejected_bad_encoding"] == "1"
    assert c["frames_processed"] == c["frames_in"] == str(2 + len(convert.COLOR_ENCODINGS))
    assert float(c["latency_p50_ms"]) > 0 and c["backend"] == "clip"
    assert 0 < float(c["stage_backbone_median_ms"]) <= float(c["stage_total_median_ms"]) \
        <= float(c["inference_median_ms"])

    # TF: camera optical frame -> <name>_<k> -> <name>_<k>_grasp_<grasp>
    f.spin_until(lambda: len(f.tf) > 0, 5)
    pairs = {(t.header.frame_id, t.child_frame_id) for m in f.tf for t in m.transforms}
    objects = {c for p, c in pairs if p == FRAME_ID}
    assert objects and all(re.fullmatch(r"(driller_like|can_like)_\d+", c) for c in objects)
    grasps = pairs - {(FRAME_ID, c) for c in objects}
    assert grasps, "grasp_frames:=all publishes every catalogue grasp frame"
    for parent, child in grasps:
        assert parent in objects and child.startswith(parent + "_grasp_")

    # debug image: same header as the image, rgb8
    assert f.debug and f.debug[-1].encoding == "rgb8" and (f.debug[-1].width, f.debug[-1].height) == (W, H)

    # the prompt is a dynamic parameter: accepted when it names an object (by meaning), refused otherwise
    assert f.set_prompt("hold the battery drill by its grip").successful
    assert f.set_prompt("grasp the driller by the handle").successful
    bad = f.set_prompt("the banana")
    assert not bad.successful and "names nothing in the catalogue" in bad.reason and "driller_like" in bad.reason
    assert not f.set_prompt("").successful
    stamp += 100_000_000
    _check_detections(f.send(stamp), stamp)
    assert f.counters()["prompt"] == "grasp the driller by the handle"

    # frames arriving faster than inference: only the newest waits, older ones are dropped and counted
    for _ in range(6):
        stamp += 10_000_000
        f.send(stamp, wait=False)
    assert f.spin_until(lambda: f.answer(stamp) is not None, 60)
    c = f.counters(until=lambda c: int(c["frames_processed"]) + int(c["dropped_stale"]) == int(c["frames_in"]))
    assert int(c["dropped_stale"]) >= 1
    assert int(c["frames_processed"]) + int(c["dropped_stale"]) == int(c["frames_in"])

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "no camera_info received on /camera/color/camera_info" in err
    assert "colour image has encoding 'yuv422'" in err


def test_missing_checkpoint_exits_with_a_clear_message(spawn_python, tmp_path):
    proc = spawn_python("-m", "vfm_pose_ros.ros.pose_node", "--ros-args", "-p",
                        f"checkpoint:={tmp_path / 'nope.pt'}")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "checkpoint not found" in err and "vfm-pose train" in err


def test_select_poses_never_passes_invalid_poses_and_withholds_low_scores():
    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.core.types import ObjectPose
    from vfm_pose_ros.paths import default_catalogue_dir
    from vfm_pose_ros.pipeline import select_poses

    cat = Catalogue.from_dir(default_catalogue_dir())
    t = np.array([0.0, 0.0, 0.8])
    raw = [ObjectPose("driller_like", np.eye(3), t, score=0.6),
           ObjectPose("driller_like", np.eye(3), t + 0.1, score=0.9),
           ObjectPose("can_like", np.eye(3), t, score=0.1),  # low score
           ObjectPose("can_like", np.full((3, 3), np.nan), t, score=0.9),  # non-finite
           ObjectPose("can_like", np.eye(3) * 1.5, t, score=0.9),  # not orthonormal
           ObjectPose("can_like", np.eye(3), -t, score=0.9),  # behind the camera
           ObjectPose("banana", np.eye(3), t, score=0.9)]  # not in the catalogue
    sel = select_poses(raw, cat, threshold=0.3)
    assert [(p.name, p.instance, p.score) for p in sel.poses] == [("driller_like", 0, 0.9), ("driller_like", 1, 0.6)]
    assert sel.withheld == 1 and len(sel.rejected) == 3 and sel.unknown == ["banana"] and sel.reason == ""
    assert all(is_rotation(p.R) and np.all(np.isfinite(p.t)) for p in sel.poses)
    only_low = select_poses(raw[2:3], cat, threshold=0.3)
    assert only_low.poses == [] and "below score_threshold 0.30 (best can_like 0.10)" in only_low.reason
    assert select_poses([], cat, 0.3, prompt="the can").reason == "no object found for prompt 'the can'"
    assert "invalid pose" in select_poses(raw[3:4], cat, 0.3).reason


def test_stage_medians_count_a_stage_that_did_not_run_as_zero():
    """A tracked frame that skips the network adds 0 ms backbone, so latency / backbone stays per frame."""
    from vfm_pose_ros.ros.pose_node import Stats

    stats = Stats(window=10)
    stats.latency_ms.extend([10.0, 10.0, 10.0])
    stats.add_stages({"backbone": 8.0, "head": 1.0})
    stats.add_stages({"head": 1.0})  # the tracker warm-started from depth: no backbone call
    stats.add_stages({"backbone": 6.0, "head": 1.0, "icp": 3.0})
    _, _, _, stages = stats.percentiles()
    assert stages == {"backbone": 6.0, "head": 1.0, "icp": 3.0}
    assert list(stats.stage_ms["backbone"]) == [8.0, 0.0, 6.0]
