"""The bag player in lockstep, across processes: every frame arrives once, in order; a missing answer times out."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (see `vfm-pose doctor`)")

from vfm_pose_ros.core.catalogue import Catalogue, ObjectModel  # noqa: E402
from vfm_pose_ros.core.types import GroundTruthPose  # noqa: E402
from vfm_pose_ros.data import rosbag as rb  # noqa: E402
from vfm_pose_ros.ros import player as player_module  # noqa: E402

pytestmark = pytest.mark.ros
N_FRAMES = 6

# A consumer in its own process: records every image, camera_info and ground-truth stamp it gets and
# answers each image on the lockstep topic with a Detection3DArray carrying the image header (as the
# pose node does), except for the image indices in argv[2]. Exits when the player says it is done.
ANSWERER = r"""
import json, sys
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from rclpy.qos import QoSProfile, DurabilityPolicy
from vision_msgs.msg import Detection3DArray

answer_topic, skip = sys.argv[1], {int(x) for x in sys.argv[2].split(",") if x}
rclpy.init()
node = Node("test_answerer")
pub = node.create_publisher(Detection3DArray, answer_topic, 10)
seen = {"image": [], "info": [], "gt": [], "gt_ids": []}
ns = lambda h: h.stamp.sec * 1_000_000_000 + h.stamp.nanosec

def on_image(msg):
    seen["image"].append(ns(msg.header))
    if len(seen["image"]) - 1 not in skip:
        pub.publish(Detection3DArray(header=msg.header))

def on_gt(msg):
    seen["gt"].append(ns(msg.header))
    seen["gt_ids"].append([d.id for d in msg.detections])

done = []
node.create_subscription(Image, "/camera/color/image_raw", on_image, 10)
node.create_subscription(CameraInfo, "/camera/color/camera_info", lambda m: seen["info"].append(ns(m.header)), 10)
node.create_subscription(Detection3DArray, "/ground_truth/detections", on_gt, 10)
latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
node.create_subscription(String, "/bag_player/done", lambda m: done.append(json.loads(m.data)), latched)
while rclpy.ok() and not done:
    rclpy.spin_once(node, timeout_sec=0.1)
print(json.dumps({"seen": seen, "done": done[0]}), flush=True)
"""


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    rng = np.random.default_rng(3)
    cat = Catalogue([ObjectModel("a", 1, rng.normal(size=(40, 3)) * 0.05),
                     ObjectModel("b", 2, rng.normal(size=(40, 3)) * 0.03)])
    K = np.array([[50.0, 0, 16], [0, 50.0, 12], [0, 0, 1]])
    frames = [SimpleNamespace(scene_id=0, im_id=i, K=K,
                              rgb=rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
                              depth=rng.uniform(0.3, 2.0, (24, 32)).astype(np.float32),
                              gts=[GroundTruthPose(1, "a", np.eye(3), np.array([0, 0, 1.0])),
                                   GroundTruthPose(2, "b", np.eye(3), np.array([0.1, 0, 1.0]))])
              for i in range(N_FRAMES)]
    path = tmp_path_factory.mktemp("bags") / "small"
    rb.write_frames(frames, path, cat, progress=False)
    return path


def _run(spawn_python, bag, tmp_path, answer_topic, skip="", timeout_s="10", status=0):
    answerer = spawn_python("-c", ANSWERER, answer_topic, skip)
    summary = tmp_path / "summary.json"
    player = spawn_python("-m", "vfm_pose_ros.ros.player", str(bag), "--lockstep", answer_topic,
                          "--lockstep-timeout", timeout_s, "--wait-timeout", "30", "--summary", str(summary),
                          "--wait-topics", rb.TOPIC_GT, rb.TOPIC_CAMERA_INFO, "--quiet")
    out, err = player.communicate(timeout=90)
    assert player.returncode == status, f"player exit status {player.returncode}, not {status}:\n{out}\n{err}"
    a_out, a_err = answerer.communicate(timeout=30)
    assert answerer.returncode == 0, f"answerer failed:\n{a_out}\n{a_err}"
    report = json.loads(a_out.strip().splitlines()[-1])
    return json.loads(summary.read_text()), report, out


def test_lockstep_delivers_every_frame_once_in_order(spawn_python, bag, tmp_path):
    stamps = [rb.frame_stamp(i, 30) for i in range(N_FRAMES)]
    summary, report, out = _run(spawn_python, bag, tmp_path, "/test_player/answers")
    seen = report["seen"]
    assert seen["image"] == stamps  # once each, in order
    assert seen["info"] == stamps and seen["gt"] == stamps
    assert seen["gt_ids"] == [["a_0", "b_0"]] * N_FRAMES
    assert summary["frames_sent"] == summary["frames_answered"] == N_FRAMES
    assert summary["timeouts"] == 0 and summary["timed_out_stamps"] == [] and summary["late_answers"] == 0
    assert summary["messages_sent"] == 1 + 4 * N_FRAMES
    assert report["done"]["frames_sent"] == N_FRAMES  # ~/done carries the summary
    assert "answered 6, timeouts 0" in out


def test_lockstep_counts_and_reports_a_missing_answer(spawn_python, bag, tmp_path):
    stamps = [rb.frame_stamp(i, 30) for i in range(N_FRAMES)]
    summary, report, out = _run(spawn_python, bag, tmp_path, "/test_player/answers2", skip="2", timeout_s="0.5",
                                status=player_module.LOCKSTEP_TIMEOUT_STATUS)  # the exit status says so
    assert report["seen"]["image"] == stamps  # the unanswered frame did not stop the replay
    assert summary["frames_sent"] == N_FRAMES and summary["frames_answered"] == N_FRAMES - 1
    assert summary["timeouts"] == 1 and summary["timed_out_stamps"] == [stamps[2]]
    assert "timeouts 1" in out and str(stamps[2]) in out


def test_player_fails_clearly_without_a_consumer(spawn_python, bag, tmp_path):
    player = spawn_python("-m", "vfm_pose_ros.ros.player", str(bag), "--lockstep", "/test_player/nobody",
                          "--lockstep-type", "vision_msgs/msg/Detection3DArray", "--wait-timeout", "1")
    out, err = player.communicate(timeout=60)
    assert player.returncode == 1
    assert "subscriber(s) on /camera/color/image_raw" in err


# A consumer that never answers and says when the first image came (the player then waits in lockstep).
SILENT = r"""
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection3DArray
rclpy.init()
node = Node("test_silent")
node.create_publisher(Detection3DArray, "/test_player/silent", 10)
node.create_subscription(Image, "/camera/color/image_raw", lambda m: print("image", flush=True), 10)
while rclpy.ok():
    rclpy.spin_once(node, timeout_sec=0.1)
"""


def test_sigint_stops_the_replay_cleanly(spawn_python, bag, tmp_path):
    """What the launcher sends when it stops the graph: the player stops mid-replay, says so, exits 130, and
    prints no traceback (rclpy's signal handler used to shut its context down under the spinning thread)."""
    import select
    import signal

    summary = tmp_path / "interrupted.json"
    consumer = spawn_python("-c", SILENT)
    player = spawn_python("-m", "vfm_pose_ros.ros.player", str(bag), "--lockstep", "/test_player/silent",
                          "--lockstep-timeout", "30", "--wait-timeout", "30", "--summary", str(summary), "--quiet")
    ready, _, _ = select.select([consumer.stdout], [], [], 60)
    assert ready and consumer.stdout.readline().strip() == "image", "the player sent no frame"
    player.send_signal(signal.SIGINT)  # the player now waits up to 30 s for an answer
    out, err = player.communicate(timeout=20)
    consumer.kill()
    assert player.returncode == 130, f"{out}\n{err}"
    assert "interrupted" in out, out
    assert "Traceback" not in err and "Exception" not in err, err
    s = json.loads(summary.read_text())
    # the signal can land a moment before the player counts the frame it has just published: 0 or 1 sent
    assert s["interrupted"] and s["frames_sent"] <= 1 and s["timeouts"] == 0, s


def test_timed_replay_keeps_the_recorded_rate(spawn_python, bag, tmp_path):
    summary = tmp_path / "timed.json"
    # rate 0.5 on 30 fps stamps: 5 frame gaps of 1/15 s, so at least ~0.33 s of wall time. Nobody listens:
    # a timed replay waits --wait-timeout for a subscriber, warns, and plays anyway.
    player = spawn_python("-m", "vfm_pose_ros.ros.player", str(bag), "--rate", "0.5", "--summary", str(summary),
                          "--wait-timeout", "0.5", "--quiet")
    out, err = player.communicate(timeout=60)
    assert player.returncode == 0, err
    assert "replaying anyway" in err
    s = json.loads(summary.read_text())
    assert s["mode"] == "timed" and s["frames_sent"] == N_FRAMES and s["subscriber_wait_timed_out"]
    assert s["wall_s"] >= (N_FRAMES - 1) / 15 - 0.01


def test_sigint_while_starting_exits_130_without_a_traceback(monkeypatch, capsys, tmp_path):
    """The launcher may stop the graph while the player is still importing (a node died at once, a loaded
    machine): one line and status 130, as for a SIGINT while playing, never a KeyboardInterrupt traceback."""
    def interrupted(args, rclpy_args=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(player_module, "run", interrupted)
    assert player_module.main(["bag_player", str(tmp_path / "bag")]) == 130
    err = capsys.readouterr().err
    assert "interrupted while starting" in err and "Traceback" not in err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

