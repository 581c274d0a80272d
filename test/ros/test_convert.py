"""Message <-> numpy conversion: every supported encoding, row padding, byte order, clear errors."""
from __future__ import annotations

import array

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message packages (ros-sensor-msgs) are not installed")

from sensor_msgs.msg import Image  # noqa: E402

from vfm_pose_ros.core.catalogue import Catalogue, GraspFrame, ObjectModel, box_corners  # noqa: E402
from vfm_pose_ros.core.transforms import axis_angle_to_matrix, make_T, transform_points  # noqa: E402
from vfm_pose_ros.core.types import ObjectPose  # noqa: E402
from vfm_pose_ros.ros import convert  # noqa: E402

pytestmark = pytest.mark.ros
RNG = np.random.default_rng(0)


def _rgb(h=6, w=7):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_round_trip(encoding):
    rgb = _rgb()
    msg = convert.rgb_to_image(rgb, encoding=encoding)
    assert msg.encoding == encoding and (msg.height, msg.width) == (6, 7)
    back = convert.image_to_rgb(msg)
    assert back.dtype == np.uint8 and back.shape == (6, 7, 3)
    np.testing.assert_array_equal(back, rgb)


def test_bgr_channel_order_is_swapped_on_the_wire():
    rgb = np.zeros((1, 1, 3), np.uint8)
    rgb[0, 0] = (10, 20, 30)
    msg = convert.rgb_to_image(rgb, encoding="bgr8")
    assert list(msg.data) == [30, 20, 10]


def test_mono8_becomes_grey_rgb():
    grey = RNG.integers(0, 256, (5, 4), dtype=np.uint8)
    msg = convert.array_to_image(grey, "mono8")
    rgb = convert.image_to_rgb(msg)
    assert rgb.shape == (5, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], grey)


def test_rgb8_is_a_zero_copy_view_of_the_message():
    msg = convert.rgb_to_image(_rgb())
    arr = convert.image_to_rgb(msg)
    assert not arr.flags.owndata
    msg.data[0] = (int(msg.data[0]) + 1) % 256  # writing the message shows through the view
    assert arr[0, 0, 0] == msg.data[0]


def test_16uc1_millimetres_to_metres_and_back():
    mm = RNG.integers(0, 5000, (4, 5)).astype(np.uint16)
    mm[0, 0] = 0
    msg = convert.array_to_image(mm, "16UC1")
    depth = convert.image_to_depth(msg)
    assert depth.dtype == np.float32
    np.testing.assert_allclose(depth, mm.astype(np.float32) / 1000.0, rtol=1e-6)
    assert depth[0, 0] == 0.0
    again = convert.depth_to_image(depth, encoding="16UC1")
    np.testing.assert_array_equal(convert.image_to_array(again), mm)


def test_16uc1_from_metres_drops_invalid_to_zero():
    d = np.array([[0.5, np.nan], [np.inf, -1.0]], np.float32)
    arr = convert.image_to_array(convert.depth_to_image(d, encoding="16UC1"))
    np.testing.assert_array_equal(arr, [[500, 0], [0, 0]])


def test_32fc1_metres_round_trip_keeps_nan():
    d = RNG.random((3, 4)).astype(np.float32)
    d[1, 1] = np.nan
    out = convert.image_to_depth(convert.depth_to_image(d, encoding="32FC1"))
    np.testing.assert_array_equal(out, d)  # NaN positions equal too
    assert not out.flags.owndata


@pytest.mark.parametrize("encoding", ["rgb8", "bgra8", "mono8", "16UC1", "32FC1"])
def test_step_padding_is_honoured(encoding):
    dtype, ch = convert.ENCODINGS[encoding]
    shape = (5, 3, ch) if ch > 1 else (5, 3)
    arr = (RNG.random(shape) * 200).astype(dtype)
    row = 3 * ch * dtype.itemsize
    msg = convert.array_to_image(arr, encoding, step=row + 7)
    assert msg.step == row + 7 and len(msg.data) == (row + 7) * 5
    np.testing.assert_array_equal(convert.image_to_array(msg), arr)
    # the last row may come unpadded (some drivers do that)
    msg.data = array.array("B", bytes(msg.data)[: (row + 7) * 4 + row])
    np.testing.assert_array_equal(convert.image_to_array(msg), arr)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_big_endian_data(encoding):
    dtype, _ = convert.ENCODINGS[encoding]
    arr = (RNG.random((3, 4)) * 3000).astype(dtype)
    msg = Image(height=3, width=4, encoding=encoding, is_bigendian=1, step=4 * dtype.itemsize)
    msg.data = array.array("B", arr.astype(dtype.newbyteorder(">")).tobytes())
    out = convert.image_to_array(msg)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_unsupported_encoding_is_a_clear_error():
    msg = Image(height=2, width=2, encoding="yuv422", step=4)
    msg.data = array.array("B", bytes(8))
    with pytest.raises(convert.ImageConversionError, match="unsupported image encoding 'yuv422'.*rgb8"):
        convert.image_to_array(msg)


def test_depth_encoding_on_colour_topic_is_refused():
    msg = convert.array_to_image(np.zeros((2, 2), np.uint16), "16UC1")
    with pytest.raises(convert.ImageConversionError, match="colour image has encoding '16UC1'"):
        convert.image_to_rgb(msg)
    with pytest.raises(convert.ImageConversionError, match="depth image has encoding 'rgb8'"):
        convert.image_to_depth(convert.rgb_to_image(_rgb()))


def test_step_too_small_and_wrong_data_size_are_clear_errors():
    msg = convert.rgb_to_image(_rgb(4, 5))
    msg.step = 10  # a row needs 15 bytes
    with pytest.raises(convert.ImageConversionError, match="needs step >= 15"):
        convert.image_to_array(msg)
    msg = convert.rgb_to_image(_rgb(4, 5))
    msg.data = array.array("B", bytes(msg.data)[:-20])
    with pytest.raises(convert.ImageConversionError, match="needs 60 data bytes, got 40"):
        convert.image_to_array(msg)


def test_conversion_errors_carry_the_reason_code_the_pose_node_counts():
    from vfm_pose_ros.core.validation import REASONS

    bad = Image(height=2, width=2, encoding="yuv422", step=4)
    bad.data = array.array("B", bytes(8))
    short = convert.rgb_to_image(_rgb(4, 5))
    short.step = 10
    cut = convert.rgb_to_image(_rgb(4, 5))
    cut.data = array.array("B", bytes(cut.data)[:-1])
    no_data = Image(height=4, width=5, encoding="bgr8", step=15)
    for msg, reason in [(bad, "bad_encoding"), (short, "bad_step"), (cut, "bad_step"), (no_data, "empty_image")]:
        with pytest.raises(convert.ImageConversionError) as info:
            convert.image_to_rgb(msg)
        assert info.value.reason == reason and reason in REASONS
    assert "carries no data" in str(info.value)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "rgba8"])
@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (4, 0)])
def test_zero_sized_images_decode_to_empty_arrays_for_validation_to_refuse(encoding, shape):
    from vfm_pose_ros.core.validation import InvalidInput, validate_image

    msg = Image(height=shape[0], width=shape[1], encoding=encoding, step=0)
    rgb = convert.image_to_rgb(msg)  # no cv2 error on an empty array
    assert rgb.shape == (*shape, 3) and rgb.dtype == np.uint8
    with pytest.raises(InvalidInput, match="empty_image"):
        validate_image(rgb)
    depth = convert.image_to_depth(Image(height=shape[0], width=shape[1], encoding="32FC1"))
    assert depth.shape == shape


def test_malformed_received_poses_are_refused_not_guessed():
    from geometry_msgs.msg import Pose

    pose = convert.pose_to_msg(axis_angle_to_matrix([0.1, 0.2, 0.3]), [0, 0, 1.0])
    pose.orientation.w *= 1.001  # float32 round trips: normalised, accepted
    R, _ = convert.msg_to_pose(pose)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    zero = Pose()
    zero.orientation.w = 0.0
    nan = convert.pose_to_msg(np.eye(3), [np.nan, 0, 1.0])
    for bad, words in [(zero, "norm 0.0000, not 1"), (nan, "NaN or inf")]:
        with pytest.raises(ValueError, match=words):
            convert.msg_to_pose(bad)


def test_detections_with_malformed_poses_are_skipped_and_reported():
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built yet (interfaces/)")
    cat = _catalogue()
    arr = convert.poses_to_detection_array([_pose(), _pose(instance=1)], cat, convert.make_header(1, "cam"))
    arr.detections[1].results[0].pose.pose.orientation.x = 5.0
    arr.detections[0].results[0].hypothesis.score = float("nan")
    invalid = []
    out = convert.detection_array_to_list(arr, invalid)
    assert [o[0] for o in out] == ["thing"] and invalid[0][0] == "thing_1" and "not 1" in invalid[0][1]
    assert len(convert.detection_array_to_list(arr)) == 1  # skipped without the list too


def test_camera_info_round_trip():
    K = np.array([[600.0, 0, 320], [0, 610, 240], [0, 0, 1]])
    info = convert.K_to_camera_info(K, 640, 480)
    K2, size = convert.camera_info_to_K(info)
    np.testing.assert_array_equal(K2, K)
    assert size == (640, 480)


def test_stamps():
    ns = 1_700_000_123_456_789_012
    assert convert.stamp_to_ns(convert.ns_to_stamp(ns)) == ns


# --------------------------------------------------------------------------- detections, TF, markers


def _catalogue():
    # an off-centre box so the bbox centre differs from the object origin
    verts = box_corners([-0.02, -0.03, 0.0], [0.04, 0.05, 0.10])
    grasp = GraspFrame("handle", make_T(axis_angle_to_matrix([0, 0, 0.3]), [0.01, 0.0, 0.02]))
    return Catalogue([ObjectModel("thing", 3, verts, grasp_frames={"handle": grasp}),
                      ObjectModel("other", 4, verts * 0.5)])


def _pose(name="thing", instance=0, grasp=None):
    R = axis_angle_to_matrix(RNG.normal(size=3))
    return ObjectPose(name, R, np.array([0.05, -0.02, 0.7]), score=0.8, instance=instance, grasp_frame=grasp)


def test_detection3d_fields_and_box():
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built yet (interfaces/)")
    cat = _catalogue()
    header = convert.make_header(123_000_000_456, "cam_optical")
    p = _pose(instance=2)
    arr = convert.poses_to_detection_array([p], cat, header)
    assert arr.header == header
    det = arr.detections[0]
    assert det.header == header and det.id == "thing_2"
    assert det.results[0].hypothesis.class_id == "thing"
    assert det.results[0].hypothesis.score == pytest.approx(0.8)
    R, t = convert.msg_to_pose(det.results[0].pose.pose)
    np.testing.assert_allclose(R, p.R, atol=1e-12)
    np.testing.assert_allclose(t, p.t)
    obj = cat["thing"]
    Rb, tb = convert.msg_to_pose(det.bbox.center)
    np.testing.assert_allclose(tb, transform_points(p.R, p.t, obj.bbox_center[None])[0], atol=1e-12)
    np.testing.assert_allclose(Rb, p.R, atol=1e-12)
    np.testing.assert_allclose([det.bbox.size.x, det.bbox.size.y, det.bbox.size.z], [0.06, 0.08, 0.10])
    back = convert.detection_array_to_list(arr)
    assert back[0][0] == "thing" and back[0][3] == pytest.approx(0.8)
    np.testing.assert_allclose(back[0][1], p.R, atol=1e-12)


def test_transforms_parents_and_names():
    cat = _catalogue()
    header = convert.make_header(5, "cam")
    poses = [_pose(grasp="handle"), _pose("other", 0), _pose("thing", 1)]
    tfs = convert.pose_transforms(poses, cat, header, grasp_frames="selected")
    pairs = [(m.header.frame_id, m.child_frame_id) for m in tfs]
    assert pairs == [("cam", "thing_0"), ("thing_0", "thing_0_grasp_handle"), ("cam", "other_0"), ("cam", "thing_1")]
    assert all(m.header.stamp == header.stamp for m in tfs)
    g = tfs[1].transform
    np.testing.assert_allclose([g.translation.x, g.translation.y, g.translation.z], [0.01, 0.0, 0.02])
    all_tfs = convert.pose_transforms(poses, cat, header, grasp_frames="all")
    assert [m.child_frame_id for m in all_tfs].count("thing_1_grasp_handle") == 1
    assert len(convert.pose_transforms(poses, cat, header, grasp_frames="none")) == 3


def test_markers_start_with_deleteall_and_cover_each_pose():
    from visualization_msgs.msg import Marker

    cat = _catalogue()
    header = convert.make_header(5, "cam")
    poses = [_pose(), _pose("other")]
    ma = convert.pose_markers(poses, cat, header)
    assert ma.markers[0].action == Marker.DELETEALL
    kinds = [(m.ns, m.type) for m in ma.markers[1:]]
    assert kinds.count(("vfm_pose/boxes", Marker.LINE_LIST)) == 2
    assert kinds.count(("vfm_pose/labels", Marker.TEXT_VIEW_FACING)) == 2
    box = ma.markers[1]
    assert len(box.points) == 24 and box.header.frame_id == "cam"
    assert ma.markers[3].text.startswith("thing_0 0.80")
    assert len(convert.pose_markers([], cat, header).markers) == 1


def test_debug_image_draws_on_a_copy():
    cat = _catalogue()
    K = np.array([[500.0, 0, 80], [0, 500, 60], [0, 0, 1]])
    rgb = np.zeros((120, 160, 3), np.uint8)
    p = ObjectPose("thing", np.eye(3), np.array([0.0, 0.0, 0.6]), keypoints_2d=np.array([[10.0, 10.0]]))
    out = convert.draw_debug_image(rgb, K, [p], cat)
    assert rgb.max() == 0 and out.shape == rgb.shape
    assert out.any(axis=2).sum() > 100  # box edges, axes and the keypoint were drawn
    assert out[10, 10].any()
