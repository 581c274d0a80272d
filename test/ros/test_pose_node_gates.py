"""The pose node in-process, with a stub estimator: implausible poses are withheld and counted by gate,
implausible intrinsics refused and counted, parameters refused alike at start and at run time."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (interfaces/)")

from vfm_pose_ros.core.catalogue import Catalogue  # noqa: E402
from vfm_pose_ros.core.types import ObjectPose  # noqa: E402
from vfm_pose_ros.paths import default_catalogue_dir  # noqa: E402
from vfm_pose_ros.ros import convert  # noqa: E402

pytestmark = pytest.mark.ros
W, H = 640, 480
K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])


class StubEstimator:
    """Returns ``poses`` for every frame, as a network that sees objects in a blank frame would."""

    backend = "dinov2"

    def __init__(self):
        self.catalogue = Catalogue.from_dir(default_catalogue_dir())
        self.poses = []

    def predict(self, frame):
        return list(self.poses)


@pytest.fixture
def make_node():
    import rclpy

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    nodes = []

    def _make(stub: bool = True, **params):
        """A pose node with the stub estimator (``stub``) or the one its ``checkpoint`` parameter names."""
        from rclpy.parameter import Parameter

        from vfm_pose_ros.ros.pose_node import PoseNode

        node = PoseNode(estimator=StubEstimator() if stub else None, context=ctx,
                        parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        nodes.append(node)
        return node

    yield _make
    for node in nodes:
        node.stop()
        node.destroy_node()
    rclpy.shutdown(context=ctx)


def _frame(node, stamp_ns, K_=K, depth_m=0.8):
    header = convert.make_header(stamp_ns, "cam")
    node._camera_info = convert.K_to_camera_info(K_, W, H, header)
    node._info_event.set()
    image = convert.rgb_to_image(np.zeros((H, W, 3), np.uint8), header)  # a black frame
    depth = convert.depth_to_image(np.full((H, W), depth_m, np.float32), header) if depth_m else None
    published = []
    node.pub_det.publish = published.append
    node._process(image, depth, time.monotonic())
    assert len(published) == 1  # one answer per frame, whatever happened
    return published[0]


def _counts(node):
    return {kv.key: kv.value for kv in node.diagnostics().values}


def test_phantom_poses_are_withheld_and_counted_by_gate(make_node):
    node = make_node(input_qos="reliable")
    # scores above the default score_threshold (0.5): the gates, not the threshold, must stop them
    phantom = [ObjectPose("can_like", np.eye(3), np.array([0.0, 0.0, 4.0]), score=0.8),
               ObjectPose("driller_like", np.eye(3), np.array([0.1, 0.0, 3.2]), score=0.75)]
    node.estimator.poses = phantom
    assert _frame(node, 1_000).detections == []  # depth says 0.8 m: both would stand metres behind it
    c = _counts(node)
    assert c["withheld_depth_mismatch"] == "2" and "behind the measured surface" in c["last_empty_reason"]

    node.estimator.poses = [ObjectPose("can_like", np.eye(3), np.array([0.0, 0.0, 7.0]), score=0.9)]
    assert _frame(node, 2_000).detections == []
    assert _counts(node)["withheld_distance"] == "1"

    node.estimator.poses = [ObjectPose("can_like", np.eye(3), np.array([0.0, 0.0, 0.8]), score=0.9)]
    assert len(_frame(node, 3_000).detections) == 1  # where the depth is: published
    c = _counts(node)
    assert c["withheld_projected_size"] == "0" and c["objects_published"] == "1"


def test_rgb_only_gates_without_depth(make_node):
    node = make_node(use_depth=False, max_distance_m=2.0)
    node.estimator.poses = [ObjectPose("can_like", np.eye(3), np.array([0.0, 0.0, 3.0]), score=0.9)]
    assert _frame(node, 1_000, depth_m=None).detections == []
    assert _counts(node)["withheld_distance"] == "1"


@pytest.mark.parametrize("K_bad, words", [
    (np.array([[0.894, 0, 0.508], [0, 1.19, 0.508], [0, 0, 1]]), "K looks normalised"),
    (K * 1000, "last row"),
    (np.array([[600.0, 0, 1e9], [0, 600, 1e9], [0, 0, 1]]), "principal point"),
])
def test_implausible_intrinsics_are_refused_and_counted(make_node, K_bad, words):
    node = make_node()
    node.estimator.poses = [ObjectPose("can_like", np.eye(3), np.array([0.0, 0.0, 0.8]), score=0.9)]
    assert _frame(node, 1_000, K_=K_bad).detections == []
    c = _counts(node)
    assert c["rejected_implausible_intrinsics"] == "1" and c["frames_rejected"] == "1"
    assert words in c["last_empty_reason"] and node.diagnostics().level == b"\x01"  # WARN: last frame refused


@pytest.mark.parametrize("name, value", [("sync_tolerance_ms", -5.0), ("score_threshold", -1.0),
                                         ("min_distance_m", 9.0)])
def test_a_bad_value_is_refused_at_run_time_as_at_start(make_node, name, value):
    from rclpy.parameter import Parameter

    from vfm_pose_ros.ros.pose_node import StartupError

    node = make_node()
    result = node.set_parameters([Parameter(name, value=value)])[0]
    assert not result.successful and name in result.reason and "must be" in result.reason
    assert node.get_parameter(name).value != value
    with pytest.raises(StartupError) as info:
        make_node(**{name: value})
    assert str(info.value) == result.reason


def test_plausibility_gates_false_publishes_every_valid_result(make_node):
    node = make_node(plausibility_gates=False)
    node.estimator.poses = [ObjectPose("can_like", np.eye(3), np.array([0.0, 0.0, 4.0]), score=0.8)]
    assert len(_frame(node, 1_000).detections) == 1
    assert _counts(node)["withheld_depth_mismatch"] == "0"


@pytest.mark.parametrize("refine_top, expected", [(0, 2), (16, 16)])
def test_icp_refine_top_reaches_the_loaded_estimator(make_node, refine_top, expected):
    """``icp_refine_top`` (0: the checkpoint's setting) is handed to the estimator the node loads."""
    from vfm_pose_ros.paths import find_package_file

    checkpoint = find_package_file("models/dinov2_small.pt")  # shipped with the repository
    node = make_node(stub=False, checkpoint=str(checkpoint), backend="dinov2", device="cpu",
                     icp_refine_top=refine_top)
    assert node.estimator.depth_stage.refine_top == expected
