"""How an object pose becomes a 3D detection box, independent of any message library.

``vision_msgs/Detection3D`` carries both the object pose (``results[i].pose``) and a
box (``bbox.center``, ``bbox.size``). The box is the object's axis-aligned model box,
so its centre is the model-box centre carried by the object pose (it differs from the
object origin whenever the mesh is not centred). Both the rosbag writer
(``vfm_pose_ros.data.rosbag``) and the ROS nodes (``vfm_pose_ros.ros.convert``) build
their messages from these functions, so a box means the same thing everywhere.
"""
from __future__ import annotations

import numpy as np

from .catalogue import ObjectModel


def detection_box(obj: ObjectModel, R, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pose and size of ``obj``'s model box in the camera frame: ``(center_R, center_t, size)``, metres.

    The box is axis-aligned in the object frame, so its orientation is the object's;
    its centre is the model-box centre mapped by ``(R, t)``.
    """
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    return R.copy(), R @ obj.bbox_center + t, np.asarray(obj.bbox_size, dtype=np.float64).copy()


def pose_from_box(obj: ObjectModel, center_R, center_t) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`detection_box`: the object pose ``(R, t)`` from its box centre pose."""
    R = np.asarray(center_R, dtype=np.float64).reshape(3, 3)
    return R.copy(), np.asarray(center_t, dtype=np.float64).reshape(3) - R @ obj.bbox_center


def detection_id(name: str, instance: int) -> str:
    """``Detection3D.id`` of the ``instance``-th (0-based) instance of object ``name`` in a frame."""
    return f"{name}_{int(instance)}"


def instance_indices(names) -> list[int]:
    """k for each entry of ``names``: how many earlier entries share its name (0 for the first)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        out.append(seen.get(n, 0))
        seen[n] = out[-1] + 1
    return out


def box_iou(a, b) -> float:
    """Intersection over union of two image boxes [x0, y0, x1, y1] (0 when both are empty)."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0
