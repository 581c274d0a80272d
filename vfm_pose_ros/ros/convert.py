"""rclpy bindings of the message codec, plus what only the pose node publishes: TF, markers, a debug image.

The codec (:mod:`vfm_pose_ros.data.messages`) reads and builds every message layout the package shares
with bags; here its builders are bound to rclpy's generated classes (:data:`RCLPY`), under the names the
nodes import. Decoders are the codec's own (they read fields only). Images decode to zero-copy numpy
views of the message buffer where the encoding allows it; depth leaves in metres.

Message packages (sensor_msgs, vision_msgs, ...) are imported when a message of theirs is first built,
so the image helpers work before the package's interfaces are built.
"""
from __future__ import annotations

import array
import importlib

import numpy as np

from ..core.catalogue import Catalogue, ObjectModel
from ..core.detections import detection_id
from ..data import messages as codec
from ..data.messages import (  # re-exported (__all__): the nodes, bench and tests import them from here
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    ENCODINGS,
    QUAT_NORM_TOL,
    ImageConversionError,
    camera_info_to_K,
    detection_array_to_list,
    image_to_array,
    image_to_depth,
    image_to_rgb,
    msg_to_pose,
    stamp_to_ns,
)

# Grasp frame TF child names: "<object frame>_grasp_<grasp name>" (no '/', which some TF tools mishandle).
GRASP_SEPARATOR = "_grasp_"


class RclpyFactory:
    """The codec's message factory for rclpy's generated classes ("sensor_msgs/msg/Image" -> sensor_msgs.msg.Image).

    ``check_fields``: rclpy checks every field's type on assignment, so a builder that passes a wrong type
    fails at once (the tests use it); off (rclpy's default) in the nodes, where the checks cost more than the
    building. A message with a byte buffer is always built checked: only then does rclpy keep the
    ``array.array`` as it is (unchecked, it copies it: 0.1 ms of a VGA image). Float arrays go in as
    ``array.array('d')``, which rclpy takes for fixed and unbounded arrays alike without a per-element pass.
    """

    def __init__(self, check_fields: bool = False):
        self.check_fields = check_fields
        self._classes: dict[str, type] = {}

    def message_class(self, msgtype: str) -> type:
        cls = self._classes.get(msgtype)
        if cls is None:
            package, kind, name = msgtype.split("/")
            cls = self._classes[msgtype] = getattr(importlib.import_module(f"{package}.{kind}"), name)
        return cls

    def new(self, msgtype: str, **fields):
        cls = self.message_class(msgtype)
        if not any(isinstance(v, array.array) and v.typecode == "B" for v in fields.values()):
            return cls(check_fields=self.check_fields, **fields)
        msg = cls(check_fields=True)  # the constructor would copy the buffer; the checked setter keeps it
        for name, value in fields.items():
            setattr(msg, name, value)
        return msg

    def byte_sequence(self, raw: np.ndarray):
        data = array.array("B")
        data.frombytes(np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1))  # one copy; tobytes() made two
        return data

    def float_sequence(self, values):
        data = array.array("d")
        data.frombytes(np.ascontiguousarray(values, dtype=np.float64).reshape(-1).view(np.uint8))
        return data


RCLPY = RclpyFactory()


# --------------------------------------------------------------------------- codec builders bound to rclpy


def ns_to_stamp(ns: int):
    return codec.ns_to_stamp(RCLPY, ns)


def make_header(stamp_ns: int, frame_id: str):
    return codec.make_header(RCLPY, stamp_ns, frame_id)


def array_to_image(arr: np.ndarray, encoding: str, header=None, step: int | None = None):
    """An Image message from an array already in ``encoding``'s layout (rows padded to ``step`` if given)."""
    return codec.array_to_image(RCLPY, arr, encoding, header, step)


def rgb_to_image(rgb: np.ndarray, header=None, encoding: str = "rgb8"):
    """An HxWx3 RGB array as an Image in any colour encoding (for publishing and tests)."""
    return codec.rgb_to_image(RCLPY, rgb, header, encoding)


def depth_to_image(depth_m: np.ndarray, header=None, encoding: str = "16UC1"):
    """Depth in metres as a 16UC1 (millimetres, rounded; invalid -> 0) or 32FC1 (metres) Image."""
    return codec.depth_to_image(RCLPY, depth_m, header, encoding)


def K_to_camera_info(K, width: int, height: int, header=None):
    """A CameraInfo for a distortion-free pinhole camera (rectified images, as the pose node expects)."""
    return codec.K_to_camera_info(RCLPY, K, width, height, header)


def pose_to_msg(R, t):
    """geometry_msgs/Pose from R, t (metres)."""
    return codec.pose_to_msg(RCLPY, R, t)


def object_pose_to_detection(pose, obj: ObjectModel, header):
    """vision_msgs/Detection3D for one ObjectPose: id ``<name>_<k>``, one result, bbox from the model box."""
    return codec.detection_msg(RCLPY, header, obj, pose.instance, pose.R, pose.t, pose.score)


def poses_to_detection_array(poses, catalogue: Catalogue, header):
    """Detection3DArray with the image's header (an empty array still says "frame processed")."""
    return codec.detection_array_msg(RCLPY, header, [object_pose_to_detection(p, catalogue[p.name], header)
                                                     for p in poses])


def transform_msg(header, child: str, R, t):
    """geometry_msgs/TransformStamped parent (header.frame_id) -> child."""
    return codec.transform_msg(RCLPY, header, child, R, t)


# --------------------------------------------------------------------------- TF


def object_frame_id(name: str, instance: int) -> str:
    """TF child frame of an object instance: ``<name>_<k>`` (the same string as Detection3D.id)."""
    return detection_id(name, instance)


def grasp_frame_id(name: str, instance: int, grasp: str) -> str:
    """TF frame of a grasp frame: ``<name>_<k>_grasp_<grasp>``, child of the object frame."""
    return f"{object_frame_id(name, instance)}{GRASP_SEPARATOR}{grasp}"


def pose_transforms(poses, catalogue: Catalogue, header, grasp_frames: str = "selected") -> list:
    """TF for each pose: camera optical frame -> ``<name>_<k>``, and ``<name>_<k>`` -> its grasp frame(s).

    ``grasp_frames``: "selected" (the pose's grasp_frame only), "all" (every catalogue grasp frame) or "none".
    Grasp frames hang below the object frame (their definition is in object coordinates), so the
    camera -> grasp transform is the chain camera -> object -> grasp.
    """
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
            out.append(transform_msg(RCLPY.new("std_msgs/msg/Header", stamp=header.stamp, frame_id=child),
                                     grasp_frame_id(p.name, p.instance, g),
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
    "ENCODINGS", "COLOR_ENCODINGS", "DEPTH_ENCODINGS", "QUAT_NORM_TOL", "ImageConversionError", "RclpyFactory",
    "RCLPY", "stamp_to_ns", "ns_to_stamp", "make_header", "image_to_array", "image_to_rgb", "image_to_depth",
    "array_to_image", "rgb_to_image", "depth_to_image", "camera_info_to_K", "K_to_camera_info", "pose_to_msg",
    "msg_to_pose", "object_pose_to_detection", "poses_to_detection_array", "detection_array_to_list",
    "object_frame_id", "grasp_frame_id", "transform_msg", "pose_transforms", "pose_markers", "draw_debug_image",
]
