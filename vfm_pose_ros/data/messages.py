"""The message codec: ROS messages <-> numpy and the package's types, for every message implementation.

One place knows the message layouts the package reads and writes (images, depth, camera info, stamps
and headers, poses, Detection3DArray, TF), as bop_toolkit's ``inout`` knows every BOP file format:

* **Decoders** read fields only, so they take any object with the right fields: rclpy's generated
  classes (the nodes) and rosbags typestore messages (bags) alike.
* **Builders** take a :class:`MessageFactory` as their first argument, which makes the messages of one
  implementation by ROS type name: :class:`TypestoreFactory` here (rosbags, no ROS needed), and
  ``vfm_pose_ros.ros.convert.RCLPY`` for rclpy's classes. ``ros.convert`` binds these functions to
  rclpy; ``data.rosbag`` to its typestore.

Images decode to zero-copy views of the message buffer where the encoding allows it (rows padded by
``step`` and big-endian data are honoured). Depth leaves here in metres (16UC1 millimetres are scaled),
the package-wide unit. This module imports no rclpy and no ROS message package
(test/test_import_layers.py holds it to that), so bags are read and written without ROS.
"""
from __future__ import annotations

import array
import math
import sys
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from ..core.catalogue import ObjectModel
from ..core.detections import detection_box, detection_id
from ..core.transforms import matrix_to_quat, quat_to_matrix

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

# How far a received quaternion's norm may be from 1 (float32 round trips, hand-written publishers) before the
# pose is refused as malformed; within it the quaternion is normalised.
QUAT_NORM_TOL = 1e-2

# 16UC1 holds at most 65535 mm; farther depth is written as 0 (no measurement), not as a false 65.5 m
MAX_DEPTH_16UC1_MM = 65535


class ImageConversionError(ValueError):
    """An Image message that cannot be decoded; ``reason`` is the validation reason code the pose node counts:
    ``bad_encoding`` (unsupported or wrong-topic encoding), ``bad_step`` (width, height, step and data
    disagree) or ``empty_image`` (no data)."""

    def __init__(self, message: str, reason: str = "bad_encoding"):
        super().__init__(message)
        self.reason = reason


class MessageFactory(Protocol):
    """Makes messages of one implementation: the builders below never name a message class."""

    def new(self, msgtype: str, **fields):
        """A message of ROS type ``msgtype`` ("sensor_msgs/msg/Image") with ``fields`` set."""

    def byte_sequence(self, raw: np.ndarray):
        """The value of a ``uint8[]`` field holding the bytes of the contiguous uint8 array ``raw``."""

    def float_sequence(self, values):
        """The value of a ``float64[]`` or ``float64[N]`` field holding ``values``."""


class TypestoreFactory:
    """Messages of a rosbags typestore (dataclasses that need every field; arrays are numpy)."""

    def __init__(self, store):
        self.store = store

    def new(self, msgtype: str, **fields):
        return self.store.types[msgtype](**fields)

    def byte_sequence(self, raw: np.ndarray):
        return np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)

    def float_sequence(self, values):
        return np.asarray(values, dtype=np.float64).reshape(-1)


# --------------------------------------------------------------------------- stamps and headers


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(factory: MessageFactory, ns: int):
    return factory.new("builtin_interfaces/msg/Time", sec=int(ns) // 1_000_000_000, nanosec=int(ns) % 1_000_000_000)


def make_header(factory: MessageFactory, stamp_ns: int, frame_id: str):
    return factory.new("std_msgs/msg/Header", stamp=ns_to_stamp(factory, stamp_ns), frame_id=frame_id)


def _header_or_default(factory: MessageFactory, header):
    """The given header, or the zero header a message class would default to (rosbags has no defaults)."""
    return header if header is not None else make_header(factory, 0, "")


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
    big = bool(msg.is_bigendian) and dtype.itemsize > 1
    dt = dtype.newbyteorder(">" if big else "<") if dtype.itemsize > 1 else dtype
    shape = (h, w, channels) if channels > 1 else (h, w)
    strides = (step, channels * dt.itemsize, dt.itemsize) if channels > 1 else (step, dt.itemsize)
    arr = np.ndarray(shape=shape, dtype=dt, buffer=_buffer(msg.data), strides=strides)
    if dt.byteorder not in ("=", "|") and dt.byteorder != ("<" if sys.byteorder == "little" else ">"):
        arr = arr.astype(dtype)  # byte swap: the one conversion that must copy
    return arr


def _buffer(data):
    """A buffer-protocol object over message data (array.array in rclpy, numpy in rosbags, bytes/list elsewhere)."""
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
        # times float32(1e-3), as data.bop.read_depth does: the same metres everywhere
        return np.multiply(arr, np.float32(1e-3), dtype=np.float32)
    return arr


def array_to_image(factory: MessageFactory, arr: np.ndarray, encoding: str, header=None, step: int | None = None):
    """An Image message from an array already in ``encoding``'s layout (rows padded to ``step`` if given)."""
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
    return factory.new("sensor_msgs/msg/Image", header=_header_or_default(factory, header), height=int(h),
                       width=int(w), encoding=encoding, is_bigendian=0, step=step,
                       data=factory.byte_sequence(np.ascontiguousarray(raw).view(np.uint8).reshape(-1)))


def rgb_to_image(factory: MessageFactory, rgb: np.ndarray, header=None, encoding: str = "rgb8"):
    """An HxWx3 RGB array as an Image in any colour encoding."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    if encoding == "rgb8":
        arr = rgb
    else:
        import cv2

        code = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
                "mono8": cv2.COLOR_RGB2GRAY}.get(encoding)
        if code is None:
            raise ImageConversionError(f"{encoding!r} is not a colour encoding; "
                                       f"use one of {', '.join(COLOR_ENCODINGS)}")
        arr = cv2.cvtColor(np.ascontiguousarray(rgb), code)
    return array_to_image(factory, arr, encoding, header)


def depth_to_image(factory: MessageFactory, depth_m: np.ndarray, header=None, encoding: str = "16UC1"):
    """Depth in metres as a 16UC1 (millimetres, rounded) or 32FC1 (metres) Image.

    16UC1 writes 0 (no measurement) for NaN, inf, zero, negative and beyond 65.535 m.
    """
    depth_m = np.asarray(depth_m, dtype=np.float32)
    if encoding == "16UC1":
        mm = np.rint(depth_m * np.float32(1000.0))  # float32: a tenth of the time of float64 at VGA
        mm[~((mm > 0) & (mm <= MAX_DEPTH_16UC1_MM))] = 0  # NaN compares False: no measurement too
        return array_to_image(factory, mm.astype(np.uint16), encoding, header)
    if encoding == "32FC1":
        return array_to_image(factory, depth_m, encoding, header)
    raise ImageConversionError(f"{encoding!r} is not a depth encoding; use 16UC1 or 32FC1")


# --------------------------------------------------------------------------- camera info


def camera_info_to_K(msg) -> tuple[np.ndarray, tuple[int, int]]:
    """(K 3x3 float64, (width, height)) from a CameraInfo."""
    return np.asarray(msg.k, dtype=np.float64).reshape(3, 3).copy(), (int(msg.width), int(msg.height))


def K_to_camera_info(factory: MessageFactory, K, width: int, height: int, header=None):
    """A CameraInfo for a distortion-free pinhole camera (rectified images): D = 0, R = I, P = [K|0]."""
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    roi = factory.new("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0,
                      do_rectify=False)
    return factory.new("sensor_msgs/msg/CameraInfo", header=_header_or_default(factory, header),
                       height=int(height), width=int(width), distortion_model="plumb_bob",
                       d=factory.float_sequence(np.zeros(5)), k=factory.float_sequence(K),
                       r=factory.float_sequence(np.eye(3)), p=factory.float_sequence(np.hstack([K, np.zeros((3, 1))])),
                       binning_x=0, binning_y=0, roi=roi)


# --------------------------------------------------------------------------- poses


def _xyz(factory: MessageFactory, msgtype: str, v):
    x, y, z = (float(c) for c in np.asarray(v, dtype=np.float64).reshape(3))
    return factory.new(msgtype, x=x, y=y, z=z)


def _quaternion(factory: MessageFactory, q_xyzw):
    x, y, z, w = (float(c) for c in np.asarray(q_xyzw, dtype=np.float64).reshape(4))
    return factory.new("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w)


def pose_to_msg(factory: MessageFactory, R, t):
    """geometry_msgs/Pose from R, t (metres); the quaternion has w >= 0."""
    return factory.new("geometry_msgs/msg/Pose", position=_xyz(factory, "geometry_msgs/msg/Point", t),
                       orientation=_quaternion(factory, matrix_to_quat(R)))


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


# --------------------------------------------------------------------------- detections


def detection_msg(factory: MessageFactory, header, obj: ObjectModel, instance: int, R, t, score: float):
    """vision_msgs/Detection3D of one object instance: id ``<name>_<k>``, one result, bbox from the model box."""
    hypothesis = factory.new("vision_msgs/msg/ObjectHypothesisWithPose",
                             hypothesis=factory.new("vision_msgs/msg/ObjectHypothesis", class_id=obj.name,
                                                    score=float(score)),
                             pose=factory.new("geometry_msgs/msg/PoseWithCovariance", pose=pose_to_msg(factory, R, t),
                                              covariance=factory.float_sequence(np.zeros(36))))
    box_R, box_t, size = detection_box(obj, R, t)
    bbox = factory.new("vision_msgs/msg/BoundingBox3D", center=pose_to_msg(factory, box_R, box_t),
                       size=_xyz(factory, "geometry_msgs/msg/Vector3", size))
    return factory.new("vision_msgs/msg/Detection3D", header=header, results=[hypothesis], bbox=bbox,
                       id=detection_id(obj.name, instance))


def detection_array_msg(factory: MessageFactory, header, detections: Iterable):
    """Detection3DArray with the image's header (an empty array still says "frame processed")."""
    return factory.new("vision_msgs/msg/Detection3DArray", header=header, detections=list(detections))


def best_result(det) -> tuple[str, np.ndarray, np.ndarray, float]:
    """(class_id, R, t, score) of a Detection3D's best-scoring result (NaN scores rank last).

    IndexError when it has no result; ValueError when that result's pose is malformed.
    """
    best = _best_hypothesis(det)
    R, t = msg_to_pose(best.pose.pose)
    return best.hypothesis.class_id, R, t, float(best.hypothesis.score)


def _best_hypothesis(det):
    if not det.results:
        raise IndexError("detection has no result")
    return max(det.results, key=lambda r: r.hypothesis.score if math.isfinite(r.hypothesis.score) else -math.inf)


def detection_array_to_list(msg, invalid: list | None = None) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(class_id, R, t, score) per detection, from each detection's best-scoring result.

    Detections without results are skipped; so are those with a malformed pose (non-finite, non-unit
    quaternion), and ``invalid``, when given, receives ``(detection id or class_id, why)`` for each.
    """
    out = []
    for det in msg.detections:
        if not det.results:
            continue
        try:
            out.append(best_result(det))
        except ValueError as exc:
            if invalid is not None:
                invalid.append((det.id or _best_hypothesis(det).hypothesis.class_id, str(exc)))
    return out


# --------------------------------------------------------------------------- TF


def transform_stamped(factory: MessageFactory, header, child: str, t, q_xyzw):
    """geometry_msgs/TransformStamped parent (header.frame_id) -> child from a translation and a quaternion."""
    transform = factory.new("geometry_msgs/msg/Transform", translation=_xyz(factory, "geometry_msgs/msg/Vector3", t),
                            rotation=_quaternion(factory, q_xyzw))
    return factory.new("geometry_msgs/msg/TransformStamped", header=header, child_frame_id=child, transform=transform)


def transform_msg(factory: MessageFactory, header, child: str, R, t):
    """geometry_msgs/TransformStamped parent (header.frame_id) -> child from R, t."""
    return transform_stamped(factory, header, child, t, matrix_to_quat(R))


def tf_message(factory: MessageFactory, transforms: Iterable):
    return factory.new("tf2_msgs/msg/TFMessage", transforms=list(transforms))
