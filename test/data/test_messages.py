"""The message codec round trips through both factories (rclpy classes and the rosbags typestore) and the wire.

Each builder's message is serialised to CDR and read back by the same implementation, then decoded: so the
builders fill every field their implementation needs, with the types it checks. A message serialised by one
implementation and read by the other decodes to the same values: the node and the bags speak one layout.
"""
from __future__ import annotations

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import ObjectModel, box_corners
from vfm_pose_ros.core.transforms import axis_angle_to_matrix, quat_to_matrix
from vfm_pose_ros.data import messages as codec

RNG = np.random.default_rng(3)
K = np.array([[600.0, 0.0, 320.5], [0.0, 610.0, 240.25], [0.0, 0.0, 1.0]])


def _rclpy():
    pytest.importorskip("vision_msgs.msg", reason="ROS 2 message packages are not installed")
    serialization = pytest.importorskip("rclpy.serialization")
    from vfm_pose_ros.ros.convert import RclpyFactory

    def wire(msg, msgtype):  # rclpy -> CDR -> rclpy
        return serialization.deserialize_message(serialization.serialize_message(msg), type(msg))

    return RclpyFactory(check_fields=True), wire  # rclpy checks each field type the builders set


def _rosbags():
    pytest.importorskip("rosbags")
    from vfm_pose_ros.data import bag_storage
    from vfm_pose_ros.data.rosbag import bag_messages

    def wire(msg, msgtype):  # rosbags -> CDR -> rosbags
        return bag_storage.deserialize(bag_storage.serialize(msg, msgtype), msgtype)

    return bag_messages(), wire


@pytest.fixture(params=["rclpy", "rosbags"])
def impl(request):
    """(factory, wire): a message factory and a CDR round trip of its messages."""
    return _rclpy() if request.param == "rclpy" else _rosbags()


def _object() -> ObjectModel:
    # an off-centre box: the bbox centre differs from the object origin
    return ObjectModel("thing", 3, box_corners([-0.02, -0.03, 0.0], [0.04, 0.05, 0.10]))


def test_header_and_stamp(impl):
    factory, wire = impl
    ns = 1_700_000_123_456_789_012
    header = wire(codec.make_header(factory, ns, "cam_optical"), "std_msgs/msg/Header")
    assert codec.stamp_to_ns(header.stamp) == ns and header.frame_id == "cam_optical"


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_colour_images(impl, encoding):
    factory, wire = impl
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    if encoding == "mono8":
        rgb[:] = rgb[:, :, :1]  # grey survives mono8 exactly
    msg = wire(codec.rgb_to_image(factory, rgb, codec.make_header(factory, 9, "cam"), encoding),
               "sensor_msgs/msg/Image")
    assert (msg.encoding, msg.height, msg.width, msg.header.frame_id) == (encoding, 5, 7, "cam")
    np.testing.assert_array_equal(codec.image_to_rgb(msg), rgb)


@pytest.mark.parametrize("encoding", ["rgb8", "16UC1", "32FC1"])
def test_padded_rows(impl, encoding):
    factory, wire = impl
    dtype, channels = codec.ENCODINGS[encoding]
    arr = (RNG.random((4, 3, channels) if channels > 1 else (4, 3)) * 200).astype(dtype)
    row = 3 * channels * dtype.itemsize
    msg = wire(codec.array_to_image(factory, arr, encoding, step=row + 5), "sensor_msgs/msg/Image")
    assert msg.step == row + 5 and len(msg.data) == 4 * (row + 5)
    np.testing.assert_array_equal(codec.image_to_array(msg), arr)


def test_depth(impl):
    factory, wire = impl
    metres = np.array([[0.0, np.nan, 0.51234], [1.00049, 70.0, -1.0]], np.float32)
    mm = wire(codec.depth_to_image(factory, metres, encoding="16UC1"), "sensor_msgs/msg/Image")
    # whole millimetres; 0 = no measurement for NaN, negative and beyond what 16 bits hold
    np.testing.assert_allclose(codec.image_to_depth(mm), [[0, 0, 0.512], [1.0, 0, 0]], atol=1e-7)
    f32 = wire(codec.depth_to_image(factory, metres, encoding="32FC1"), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(codec.image_to_depth(f32), metres)  # NaN where it was


def test_image_checks_hold_for_every_implementation(impl):
    factory, wire = impl
    msg = wire(codec.rgb_to_image(factory, RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)), "sensor_msgs/msg/Image")
    msg.step = 10  # a row needs 15 bytes
    with pytest.raises(codec.ImageConversionError, match="needs step >= 15") as info:
        codec.image_to_rgb(msg)
    assert info.value.reason == "bad_step"
    msg.encoding = "yuv422"
    with pytest.raises(codec.ImageConversionError, match="colour image has encoding 'yuv422'"):
        codec.image_to_rgb(msg)
    with pytest.raises(codec.ImageConversionError, match="unsupported image encoding 'yuv422'"):
        codec.image_to_array(msg)


def test_camera_info(impl):
    factory, wire = impl
    info = wire(codec.K_to_camera_info(factory, K, 640, 480, codec.make_header(factory, 5, "cam")),
                "sensor_msgs/msg/CameraInfo")
    K_back, size = codec.camera_info_to_K(info)
    np.testing.assert_array_equal(K_back, K)
    assert size == (640, 480) and info.distortion_model == "plumb_bob" and not np.any(info.d)
    np.testing.assert_array_equal(np.reshape(info.p, (3, 4)), np.hstack([K, np.zeros((3, 1))]))
    np.testing.assert_array_equal(np.reshape(info.r, (3, 3)), np.eye(3))


def _detections(factory, header):
    obj = _object()
    poses = [(axis_angle_to_matrix(RNG.normal(size=3)), np.array([0.05, -0.02, 0.7]), 0.8) for _ in range(2)]
    dets = [codec.detection_msg(factory, header, obj, k, R, t, score) for k, (R, t, score) in enumerate(poses)]
    return codec.detection_array_msg(factory, header, dets), poses, obj


def test_detection_array(impl):
    factory, wire = impl
    header = codec.make_header(factory, 123_000_000_456, "cam")
    arr, poses, obj = _detections(factory, header)
    arr = wire(arr, "vision_msgs/msg/Detection3DArray")
    assert [d.id for d in arr.detections] == ["thing_0", "thing_1"]
    back = codec.detection_array_to_list(arr)
    for (R, t, score), (name, R2, t2, score2) in zip(poses, back):
        assert name == "thing" and score2 == pytest.approx(score)
        np.testing.assert_allclose(R2, R, atol=1e-12)
        np.testing.assert_allclose(t2, t)
    box_R, box_t = codec.msg_to_pose(arr.detections[0].bbox.center)
    R0, t0, _ = poses[0]
    np.testing.assert_allclose(box_R, R0, atol=1e-12)
    np.testing.assert_allclose(box_t, R0 @ obj.bbox_center + t0, atol=1e-12)
    size = arr.detections[0].bbox.size
    np.testing.assert_allclose([size.x, size.y, size.z], obj.bbox_size)


def test_best_scoring_result_and_malformed_poses(impl):
    factory, _ = impl
    header = codec.make_header(factory, 1, "cam")
    arr, poses, _ = _detections(factory, header)
    low, high = arr.detections[1].results[0], arr.detections[0].results[0]
    low.hypothesis.score = 0.1
    arr.detections[0].results = [low, high]  # the best result is not the first
    arr.detections[1].results[0].pose.pose.orientation.x = 5.0  # not a unit quaternion
    invalid: list = []
    out = codec.detection_array_to_list(arr, invalid)
    assert len(out) == 1 and out[0][3] == pytest.approx(0.8)
    np.testing.assert_allclose(out[0][1], poses[0][0], atol=1e-12)
    assert invalid[0][0] == "thing_1" and "not 1" in invalid[0][1]


def test_transform(impl):
    factory, wire = impl
    R, t = axis_angle_to_matrix([0.2, -0.1, 0.4]), np.array([0.1, 0.2, 0.3])
    msg = wire(codec.transform_msg(factory, codec.make_header(factory, 7, "cam"), "thing_0", R, t),
               "geometry_msgs/msg/TransformStamped")
    tr, q = msg.transform.translation, msg.transform.rotation
    assert (msg.header.frame_id, msg.child_frame_id) == ("cam", "thing_0")
    np.testing.assert_allclose([tr.x, tr.y, tr.z], t)
    np.testing.assert_allclose(quat_to_matrix([q.x, q.y, q.z, q.w]), R, atol=1e-12)


def test_one_implementation_reads_what_the_other_wrote():
    rclpy_factory, _ = _rclpy()
    bag_factory, _ = _rosbags()
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import Detection3DArray

    from vfm_pose_ros.data import bag_storage

    rgb = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    for source, reader in ((rclpy_factory, "rosbags"), (bag_factory, "rclpy")):
        header = codec.make_header(source, 42, "cam")
        sent = [(codec.rgb_to_image(source, rgb, header, "bgr8"), "sensor_msgs/msg/Image", Image),
                (codec.K_to_camera_info(source, K, 4, 3, header), "sensor_msgs/msg/CameraInfo", CameraInfo),
                (_detections(source, header)[0], "vision_msgs/msg/Detection3DArray", Detection3DArray)]
        got = []
        for msg, msgtype, cls in sent:
            if reader == "rosbags":
                got.append(bag_storage.deserialize(serialize_message(msg), msgtype))
            else:
                got.append(deserialize_message(bag_storage.serialize(msg, msgtype), cls))
        image, info, dets = got
        assert codec.stamp_to_ns(image.header.stamp) == 42 and image.header.frame_id == "cam"
        np.testing.assert_array_equal(codec.image_to_rgb(image), rgb)
        np.testing.assert_array_equal(codec.camera_info_to_K(info)[0], K)
        for a, b in zip(codec.detection_array_to_list(sent[2][0]), codec.detection_array_to_list(dets)):
            assert a[0] == b[0] and a[3] == b[3]
            np.testing.assert_allclose(b[1], a[1], atol=1e-12)
            np.testing.assert_array_equal(b[2], a[2])
