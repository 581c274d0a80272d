"""ROS messages <-> numpy and the package's types: images, camera info, poses, detections, TF, markers.

The only place that knows message layouts, so nodes stay thin. Images decode to
zero-copy numpy views of the message buffer where the encoding allows it (rows
padded by ``step`` and big-endian data are honoured); cv_bridge is used for the raw
decode when it is importable (a sourced ROS 2 install), the own decoder otherwise
(PyPI wheels have no cv_bridge). Depth leaves here in metres (16UC1 millimetres are
scaled), the package-wide unit.

vision_msgs and tf2_msgs are imported inside the functions that need them, so the
image helpers work before those interface packages are built.
"""
from __future__ import annotations

import array
import math
import sys

import numpy as np

from ..core.catalogue import Catalogue, ObjectModel
from ..core.detections import detection_box, detection_id
from ..core.transforms import matrix_to_quat, quat_to_matrix

try:  # a sourced ROS 2 install has cv_bridge; the PyPI wheels do not
    from cv_bridge import CvBridge as _CvBridge
except ImportError:  # pragma: no cover - depends on the installation
    _CvBridge = None

# encoding -> (numpy dtype, channels). The set the pose node accepts.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")

# Grasp frame TF child names: "<object frame>_grasp_<grasp name>" (no '/', which some TF tools mishandle).
GRASP_SEPARATOR = "_grasp_"


class ImageConversionError(ValueError):
    """An Image message that cannot be decoded; ``reason`` is the validation reason code the pose node counts:
    ``bad_encoding`` (unsupported or wrong-topic encoding), ``bad_step`` (width, height, step and data
    disagree) or ``empty_image`` (no data)."""

    def __init__(self, message: str, reason: str = "bad_encoding"):
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- stamps


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int):
    from builtin_interfaces.msg import Time

    return Time(sec=int(ns) // 1_000_000_000, nanosec=int(ns) % 1_000_000_000)


def make_header(stamp_ns: int, frame_id: str):
    from std_msgs.msg import Header

    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# --------------------------------------------------------------------------- images


def image_to_array(msg) -> np.ndarray:
    """The pixels of an Image in their own encoding: HxW (one channel) or HxWxC, native byte order.

    A view of ``msg.data`` (no copy) unless the data are big-endian multi-byte values.
    """
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding {enc!r}; supported: {', '.join(ENCODINGS)} "
                                   "(republish the camera in one of these, e.g. with image_proc)")
    dtype, channels = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * channels * dtype.itemsize
    if h == 0 or w == 0:
        return np.zeros((h, w, channels) if channels > 1 else (h, w), dtype)
    n = len(msg.data)
    if n == 0:
        raise ImageConversionError(f"{enc} image says {w}x{h} but carries no data; check the camera driver",
                                   "empty_image")
    if step < row_bytes:
        raise ImageConversionError(f"{enc} image of width {w} needs step >= {row_bytes} bytes, got step {step}; "
                                   "the publisher filled 'step' wrongly", "bad_step")
    if n not in (step * h, step * (h - 1) + row_bytes):
        raise ImageConversionError(f"{enc} image {w}x{h} with step {step} needs {step * h} data bytes, got {n}; "
                                   "width, height, step and data disagree: fix the publisher", "bad_step")
    if _CvBridge is not None:  # pragma: no cover - not installed here
        arr = _CvBridge().imgmsg_to_cv2(msg, desired_encoding="passthrough")
        return arr
    big = bool(msg.is_bigendian) and dtype.itemsize > 1
    dt = dtype.newbyteorder(">" if big else "<") if dtype.itemsize > 1 else dtype
    shape = (h, w, channels) if channels > 1 else (h, w)
    strides = (step, channels * dt.itemsize, dt.itemsize) if channels > 1 else (step, dt.itemsize)
    arr = np.ndarray(shape=shape, dtype=dt, buffer=_buffer(msg.data), strides=strides)
    if dt.byteorder not in ("=", "|") and dt.byteorder != ("<" if sys.byteorder == "little" else ">"):
        arr = arr.astype(dtype)  # byte swap: the one conversion that must copy
    return arr


def _buffer(data):
    """A buffer-protocol object over message data (array.array in rclpy, bytes/list elsewhere)."""
    if isinstance(data, (bytes, bytearray, memoryview, array.array, np.ndarray)):
        return data
    return bytes(data)


def image_to_rgb(msg) -> np.ndarray:
    """An Image (rgb8, bgr8, rgba8, bgra8, mono8) as HxWx3 uint8 RGB.

    rgb8 returns a view of the message buffer; the others need one pass to reorder
    or expand channels (cv2, a fraction of a millisecond at VGA).
    """
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageConversionError(f"colour image has encoding {msg.encoding!r}; the colour topic must be one of "
                                   f"{', '.join(COLOR_ENCODINGS)}")
    arr = image_to_array(msg)
    if msg.encoding == "rgb8":
        return arr
    if arr.size == 0:  # cv2 refuses empty input; the caller's validation reports the empty image
        return np.zeros((*arr.shape[:2], 3), np.uint8)
    import cv2

    code = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
            "mono8": cv2.COLOR_GRAY2RGB}[msg.encoding]
    return cv2.cvtColor(arr, code)


def image_to_depth(msg) -> np.ndarray:
    """A depth Image as HxW float32 metres: 16UC1 is millimetres (0 = no measurement), 32FC1 metres (a view)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(f"depth image has encoding {msg.encoding!r}; the depth topic must be 16UC1 "
                                   "(millimetres) or 32FC1 (metres)")
    arr = image_to_array(msg)
    if msg.encoding == "16UC1":
        return np.multiply(arr, np.float32(1e-3), dtype=np.float32)
    return arr


def array_to_image(arr: np.ndarray, encoding: str, header=None, step: int | None = None):
    """An Image message from an array already in ``encoding``'s layout (rows padded to ``step`` if given)."""
    from sensor_msgs.msg import Image

    if encoding not in ENCODINGS:
        raise ImageConversionError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise ImageConversionError(f"{encoding} needs {channels} channel(s), got an array of shape {arr.shape}")
    h, w = arr.shape[:2]
    row_bytes = w * channels * dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ImageConversionError(f"step {step} is smaller than a row ({row_bytes} bytes)")
    raw = np.ascontiguousarray(arr, dtype=dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype)
    if step != row_bytes:
        padded = np.zeros((h, step), np.uint8)
        padded[:, :row_bytes] = raw.view(np.uint8).reshape(h, row_bytes)
        raw = padded
    # check_fields=True is what makes the data setter keep our array.array as it is; without it (rclpy's
    # default) the setter copies it element by element: 1.4 ms of a VGA frame's 1.5 ms
    msg = Image(check_fields=True)
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding, msg.step = h, w, encoding, step
    msg.is_bigendian = 0
    data = array.array("B")  # array.array: rclpy takes it as is (bytes would be re-validated)
    data.frombytes(np.ascontiguousarray(raw).view(np.uint8).reshape(-1))  # one copy; tobytes() made two (1 ms at VGA)
    msg.data = data
    return msg


def rgb_to_image(rgb: np.ndarray, header=None, encoding: str = "rgb8"):
    """An HxWx3 RGB array as an Image in any colour encoding (for publishing and tests)."""
    import cv2

    rgb = np.asarray(rgb, dtype=np.uint8)
    if encoding == "rgb8":
        arr = rgb
    else:
        code = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
                "mono8": cv2.COLOR_RGB2GRAY}.get(encoding)
        if code is None:
            raise ImageConversionError(f"{encoding!r} is not a colour encoding; "
                                       f"use one of {', '.join(COLOR_ENCODINGS)}")
        arr = cv2.cvtColor(np.ascontiguousarray(rgb), code)
    return array_to_image(arr, encoding, header)


def depth_to_image(depth_m: np.ndarray, header=None, encoding: str = "16UC1"):
    """Depth in metres as a 16UC1 (millimetres, rounded; invalid -> 0) or 32FC1 (metres) Image."""
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if encoding == "16UC1":
        mm = np.where(np.isfinite(depth_m) & (depth_m > 0), np.rint(depth_m * 1000.0), 0)
        return array_to_image(np.clip(mm, 0, 65535).astype(np.uint16), encoding, header)
    if encoding == "32FC1":
        return array_to_image(depth_m, encoding, header)
    raise ImageConversionError(f"{encoding!r} is not a depth encoding; use 16UC1 or 32FC1")


# --------------------------------------------------------------------------- camera info


def camera_info_to_K(msg) -> tuple[np.ndarray, tuple[int, int]]:
    """(K 3x3 float64, (width, height)) from a CameraInfo."""
    return np.asarray(msg.k, dtype=np.float64).reshape(3, 3).copy(), (int(msg.width), int(msg.height))


def K_to_camera_info(K, width: int, height: int, header=None):
    """A CameraInfo for a distortion-free pinhole camera (rectified images, as the pose node expects)."""
    from sensor_msgs.msg import CameraInfo

    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = K.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = P.reshape(-1).tolist()
    return msg


# --------------------------------------------------------------------------- poses


def pose_to_msg(R, t):
    """geometry_msgs/Pose from R, t (metres)."""
    from geometry_msgs.msg import Point, Pose, Quaternion

    q = matrix_to_quat(R)
    t = np.asarray(t, dtype=float).reshape(3)
    return Pose(position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


# How far a received quaternion's norm may be from 1 (float32 round trips, hand-written publishers) before the
# pose is refused as malformed; within it the quaternion is normalised.
QUAT_NORM_TOL = 1e-2


def msg_to_pose(pose) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) from a geometry_msgs/Pose; ValueError for a non-finite pose or a quaternion that is not unit."""
    o, p = pose.orientation, pose.position
    q = np.array([o.x, o.y, o.z, o.w], dtype=float)
    t = np.array([p.x, p.y, p.z], dtype=float)
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
        raise ValueError(f"pose has NaN or inf values (q {q.tolist()}, t {t.tolist()})")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUAT_NORM_TOL:
        raise ValueError(f"orientation quaternion has norm {norm:.4f}, not 1: the publisher must send unit "
                         "quaternions (x, y, z, w)")
    return quat_to_matrix(q / norm), t


def object_pose_to_detection(pose, obj: ObjectModel, header):
    """vision_msgs/Detection3D for one ObjectPose: id ``<name>_<k>``, one result, bbox from the model box."""
    from vision_msgs.msg import BoundingBox3D, Detection3D, ObjectHypothesisWithPose

    det = Detection3D()
    det.header = header
    det.id = detection_id(pose.name, pose.instance)
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = pose.name
    hyp.hypothesis.score = float(pose.score)
    hyp.pose.pose = pose_to_msg(pose.R, pose.t)
    det.results = [hyp]
    Rb, tb, size = detection_box(obj, pose.R, pose.t)
    bbox = BoundingBox3D()
    bbox.center = pose_to_msg(Rb, tb)
    bbox.size.x, bbox.size.y, bbox.size.z = (float(v) for v in size)
    det.bbox = bbox
    return det


def poses_to_detection_array(poses, catalogue: Catalogue, header):
    """Detection3DArray with the image's header (an empty array still says "frame processed")."""
    from vision_msgs.msg import Detection3DArray

    msg = Detection3DArray()
    msg.header = header
    msg.detections = [object_pose_to_detection(p, catalogue[p.name], header) for p in poses]
    return msg


def detection_array_to_list(msg, invalid: list | None = None) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(class_id, R, t, score) per detection, from each detection's best-scoring result.

    Detections with a malformed pose (non-finite, non-unit quaternion) are skipped; ``invalid``, when
    given, receives ``(detection id, why)`` for each.
    """
    out = []
    for det in msg.detections:
        if not det.results:
            continue
        best = max(det.results, key=lambda r: r.hypothesis.score if math.isfinite(r.hypothesis.score) else -math.inf)
        try:
            R, t = msg_to_pose(best.pose.pose)
        except ValueError as exc:
            if invalid is not None:
                invalid.append((det.id or best.hypothesis.class_id, str(exc)))
            continue
        out.append((best.hypothesis.class_id, R, t, float(best.hypothesis.score)))
    return out


# --------------------------------------------------------------------------- TF


def object_frame_id(name: str, instance: int) -> str:
    """TF child frame of an object instance: ``<name>_<k>`` (the same string as Detection3D.id)."""
    return detection_id(name, instance)


def grasp_frame_id(name: str, instance: int, grasp: str) -> str:
    """TF frame of a grasp frame: ``<name>_<k>_grasp_<grasp>``, child of the object frame."""
    return f"{object_frame_id(name, instance)}{GRASP_SEPARATOR}{grasp}"


def transform_msg(header, child: str, R, t):
    """geometry_msgs/TransformStamped parent (header.frame_id) -> child."""
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header = header
    msg.child_frame_id = child
    p = pose_to_msg(R, t)
    msg.transform.translation.x = p.position.x
    msg.transform.translation.y = p.position.y
    msg.transform.translation.z = p.position.z
    msg.transform.rotation = p.orientation
    return msg


def pose_transforms(poses, catalogue: Catalogue, header, grasp_frames: str = "selected") -> list:
    """TF for each pose: camera optical frame -> ``<name>_<k>``, and ``<name>_<k>`` -> its grasp frame(s).

    ``grasp_frames``: "selected" (the pose's grasp_frame only), "all" (every catalogue grasp frame) or "none".
    Grasp frames hang below the object frame (their definition is in object coordinates), so the
    camera -> grasp transform is the chain camera -> object -> grasp.
    """
    from std_msgs.msg import Header

    out = []
    for p in poses:
        child = object_frame_id(p.name, p.instance)
        out.append(transform_msg(header, child, p.R, p.t))
        obj = catalogue[p.name]
        if grasp_frames == "all":
            names = list(obj.grasp_frames)
        elif grasp_frames == "selected" and p.grasp_frame:
            names = [p.grasp_frame]
        else:
            names = []
        for g in names:
            if g not in obj.grasp_frames:
                continue
            T = obj.grasp_frames[g].T
            out.append(transform_msg(Header(stamp=header.stamp, frame_id=child), grasp_frame_id(p.name, p.instance, g),
                                     T[:3, :3], T[:3, 3]))
    return out


# --------------------------------------------------------------------------- markers

_BOX_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]


def _colour(i: int) -> tuple[float, float, float]:
    """A stable distinct colour per class id (tab10)."""
    tab10 = [(0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.4, 0.74),
             (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5), (0.74, 0.74, 0.13), (0.09, 0.75, 0.81)]
    return tab10[i % len(tab10)]


def pose_markers(poses, catalogue: Catalogue, header, ns: str = "vfm_pose"):
    """MarkerArray: DELETEALL first (stale markers vanish), then per pose a box (LINE_LIST), axes and a label."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    out = MarkerArray()
    clear = Marker()
    clear.header = header
    clear.action = Marker.DELETEALL
    out.markers.append(clear)
    for i, p in enumerate(poses):
        obj = catalogue[p.name]
        r, g, b = _colour(obj.class_id)
        pose = pose_to_msg(p.R, p.t)
        label = f"{object_frame_id(p.name, p.instance)} {p.score:.2f}"

        box = Marker(header=header, ns=f"{ns}/boxes", id=i, type=Marker.LINE_LIST, action=Marker.ADD, pose=pose)
        box.scale.x = max(obj.diameter * 0.01, 0.002)
        box.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
        corners = obj.box_corners()
        box.points = [Point(x=float(c[0]), y=float(c[1]), z=float(c[2])) for e in _BOX_EDGES for c in corners[list(e)]]
        out.markers.append(box)

        axes = Marker(header=header, ns=f"{ns}/axes", id=i, type=Marker.LINE_LIST, action=Marker.ADD, pose=pose)
        axes.scale.x = box.scale.x
        length = 0.5 * obj.diameter
        for k in range(3):
            tip = [0.0, 0.0, 0.0]
            tip[k] = length
            axes.points += [Point(), Point(x=tip[0], y=tip[1], z=tip[2])]
            col = ColorRGBA(r=float(k == 0), g=float(k == 1), b=float(k == 2), a=1.0)
            axes.colors += [col, col]
        out.markers.append(axes)

        text = Marker(header=header, ns=f"{ns}/labels", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        top = p.R @ obj.bbox_center + np.asarray(p.t) - 0.6 * obj.bbox_size.max() * p.R[:, 1]  # above: -y is up
        text.pose.position = Point(x=float(top[0]), y=float(top[1]), z=float(top[2]))
        text.pose.orientation.w = 1.0
        text.scale.z = max(0.15 * obj.diameter, 0.01)
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = label
        out.markers.append(text)
    return out


# --------------------------------------------------------------------------- debug image


def draw_debug_image(rgb: np.ndarray, K, poses, catalogue: Catalogue) -> np.ndarray:
    """A copy of ``rgb`` with each pose's projected model box, axes, predicted keypoints and label (cv2)."""
    import cv2

    from ..core.transforms import project, transform_points

    img = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    K = np.asarray(K, dtype=float)
    thick = max(1, img.shape[1] // 320)
    for p in poses:
        obj = catalogue[p.name]
        colour = tuple(int(255 * c) for c in _colour(obj.class_id))
        corners = transform_points(p.R, p.t, obj.box_corners())
        if np.all(corners[:, 2] > 1e-3):
            uv = np.round(project(K, corners)).astype(np.int32)
            for a, b in _BOX_EDGES:
                cv2.line(img, tuple(map(int, uv[a])), tuple(map(int, uv[b])), colour, thick, cv2.LINE_AA)
        axes = np.vstack([np.zeros(3), np.eye(3) * 0.5 * obj.diameter])
        axes_cam = transform_points(p.R, p.t, axes)
        if np.all(axes_cam[:, 2] > 1e-3):
            uv = np.round(project(K, axes_cam)).astype(np.int32)
            for k, col in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
                cv2.line(img, tuple(map(int, uv[0])), tuple(map(int, uv[k + 1])), col, thick, cv2.LINE_AA)
            cv2.putText(img, f"{object_frame_id(p.name, p.instance)} {p.score:.2f}",
                        (int(uv[0, 0]) + 4, int(uv[0, 1]) - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, colour, thick,
                        cv2.LINE_AA)
        if p.keypoints_2d is not None:
            for u, v in np.asarray(p.keypoints_2d, dtype=float).reshape(-1, 2):
                if np.isfinite(u) and np.isfinite(v):
                    cv2.circle(img, (int(round(u)), int(round(v))), 2 * thick + 1, (255, 255, 0), -1, cv2.LINE_AA)
    return img


__all__ = [
    "ENCODINGS", "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "ImageConversionError", "stamp_to_ns", "ns_to_stamp",
    "make_header", "image_to_array", "image_to_rgb", "image_to_depth", "array_to_image", "rgb_to_image",
    "depth_to_image", "camera_info_to_K", "K_to_camera_info", "pose_to_msg", "msg_to_pose",
    "object_pose_to_detection", "poses_to_detection_array", "detection_array_to_list", "object_frame_id",
    "grasp_frame_id", "transform_msg", "pose_transforms", "pose_markers", "draw_debug_image",
]
