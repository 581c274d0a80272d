"""Faults in the running graph: the pose node killed and restarted mid-bag, the evaluator stopped with SIGINT
mid-stream, a bag cut in the middle, and a pose node that cannot start.

Every process runs on its own (player, pose node, evaluator), as `vfm-pose launch benchmark` starts them.
A bag cut in the middle *read* up to the cut with a warning is test/data/test_rosbag.py's
test_truncated_bag_is_read_up_to_the_cut; here the player replays such a bag through DDS.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (interfaces/)")
pytest.importorskip("torch", reason="torch is not installed (requirements/ml.txt)")

from vfm_pose_ros.ros import convert  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
N_FRAMES = 16
DETECTIONS = "/vfm_pose/detections"


# --------------------------------------------------------------------------- helpers


class Procs:
    """Processes with their output in log files (a long run must not fill a pipe and block); killed at the end."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs = tmp, []

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "a")
        proc = subprocess.Popen([sys.executable, *argv], env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
        proc.log_path, proc.log_file = self.tmp / f"{name}.log", log
        self.procs.append(proc)
        return proc

    @staticmethod
    def log(proc) -> str:
        proc.log_file.flush()
        return proc.log_path.read_text(errors="replace")

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            p.log_file.close()


@pytest.fixture
def procs(tmp_path):
    p = Procs(tmp_path)
    yield p
    p.close()


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_clip_checkpoint):
    return tiny_clip_checkpoint


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """A synthetic bag of N_FRAMES small frames (colour, depth, camera info, ground truth)."""
    from vfm_pose_ros.cli import main

    tmp = tmp_path_factory.mktemp("bag")
    assert main(["synth", "--split", "test", "--test-frames", str(N_FRAMES), "--width", "160", "--height", "120",
                 "--fx", "143", "--fy", "143", "--cx", "80", "--cy", "60", "--distractors", "0", "--seed", "5",
                 "--out", str(tmp / "ds"), "--no-progress"]) == 0
    assert main(["make-bag", "--dataset", str(tmp / "ds"), "--out", str(tmp / "bag"), "--quiet"]) == 0
    return tmp / "bag"


def pose_node_argv(checkpoint, prompt: str = "the driller") -> list[str]:
    return ["-m", "vfm_pose_ros.ros.pose_node", "--ros-args", "-p", f"checkpoint:={checkpoint}", "-p", "backend:=clip",
            "-p", "device:=cpu", "-p", "use_depth:=false", "-p", "input_qos:=reliable", "-p", "score_threshold:=0.0",
            "-p", "plausibility_gates:=false",
            "-p", f"prompt:={prompt}", "-p", "publish_tf:=false", "-p", "publish_markers:=false"]


class Listener:
    """The test's own node: counts the pose node's answers."""

    def __init__(self):
        import rclpy
        import rclpy.executors
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from vision_msgs.msg import Detection3DArray

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("fault_test_listener", context=self.ctx)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.answers = []
        self.node.create_subscription(Detection3DArray, DETECTIONS, self.answers.append,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def spin_until(self, cond, timeout, alive=()):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond():
            self.executor.spin_once(timeout_sec=0.05)
            for p in alive:
                assert p.poll() is None, f"{p.args} exited ({p.returncode}):\n{Procs.log(p)[-3000:]}"
        return cond()

    def close(self):
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def report_keys(catalogue) -> set[str]:
    """The top-level keys of a complete evaluator report: `vfm-pose eval`'s, plus dataset and ros."""
    from vfm_pose_ros.core.metrics import PoseEvaluator

    return set(PoseEvaluator(catalogue).report()) | {"dataset", "ros"}


def check_complete_report(out: Path, catalogue) -> dict:
    """report.json valid with every key, frames.csv one row per ground-truth instance, report.md the table."""
    rep = json.loads((out / "report.json").read_text())
    assert set(rep) >= report_keys(catalogue), report_keys(catalogue) - set(rep)
    ros = rep["ros"]
    assert rep["n_frames"] == ros["frames_matched"] + ros["n_gaps"] and ros["n_gaps"] == len(ros["gaps"])
    assert ros["pending_ground_truth"] == 0 and ros["waiting_for_camera_info"] == 0  # nothing left unscored
    rows = list(csv.DictReader(open(out / "frames.csv")))
    assert len(rows) == rep["overall"]["n_gt"]
    gaps = {str(s) for s in ros["gaps"]}
    for r in rows:
        assert (r["detections_received"] == "False") == (r["stamp_ns"] in gaps)
    md = (out / "report.md").read_text()
    assert "| **overall** |" in md and f"{rep['n_frames']} frames scored" in md
    assert not list(out.glob(".*.tmp")), "a temporary report file was left behind"
    return rep


# --------------------------------------------------------------------------- the tests


def test_pose_node_restarted_mid_bag(procs, tiny_checkpoint, bag, tmp_path):
    """Kill -9 the pose node during a lockstep replay, start it again: the player counts the timeouts, the
    evaluator lists those frames as gaps (failures), and the frames after the restart are answered and scored."""
    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.paths import default_catalogue_dir

    out, summary = tmp_path / "eval", tmp_path / "player.json"
    evaluator = procs.start("evaluator", "-m", "vfm_pose_ros.ros.evaluator_node", "--ros-args",
                            "-p", f"output_dir:={out}", "-p", f"bag:={bag}", "-p", "match_timeout_s:=4.0",
                            "-p", "exit_after_report:=true", "-p", "max_points:=300", "-p", "summary_period_s:=0.2")
    pose = procs.start("pose_node", *pose_node_argv(tiny_checkpoint))
    listener = Listener()
    try:
        assert listener.spin_until(lambda: listener.node.count_publishers(DETECTIONS) >= 1, 120, [pose, evaluator]), \
            Procs.log(pose)
        player = procs.start("player", "-m", "vfm_pose_ros.ros.player", str(bag), "--lockstep", DETECTIONS,
                             "--lockstep-type", "vision_msgs/msg/Detection3DArray", "--lockstep-timeout", "2",
                             "--wait-topics", "/ground_truth/detections", "--summary", str(summary), "--quiet")
        assert listener.spin_until(lambda: len(listener.answers) >= 4, 120, [pose, evaluator, player]), \
            Procs.log(player)
        pose.kill()  # a crash: no shutdown, nothing flushed
        pose.wait(timeout=10)
        n_before = len(listener.answers)
        pose2 = procs.start("pose_node_restarted", *pose_node_argv(tiny_checkpoint))
        # (the evaluator exits by itself once its end-of-bag report is written)
        assert listener.spin_until(lambda: player.poll() is not None, 240, [pose2]), Procs.log(player)
    finally:
        listener.close()
    from vfm_pose_ros.ros.player import LOCKSTEP_TIMEOUT_STATUS

    assert player.returncode == LOCKSTEP_TIMEOUT_STATUS, Procs.log(player)  # the frames lost to the crash
    assert evaluator.wait(timeout=60) == 0, Procs.log(evaluator)

    s = json.loads(summary.read_text())
    assert s["frames_sent"] == N_FRAMES and s["frames_answered"] + s["timeouts"] == N_FRAMES
    assert s["timeouts"] >= 1, "the restart must have cost frames"
    assert len(listener.answers) > n_before, "the restarted node answered nothing"

    rep = check_complete_report(out, Catalogue.from_dir(default_catalogue_dir()))
    ros = rep["ros"]
    assert rep["n_frames"] == N_FRAMES
    # every frame without an answer is a gap, and a gap is only ever a frame the player saw time out
    assert set(ros["gaps"]) <= set(s["timed_out_stamps"]) and ros["n_gaps"] >= 1
    assert ros["frames_matched"] == N_FRAMES - ros["n_gaps"]
    # the graph recovered: the last frames were answered and scored
    answered_stamps = {convert.stamp_to_ns(a.header.stamp) for a in listener.answers}
    last = max(int(r["stamp_ns"]) for r in csv.DictReader(open(out / "frames.csv")))
    assert last in answered_stamps and last not in ros["gaps"]
    log = Procs.log(player)
    assert "no answer on /vfm_pose/detections" in log and f"timeouts {s['timeouts']}" in log
    print(f"\nrestart: {N_FRAMES} frames, answered {s['frames_answered']}, timeouts {s['timeouts']}, late answers "
          f"{s['late_answers']}; evaluator: matched {ros['frames_matched']}, gaps {ros['n_gaps']}")


def test_evaluator_sigint_mid_stream_writes_a_complete_report(procs, tmp_path):
    """SIGINT while ground truth and detections are still arriving: a complete report, pending frames as gaps."""
    import threading

    import rclpy
    import rclpy.executors
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo
    from vision_msgs.msg import Detection3DArray

    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.core.transforms import axis_angle_to_matrix
    from vfm_pose_ros.core.types import ObjectPose
    from vfm_pose_ros.paths import default_catalogue_dir

    catalogue = Catalogue.from_dir(default_catalogue_dir())
    out = tmp_path / "eval"
    evaluator = procs.start("evaluator", "-m", "vfm_pose_ros.ros.evaluator_node", "--ros-args",
                            "-p", f"output_dir:={out}", "-p", "match_timeout_s:=30.0", "-p", "max_points:=300")
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("sigint_feeder", context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    pub_gt = node.create_publisher(Detection3DArray, "/ground_truth/detections", reliable)
    pub_det = node.create_publisher(Detection3DArray, DETECTIONS, reliable)
    pub_info = node.create_publisher(CameraInfo, "/camera/color/camera_info", reliable)
    K = np.array([[300.0, 0, 160], [0, 300, 120], [0, 0, 1]])
    rng = np.random.default_rng(0)
    sent, stop = [], threading.Event()
    feeder = None

    def stream():
        stamp = 1_000_000_000
        while not stop.is_set():
            header = convert.make_header(stamp, "cam")
            gts = [ObjectPose(o.name, axis_angle_to_matrix(rng.normal(size=3)), np.array([0.0, 0.0, 0.8]), 1.0)
                   for o in catalogue]
            pub_info.publish(convert.K_to_camera_info(K, 320, 240, header))
            pub_gt.publish(convert.poses_to_detection_array(gts, catalogue, header))
            if len(sent) % 5 != 4:  # every fifth frame gets no detections: a gap
                preds = [ObjectPose(g.name, g.R, g.t + rng.normal(scale=0.01, size=3), 0.9) for g in gts]
                pub_det.publish(convert.poses_to_detection_array(preds, catalogue, header))
            sent.append(stamp)
            stamp += 33_000_000
            time.sleep(0.02)

    try:
        end = time.monotonic() + 60
        while not (pub_gt.get_subscription_count() and pub_det.get_subscription_count()) and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        assert pub_gt.get_subscription_count(), Procs.log(evaluator)
        time.sleep(0.5)  # both sides matched
        feeder = threading.Thread(target=stream, daemon=True)
        feeder.start()
        while len(sent) < 60:
            time.sleep(0.05)
        evaluator.send_signal(signal.SIGINT)  # while the stream goes on
        assert evaluator.wait(timeout=60) == 0, Procs.log(evaluator)
    finally:
        stop.set()
        if feeder is not None:
            feeder.join(timeout=5)  # before its publishers are destroyed
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)

    rep = check_complete_report(out, catalogue)
    # scoring takes tens of ms a frame here, so the evaluator is behind the stream when the signal comes: what it
    # took is in the report, in order (reliable, one writer), so the fifth frame (no detections) is a gap
    assert rep["n_frames"] >= 5 and set(rep["ros"]["gaps"]) <= set(sent)
    assert sent[4] in rep["ros"]["gaps"]
    assert rep["overall"]["n_gt"] == 2 * rep["n_frames"]
    assert "frames without detections" in Procs.log(evaluator)


def test_player_replays_a_bag_cut_in_the_middle_up_to_the_cut(procs, bag, tmp_path):
    """The bag's storage file cut at 60 %: the player sends the frames before the cut, says what happened, exits 0."""
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(bag, cut)
    storage = next(p for p in cut.iterdir() if p.suffix in (".mcap", ".db3"))
    os.truncate(storage, int(storage.stat().st_size * 0.6))
    summary = tmp_path / "summary.json"
    player = procs.start("player", "-m", "vfm_pose_ros.ros.player", str(cut), "--rate", "0",
                         "--wait-for-subscribers", "0", "--summary", str(summary), "--quiet")
    assert player.wait(timeout=120) == 0, Procs.log(player)
    s = json.loads(summary.read_text())
    assert 1 <= s["frames_sent"] < N_FRAMES
    assert s.get("bag_problems"), s
    assert "bag problem:" in Procs.log(player)


@pytest.mark.parametrize("case", ["wrong_backend", "bad_mesh", "missing_weights", "bad_choice"])
def test_pose_node_that_cannot_start_says_why_and_exits_1(procs, tiny_checkpoint, tmp_path, case):
    """Start-up faults are fatal and explained: a supervisor sees exit status 1 and the fix, not a silent node."""
    args = pose_node_argv(tiny_checkpoint)
    if case == "wrong_backend":
        args += ["-p", "backend:=dinov2"]
        expect = ["'clip' checkpoint", "dinov2"]
    elif case == "bad_mesh":
        (tmp_path / "objects").mkdir()
        (tmp_path / "objects" / "broken.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\n")
        (tmp_path / "objects" / "o.yaml").write_text("name: o\nclass_id: 1\nmesh: broken.ply\n")
        args += ["-p", f"catalogue_dir:={tmp_path / 'objects'}"]
        expect = ["cannot read the catalogue", "broken.ply", "re-export"]
    elif case == "missing_weights":
        args += ["-p", f"weights:={tmp_path / 'nope.safetensors'}"]
        expect = ["weights file not found", "nope.safetensors", "weights:=PATH"]
    else:
        args += ["-p", "grasp_frames:=some"]
        expect = ["grasp_frames='some'", "selected, all, none"]
    node = procs.start("pose_node", *args)
    assert node.wait(timeout=120) == 1, Procs.log(node)
    log = Procs.log(node)
    for words in expect:
        assert words in log, f"{words!r} not in:\n{log}"


def test_prompt_naming_no_object_at_start_refuses_frames_until_a_valid_one_is_set(procs, tiny_checkpoint):
    """A typo in the launch prompt must not let the node pose whatever the network guesses."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    pose = procs.start("pose_node", *pose_node_argv(tiny_checkpoint, "the banana"), "-p", "diagnostics_period_s:=0.2")
    listener = Listener()
    try:
        n = listener.node
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pub_image = n.create_publisher(Image, "/camera/color/image_raw", reliable)
        pub_info = n.create_publisher(CameraInfo, "/camera/color/camera_info", reliable)
        diags = []
        n.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
        assert listener.spin_until(lambda: pub_image.get_subscription_count() and n.count_publishers(DETECTIONS),
                                   120, [pose]), Procs.log(pose)
        listener.spin_until(lambda: False, 0.5)

        def send(stamp):
            header = convert.make_header(stamp, "cam")
            pub_info.publish(convert.K_to_camera_info(np.array([[100.0, 0, 32], [0, 100, 24], [0, 0, 1]]), 64, 48,
                                                      header))
            pub_image.publish(convert.rgb_to_image(np.full((48, 64, 3), 128, np.uint8), header))
            assert listener.spin_until(lambda: any(convert.stamp_to_ns(a.header.stamp) == stamp
                                                   for a in listener.answers), 30, [pose])
            return [a for a in listener.answers if convert.stamp_to_ns(a.header.stamp) == stamp][0]

        def counters():
            k = len(diags)
            listener.spin_until(lambda: len(diags) > k + 1, 10, [pose])
            status = [s for m in diags for s in m.status if s.name.startswith("/vfm_pose:")][-1]
            return {kv.key: kv.value for kv in status.values} | {"_message": status.message}

        assert send(1_000_000_000).detections == []
        c = counters()
        assert c["rejected_unknown_prompt"] == "1" and c.get("frames_inferred", "0") == "0"
        assert "names nothing in the catalogue" in c["_message"] and "last frame refused" in c["_message"]
        client = AsyncParameterClient(n, "/vfm_pose")
        assert client.wait_for_services(timeout_sec=10.0)
        future = client.set_parameters([Parameter("prompt", Parameter.Type.STRING, "the driller")])
        assert listener.spin_until(future.done, 10, [pose]) and future.result().results[0].successful
        assert send(2_000_000_000).detections  # the random net always answers the object a prompt names
        assert counters()["frames_inferred"] == "1"
    finally:
        listener.close()
    assert "every frame is refused until a valid prompt is set" in Procs.log(pose)
