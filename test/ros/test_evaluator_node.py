"""The evaluator node in its own process, fed over DDS: its report equals the offline PoseEvaluator's."""
from __future__ import annotations

import csv
import json
import signal
import time

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (interfaces/)")

from vfm_pose_ros.core.catalogue import Catalogue  # noqa: E402
from vfm_pose_ros.core.metrics import PoseEvaluator  # noqa: E402
from vfm_pose_ros.core.transforms import axis_angle_to_matrix  # noqa: E402
from vfm_pose_ros.core.types import GroundTruthPose, ObjectPose  # noqa: E402
from vfm_pose_ros.paths import default_catalogue_dir  # noqa: E402
from vfm_pose_ros.ros import convert  # noqa: E402
from vfm_pose_ros.ros.evaluator_node import Scorer, markdown_report  # noqa: E402

pytestmark = pytest.mark.ros
K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
T0 = 1_000_000_000
DT = 33_333_333


def _roundtrip(R, t):
    """The pose as it comes out of a message (quaternion in, matrix out)."""
    return convert.msg_to_pose(convert.pose_to_msg(R, t))


def _scenario(catalogue, n_frames=6, seed=1):
    """Per frame: ground truth (both objects) and predictions (noisy; a miss, a false positive, two drillers)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        gts, preds = [], []
        for j, obj in enumerate(catalogue):
            R = axis_angle_to_matrix(rng.normal(size=3))
            t = np.array([0.1 * j - 0.05, 0.02, 0.7 + 0.05 * i])
            R, t = _roundtrip(R, t)
            gts.append(GroundTruthPose(obj.class_id, obj.name, R, t))
            if i == 2 and j == 1:
                continue  # one instance missed
            Rp, tp = _roundtrip(R @ axis_angle_to_matrix(rng.normal(scale=0.05 * (i + 1), size=3)),
                                t + rng.normal(scale=0.004 * (i + 1), size=3))
            preds.append(ObjectPose(obj.name, Rp, tp, score=float(rng.uniform(0.5, 1.0))))
        if i == 3:  # a second driller: a false positive with a lower score
            Rp, tp = _roundtrip(np.eye(3), np.array([0.0, 0.0, 1.2]))
            preds.append(ObjectPose(catalogue.names[0], Rp, tp, score=0.4))
        frames.append((T0 + i * DT, gts, preds))
    return frames


MAX_POINTS = 500  # model points for the metrics (fast tests; the same for node and offline)


def _offline(catalogue, frames, missing, depths=None):
    """The offline report; with ``depths`` (stamp -> metres) VSD too, as the node's ``vsd`` parameter does."""
    from vfm_pose_ros.data.render import DepthPatches

    ev = PoseEvaluator(catalogue, max_points=MAX_POINTS, renderer=DepthPatches() if depths is not None else None)
    for stamp, gts, preds in frames:
        ev.add_frame(gts, [] if stamp in missing else preds, K=K, image_width=640.0,
                     depth=None if depths is None else depths.get(stamp))
    return ev.report()


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


def test_scorer_matches_in_any_order_and_scores_gaps(catalogue, assert_reports_close):
    frames = _scenario(catalogue)
    missing = {frames[4][0]}
    s = Scorer(catalogue, max_points=MAX_POINTS, timeout_s=5.0)
    for k, (stamp, gts, preds) in enumerate(frames):
        if stamp in missing:
            s.add_ground_truth(stamp, gts, K, 640.0, now=0.0)
        elif k % 2:  # detections first on odd frames
            s.add_detections(stamp, preds, now=0.0)
            s.add_ground_truth(stamp, gts, K, 640.0, now=0.0)
        else:
            s.add_ground_truth(stamp, gts, K, 640.0, now=0.0)
            s.add_detections(stamp, preds, now=0.0)
    s.add_detections(T0 + 99 * DT, [], now=0.0)  # detections of a frame without ground truth
    s.expire(now=1.0)
    assert s.matched == 5 and not s.gaps  # not yet timed out
    s.expire(now=10.0)
    rep = s.report()
    assert rep["ros"]["gaps"] == sorted(missing) and rep["ros"]["detections_without_ground_truth"] == 1
    offline = _offline(catalogue, frames, missing)
    assert_reports_close({k: rep[k] for k in offline}, offline)
    assert "| **overall** |" in markdown_report(rep)


def test_scorer_writes_the_markdown_its_caller_formats(catalogue, tmp_path):
    """report.md comes from the formatter the caller passes (data/ sits below report/); without one, none."""
    s = Scorer(catalogue, max_points=MAX_POINTS)
    stamp, gts, preds = _scenario(catalogue)[0]
    s.add_ground_truth(stamp, gts, K, 640.0, now=0.0)
    s.add_detections(stamp, preds, now=0.0)
    s.write(tmp_path / "plain")
    assert (tmp_path / "plain" / "report.json").is_file() and not (tmp_path / "plain" / "report.md").exists()
    rep = s.write(tmp_path / "md", markdown=markdown_report)
    assert (tmp_path / "md" / "report.md").read_text() == markdown_report(rep)


def test_evaluator_node_over_dds(catalogue, spawn_python, tmp_path, assert_reports_close):
    import copy

    import rclpy
    import rclpy.executors
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
    from vision_msgs.msg import Detection3DArray

    from vfm_pose_ros.data.render import Renderer

    out = tmp_path / "eval"
    proc = spawn_python("-m", "vfm_pose_ros.ros.evaluator_node", "--ros-args", "-p", f"output_dir:={out}",
                        "-p", "match_timeout_s:=30.0", "-p", f"max_points:={MAX_POINTS}", "-p", "summary_period_s:=0.2")
    frames = _scenario(catalogue)
    missing = {frames[4][0]}
    ren = Renderer(640, 480, K=K)
    depth_msgs = {stamp: convert.depth_to_image(ren.render([(catalogue[g.name], g.R, g.t) for g in gts]).depth)
                  for stamp, gts, _ in frames[:-1]}  # the last frame's depth never comes
    depths = {stamp: convert.image_to_depth(m) for stamp, m in depth_msgs.items()}  # as the node reads them

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("evaluator_test_feeder", context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    try:
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        pub_gt = node.create_publisher(Detection3DArray, "/ground_truth/detections", reliable)
        pub_det = node.create_publisher(Detection3DArray, "/vfm_pose/detections", reliable)
        pub_info = node.create_publisher(CameraInfo, "/camera/color/camera_info", reliable)
        pub_depth = node.create_publisher(Image, "/camera/aligned_depth_to_color/image_raw", reliable)
        summaries = []
        node.create_subscription(String, "/vfm_pose_evaluator/summary", lambda m: summaries.append(json.loads(m.data)),
                                 10)
        diagnostics = []
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.extend(
            s for s in m.status if s.name.startswith("/vfm_pose_evaluator")), 10)

        def spin_until(cond, timeout):
            end = time.monotonic() + timeout
            while time.monotonic() < end and not cond():
                executor.spin_once(timeout_sec=0.05)
                assert proc.poll() is None, proc.stderr.read()
            return cond()

        assert spin_until(lambda: pub_gt.get_subscription_count() and pub_det.get_subscription_count()
                          and pub_info.get_subscription_count() and pub_depth.get_subscription_count(), 30), (
            "evaluator node did not subscribe")
        for stamp, gts, preds in frames:
            header = convert.make_header(stamp, "camera_color_optical_frame")
            pub_info.publish(convert.K_to_camera_info(K, 640, 480, header))
            time.sleep(0.02)  # camera info first, as the player sends it
            pub_gt.publish(convert.poses_to_detection_array(
                [ObjectPose(g.name, g.R, g.t, 1.0) for g in gts], catalogue, header))
            if stamp in depth_msgs:
                depth_msgs[stamp].header = header
                pub_depth.publish(depth_msgs[stamp])
                time.sleep(0.02)  # depth before detections, as the player sends it before the image
            if stamp not in missing:
                msg = convert.poses_to_detection_array(preds, catalogue, header)
                if stamp == frames[1][0]:  # plus a detection of a class the catalogue does not have
                    ghost = copy.deepcopy(msg.detections[0])
                    ghost.results[0].hypothesis.class_id = "ghost"
                    msg.detections.append(ghost)
                pub_det.publish(msg)
        assert spin_until(lambda: summaries and summaries[-1]["frames_matched"] == 5, 30), summaries[-1:]
        assert summaries[-1]["pending_ground_truth"] == 1  # the frame without detections is still waiting
        assert summaries[-1]["detections_unknown_class"] == 1 and summaries[-1]["unknown_classes"] == {"ghost": 1}
        assert spin_until(lambda: diagnostics and dict((kv.key, kv.value) for kv in diagnostics[-1].values).get(
            "detections_unknown_class") == "1", 10), diagnostics[-1:]
        assert "ghost" in diagnostics[-1].message and diagnostics[-1].level == DiagnosticStatus.WARN
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    rep = json.loads((out / "report.json").read_text())
    offline = json.loads(json.dumps(_offline(catalogue, frames, missing, depths)))
    assert_reports_close({k: rep[k] for k in offline}, offline)
    assert rep["n_frames"] == 6 and rep["overall"]["n_gt"] == 12
    assert rep["ros"]["gaps"] == sorted(missing) and rep["ros"]["frames_matched"] == 5
    assert rep["ros"]["detections_unknown_class"] == 1 and rep["dataset"]["unknown_obj_ids"] == ["ghost"]
    assert rep["status"] is None  # no bag given: whether every frame came cannot be known
    assert "1 detections of classes outside the catalogue" in (out / "report.md").read_text()
    rows = list(csv.DictReader(open(out / "frames.csv")))
    assert len(rows) == 12
    assert {r["detections_received"] for r in rows if int(r["stamp_ns"]) in missing} == {"False"}
    assert "| **overall** |" in (out / "report.md").read_text()
    assert "frames without detections" in err
    # vsd is on by default: VSD where the depth came; the last frame's never did, so BOP AR is not available
    assert rep["overall"]["bop19_average_recall_mssd"] is not None and rep["overall"]["bop19_average_recall"] is None
    assert rep["overall"]["bop19_unavailable_reason"] == "VSD: no depth image for 2 of 12 ground-truth instances"
    assert any(r["vsd_mean"] for r in rows)


def test_scorer_scores_vsd_with_the_frames_depth(catalogue, assert_reports_close):
    from vfm_pose_ros.data.render import DepthPatches, Renderer

    frames = _scenario(catalogue, n_frames=3)
    ren = Renderer(640, 480, K=K)
    depths = {stamp: ren.render([(catalogue[g.name], g.R, g.t) for g in gts]).depth for stamp, gts, _ in frames}
    taken = []
    s = Scorer(catalogue, max_points=MAX_POINTS, depth=lambda stamp: taken.append(stamp) or depths.get(stamp))
    for stamp, gts, preds in frames:
        s.add_ground_truth(stamp, gts, K, 640.0, now=0.0)
        s.add_detections(stamp, preds, now=0.0)
    rep = s.report()
    assert taken == [f[0] for f in frames]
    ev = PoseEvaluator(catalogue, max_points=MAX_POINTS, renderer=DepthPatches())
    for stamp, gts, preds in frames:
        ev.add_frame(gts, preds, K=K, image_width=640.0, depth=depths[stamp])
    offline = ev.report()
    assert rep["overall"]["bop19_average_recall"] is not None
    assert_reports_close({k: rep[k] for k in offline}, offline)


def test_frames_never_played_make_the_report_incomplete_and_count_as_failures(catalogue, tmp_path,
                                                                              assert_reports_close):
    """A graph stopped early (a node died): the bag's unplayed frames are scored as failures, the report says
    incomplete with frames played / frames in the bag."""
    frames = _scenario(catalogue)
    played = frames[:4]
    s = Scorer(catalogue, max_points=MAX_POINTS, timeout_s=5.0, frames_in_bag=len(frames),
               camera=lambda stamp: (K, 640.0))  # the node's: the frame's camera info, else the latest one
    for stamp, gts, preds in played:
        s.add_ground_truth(stamp, gts, K, 640.0, now=0.0)
        s.add_detections(stamp, preds, now=0.0)
    assert s.report()["status"] == "incomplete"
    bag_gt = {stamp: gts for stamp, gts, _ in frames}
    assert s.score_unplayed(bag_gt) == 2
    assert s.score_unplayed(bag_gt) == 0  # once only
    rep = s.report()
    assert rep["status"] == "incomplete" and rep["n_frames"] == 6
    assert (rep["ros"]["frames_played"], rep["ros"]["frames_in_bag"], rep["ros"]["unplayed_frames"]) == (4, 6, 2)
    assert rep["ros"]["gaps"] == [] and rep["ros"]["frames_matched"] == 4
    # the same numbers as offline with no prediction for the two unplayed frames
    offline = _offline(catalogue, frames, {stamp for stamp, _, _ in frames[4:]})
    assert_reports_close({k: rep[k] for k in offline}, offline)
    assert "**INCOMPLETE**: 4 of 6 frames" in markdown_report(rep)

    whole = Scorer(catalogue, max_points=MAX_POINTS, frames_in_bag=len(frames))
    for stamp, gts, preds in frames:
        whole.add_ground_truth(stamp, gts, K, 640.0, now=0.0)
        whole.add_detections(stamp, preds, now=0.0)
    assert whole.score_unplayed(bag_gt) == 0 and whole.report()["status"] == "complete"
