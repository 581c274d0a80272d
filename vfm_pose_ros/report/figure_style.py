"""What every report figure shares: colours, the frame to draw (:class:`FrameView`), pyplot on Agg and a
saver that closes the figure."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.types import GroundTruthPose, ObjectPose

GT_COLOR = (0.0, 0.85, 0.0)
PRED_COLOR = (0.95, 0.1, 0.1)
# One colour per backend in plots that put backends on the same axes.
BACKEND_COLORS = {"clip": "#1f77b4", "dinov2": "#ff7f0e", "hybrid": "#2ca02c"}
_FALLBACK_COLORS = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf"]

# Edges of the box from catalogue.box_corners (corner index = 4*ix + 2*iy + iz): pairs differing in one bit.
BOX_EDGES = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)]

# Set to 1 to skip Open3D and draw the point-cloud figure with matplotlib.
NO_OPEN3D_ENV = "VFM_POSE_NO_OPEN3D"


@dataclass
class FrameView:
    """One frame to draw: image, intrinsics, ground truth and each backend's predictions."""

    rgb: np.ndarray  # HxWx3 uint8
    K: np.ndarray
    gts: list[GroundTruthPose]
    predictions: dict[str, list[ObjectPose]] = field(default_factory=dict)  # backend -> poses
    depth: np.ndarray | None = None  # HxW metres
    title: str = ""  # e.g. "scene 1, image 12"


def backend_color(name: str, index: int = 0) -> str:
    return BACKEND_COLORS.get(name, _FALLBACK_COLORS[index % len(_FALLBACK_COLORS)])


def _plt():
    """pyplot on the Agg backend (no display needed), with readable default fonts."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.titlesize": 15, "legend.fontsize": 10})
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, facecolor="white")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _legend_handles():
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=GT_COLOR, lw=3, label="ground truth"),
            Line2D([], [], color=PRED_COLOR, lw=3, label="prediction")]
