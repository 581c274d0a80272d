"""The data that flows between layers: one camera frame in, object poses out.

Every estimator takes a :class:`Frame` and returns a list of :class:`ObjectPose` (a :class:`Prediction`);
nodes, the CLI and the evaluator speak only these types.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One camera frame: what an estimator needs, nothing ROS-specific."""

    rgb: np.ndarray  # HxWx3 uint8, RGB order
    K: np.ndarray  # 3x3 float64 intrinsics
    depth: np.ndarray | None = None  # HxW float32 metres, 0 = no measurement
    prompt: str | None = None  # text naming the object(s) and grasp, e.g. "the driller by the handle"
    stamp_ns: int = 0
    frame_id: str = "camera_color_optical_frame"
    boxes_2d: dict[str, np.ndarray] | None = None  # optional external detections: name -> [x0, y0, x1, y1]

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


@dataclass
class ObjectPose:
    """One estimated object instance. R, t map object -> camera optical frame, metres."""

    name: str
    R: np.ndarray  # 3x3
    t: np.ndarray  # (3,) metres
    score: float = 1.0
    instance: int = 0  # k-th instance of this object in the frame
    grasp_frame: str | None = None  # name of the selected catalogue grasp frame
    keypoints_2d: np.ndarray | None = None  # Kx2 pixels (predicted)
    box_2d: np.ndarray | None = None  # [x0, y0, x1, y1] pixels
    mask: np.ndarray | None = None  # HxW bool
    icp_fitness: float | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    raw_score: float | None = None  # the estimator's own score once ``score`` is calibrated (core.score_calibration)

    @property
    def T(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.R
        T[:3, 3] = self.t
        return T


class Prediction(list):
    """One frame's poses, with the stage times (ms) of the call that made them.

    A list, so code that only wants the poses reads an estimator's answer as before; the times ride on the
    answer rather than on the estimator because they exist also when nothing was found (no pose to carry
    them), and an estimator shared by threads has no single "last call".
    """

    def __init__(self, poses=(), timings_ms: dict[str, float] | None = None):
        super().__init__(poses)
        self.timings_ms: dict[str, float] = dict(timings_ms or {})


@dataclass
class GroundTruthPose:
    """A ground-truth instance as stored in BOP scene_gt.json, converted to metres."""

    obj_id: int
    name: str
    R: np.ndarray
    t: np.ndarray  # metres
    visib_fract: float = 1.0
    mask: np.ndarray | None = None  # HxW bool (visible mask) when available
    bbox_visib: np.ndarray | None = None  # [x, y, w, h] pixels, BOP style
    bbox_obj: np.ndarray | None = None  # [x, y, w, h] pixels of the whole (unoccluded) object, BOP style
    gt_id: int = -1  # index in the image's scene_gt.json list (BOP mask files are named {im_id}_{gt_id}.png)
