"""Figures of the comparison report, written as PNG (the paper's Figures 3 to 5, plus error plots).

* :func:`pose_panel`: per backend, one row per frame: RGB | ground truth box (green) |
  predicted box (red) | overlay of both (boxes and projected model points) | 2D keypoints.
* :func:`pointcloud_figure`: the coloured point cloud from depth with ground-truth and
  predicted 3D boxes, one view per backend, rendered by Open3D's offscreen renderer on
  the CPU (Filament; Vulkan via Mesa llvmpipe or EGL). Open3D runs in a child process
  because a renderer that cannot start aborts its process (a C++ abort Python cannot
  catch); when it fails, a matplotlib 3D scatter is drawn instead and its title says so.
* :func:`multi_object_figure`: one scene with every object's boxes, backends side by side.
* :func:`error_figure`: cumulative ADD(-S) accuracy vs threshold (with the 0.1 d lines)
  and histograms of rotation and translation errors, all backends on the same axes.

Figures have fixed pixel sizes (``figsize * dpi``; no tight bounding box) so that
reports look alike from run to run. Everything here draws; nothing computes metrics. This module holds the
2D overlays; the point cloud is in ``pointcloud``, the error plots in ``error_plots`` and the shared style in
``figure_style``, all importable from here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.catalogue import Catalogue
from ..core.transforms import project_object, transform_points
from ..core.types import GroundTruthPose, ObjectPose
from .error_plots import ErrorSamples, error_figure, training_curves  # noqa: F401  (importable from here)
from .figure_style import (  # noqa: F401  (importable from here)
    BOX_EDGES,
    GT_COLOR,
    NO_OPEN3D_ENV,
    PRED_COLOR,
    FrameView,
    _legend_handles,
    _plt,
    _save,
    backend_color,
)
from .pointcloud import pointcloud_figure, render_open3d  # noqa: F401

# ----------------------------------------------------------------------------- 2D drawing helpers

def _projected(K, R, t, pts_obj) -> np.ndarray | None:
    """Pixels of object points, or None when any point lies at or behind the camera plane."""
    cam = transform_points(R, t, pts_obj)
    if np.any(cam[:, 2] <= 1e-6):
        return None
    return project_object(K, R, t, pts_obj)


def draw_box(ax, K, R, t, corners_obj, color, lw: float = 2.0, label: str | None = None,
             label_at: str = "top") -> bool:
    """The 12 edges of a projected 3D box; returns False when it is behind the camera.

    ``label_at`` top or bottom: ground truth labels go above the box, predictions below,
    so the two rarely cover each other.
    """
    uv = _projected(K, R, t, corners_obj)
    if uv is None:
        return False
    for i, j in BOX_EDGES:
        ax.plot(uv[[i, j], 0], uv[[i, j], 1], color=color, lw=lw, solid_capstyle="round")
    if label:
        top = label_at == "top"
        k = np.argmin(uv[:, 1]) if top else np.argmax(uv[:, 1])
        ax.annotate(label, (uv[k, 0], uv[k, 1]), xytext=(0, 3 if top else -3), textcoords="offset points",
                    color="white", fontsize=9, ha="center", va="bottom" if top else "top", annotation_clip=True,
                    bbox=dict(facecolor=color, alpha=0.75, pad=1.5, edgecolor="none"))
    return True


def crop_window(view: FrameView, catalogue: Catalogue, backends=None, margin: float = 0.3,
                min_width: float = 200.0) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): the image region holding every box of the view, with a margin, at the image's aspect.

    Objects are often small in a 640x480 frame; zooming on them makes the boxes readable.
    One window per frame, shared by all panels of that frame so that they compare.
    """
    h, w = view.rgb.shape[:2]
    pts = []
    items = [(g.name, g.R, g.t) for g in view.gts]
    for b, poses in view.predictions.items():
        if backends is None or b in backends:
            items += [(p.name, p.R, p.t) for p in poses]
    for name, R, t in items:
        if name in catalogue:
            uv = _projected(view.K, R, t, catalogue[name].box_corners())
            if uv is not None:
                pts.append(np.clip(uv, [0, 0], [w, h]))
    if not pts:
        return 0.0, 0.0, float(w), float(h)
    uv = np.vstack(pts)
    (x0, y0), (x1, y1) = uv.min(axis=0), uv.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bw = max((x1 - x0) * (1 + 2 * margin), (y1 - y0) * (1 + 2 * margin) * w / h, min_width)
    bw = min(bw, float(w))
    bh = bw * h / w
    x0 = float(np.clip(cx - bw / 2, 0, w - bw))
    y0 = float(np.clip(cy - bh / 2, 0, h - bh))
    return x0, y0, x0 + bw, y0 + bh


def _show_image(ax, rgb, title: str | None = None, window=None) -> None:
    ax.imshow(rgb)
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = window or (0, 0, w, h)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)


def _gt_for(pose: ObjectPose, gts: list[GroundTruthPose]) -> GroundTruthPose | None:
    """The ground truth of the same object nearest to a prediction (for keypoint error lines)."""
    same = [g for g in gts if g.name == pose.name]
    if not same:
        return None
    return min(same, key=lambda g: float(np.linalg.norm(np.asarray(g.t) - np.asarray(pose.t))))


def _draw_gts(ax, view: FrameView, catalogue: Catalogue, label: bool) -> None:
    for g in view.gts:
        if g.name in catalogue:
            draw_box(ax, view.K, g.R, g.t, catalogue[g.name].box_corners(), GT_COLOR,
                     label=g.name if label else None)


def _draw_preds(ax, view: FrameView, poses: list[ObjectPose], catalogue: Catalogue, label: bool) -> None:
    for p in poses:
        if p.name in catalogue:
            draw_box(ax, view.K, p.R, p.t, catalogue[p.name].box_corners(), PRED_COLOR,
                     label=p.name if label else None, label_at="bottom")


def silhouette(K, R, t, model, shape: tuple[int, int]) -> np.ndarray | None:
    """HxW bool mask of the model's projection (its triangles filled with cv2.fillPoly); None behind the camera.

    Without faces, the projected vertices are drawn as dots instead.
    """
    import cv2

    uv = _projected(K, R, t, model.vertices)
    if uv is None:
        return None
    mask = np.zeros(shape, np.uint8)
    pix = np.round(uv).astype(np.int32)
    if model.faces is not None and len(model.faces):
        # one triangle at a time: cv2.fillPoly given many polygons leaves some overlaps unfilled (even-odd)
        for tri in pix[np.asarray(model.faces)]:
            cv2.fillConvexPoly(mask, tri, 1)
    else:
        inside = (pix[:, 0] >= 0) & (pix[:, 0] < shape[1]) & (pix[:, 1] >= 0) & (pix[:, 1] < shape[0])
        mask[pix[inside, 1], pix[inside, 0]] = 1
    return mask.astype(bool)


def _draw_silhouette(ax, view: FrameView, R, t, model, color, alpha: float = 0.45) -> None:
    mask = silhouette(view.K, R, t, model, view.rgb.shape[:2])
    if mask is not None:
        rgba = np.zeros(mask.shape + (4,), np.float32)
        rgba[mask] = (*color, alpha)
        ax.imshow(rgba, interpolation="nearest")


# ----------------------------------------------------------------------------- (a) Figure 3 panel

def pose_panel(path, views: list[FrameView], backend: str, catalogue: Catalogue, dpi: int = 100,
               zoom: bool = True, keypoints_3d: dict[str, np.ndarray] | None = None) -> Path:
    """The paper's Figure 3 for one backend: a row per frame, five columns (zoomed on the objects).

    ``keypoints_3d`` (name -> Kx3, object frame): the 3D keypoints behind the backend's
    ``keypoints_2d`` (e.g. the DINOv2 estimator's ``keypoints``), so the ground truth's keypoints
    can be drawn beside the predicted ones; without them the catalogue's keypoints are used
    and no error lines are drawn for predicted keypoints (their 3D points are unknown).
    """
    plt = _plt()
    if not views:
        raise ValueError("pose_panel needs at least one frame")
    rows = len(views)
    fig, axes = plt.subplots(rows, 5, figsize=(17, 2.75 * rows + 1.1), dpi=dpi, squeeze=False)
    kp_from_pose = False
    for r, view in enumerate(views):
        preds = view.predictions.get(backend, [])
        win = crop_window(view, catalogue, [backend]) if zoom else None
        a_rgb, a_gt, a_pr, a_ov, a_kp = axes[r]
        first = r == 0
        _show_image(a_rgb, view.rgb, "RGB" if first else None, win)
        a_rgb.set_ylabel(view.title, fontsize=11)
        _show_image(a_gt, view.rgb, "ground truth" if first else None, win)
        _draw_gts(a_gt, view, catalogue, label=True)
        _show_image(a_pr, view.rgb, "prediction" if first else None, win)
        _draw_preds(a_pr, view, preds, catalogue, label=True)
        if not preds:
            a_pr.text(0.5, 0.5, "no detection", transform=a_pr.transAxes, ha="center", va="center",
                      color="white", fontsize=12, bbox=dict(facecolor=PRED_COLOR, alpha=0.8))
        _show_image(a_ov, view.rgb, "overlay (boxes, silhouettes)" if first else None, win)
        for g in view.gts:
            if g.name in catalogue:
                _draw_silhouette(a_ov, view, g.R, g.t, catalogue[g.name], GT_COLOR)
        for p in preds:
            if p.name in catalogue:
                _draw_silhouette(a_ov, view, p.R, p.t, catalogue[p.name], PRED_COLOR)
        _draw_gts(a_ov, view, catalogue, label=False)
        _draw_preds(a_ov, view, preds, catalogue, label=False)
        _show_image(a_kp, view.rgb, None, win)
        kp_from_pose |= _draw_keypoints(a_kp, view, preds, catalogue, keypoints_3d)
    axes[0, 4].set_title("2D keypoints" + (" (from pose)" if kp_from_pose else ""))
    note = ("; keypoints: green o ground truth, red x predicted"
            + (" (projected from the predicted pose: this backend predicts none)" if kp_from_pose else ""))
    fig.suptitle(f"{backend}: ground truth (green) vs prediction (red)")
    fig.text(0.5, 1 - 0.42 / (2.75 * rows + 1.1), "boxes: projected 3D bounding boxes" + note, ha="center",
             va="top", fontsize=10, color="0.3")
    fig.subplots_adjust(left=0.03, right=0.995, top=1 - 0.9 / (2.75 * rows + 1.1), bottom=0.01,
                        wspace=0.03, hspace=0.06)
    return _save(fig, path)


def _draw_keypoints(ax, view: FrameView, preds: list[ObjectPose], catalogue: Catalogue,
                    keypoints_3d: dict[str, np.ndarray] | None = None) -> bool:
    """Predicted 2D keypoints (red x), the ground truth's projected keypoints (green o) and error lines.

    Returns True when some keypoints had to be projected from the predicted pose (a
    backend, like CLIP's direct regression, that predicts no keypoints).
    """
    def ref3d(name):
        if keypoints_3d is not None and name in keypoints_3d:
            return np.asarray(keypoints_3d[name], dtype=float), True
        return catalogue[name].keypoints, False

    from_pose = False
    for g in view.gts:
        if g.name in catalogue:
            uv = _projected(view.K, g.R, g.t, ref3d(g.name)[0])
            if uv is not None:
                ax.scatter(uv[:, 0], uv[:, 1], s=36, facecolors="none", edgecolors=[GT_COLOR], linewidths=1.5)
    for p in preds:
        if p.name not in catalogue:
            continue
        pts3d, known = ref3d(p.name)
        kp = p.keypoints_2d
        if kp is None:
            kp = _projected(view.K, p.R, p.t, pts3d)
            from_pose = known = True
            if kp is None:
                continue
        kp = np.asarray(kp, dtype=float)
        ax.scatter(kp[:, 0], kp[:, 1], s=30, marker="x", color=PRED_COLOR, linewidths=1.8)
        g = _gt_for(p, view.gts)
        if g is not None and known:
            ref = _projected(view.K, g.R, g.t, pts3d)
            if ref is not None and len(ref) == len(kp):
                for a, b in zip(ref, kp):
                    ax.plot([a[0], b[0]], [a[1], b[1]], color="yellow", lw=0.9, alpha=0.9)
    return from_pose


# ----------------------------------------------------------------------------- (c) multi-object scene

def multi_object_figure(path, view: FrameView, backends: list[str], catalogue: Catalogue, dpi: int = 100,
                        zoom: bool = True) -> Path:
    """Every object's ground-truth and predicted boxes in one scene, one panel per backend."""
    plt = _plt()
    win = crop_window(view, catalogue, backends, min_width=320.0) if zoom else None
    n = max(1, len(backends))
    fig, axes = plt.subplots(1, n, figsize=(6.6 * n, 5.6), dpi=dpi, squeeze=False)
    for ax, b in zip(axes[0], backends):
        preds = view.predictions.get(b, [])
        found = len({p.name for p in preds} & {g.name for g in view.gts})
        _show_image(ax, view.rgb, f"{b}: {len(preds)} predicted, {found}/{len(view.gts)} objects found", win)
        _draw_gts(ax, view, catalogue, label=True)
        _draw_preds(ax, view, preds, catalogue, label=True)
    names = ", ".join(sorted({g.name for g in view.gts}))
    fig.suptitle(f"multi-object scene ({view.title}): {len(view.gts)} objects: {names}")
    fig.legend(handles=_legend_handles(), loc="lower center", ncol=2, frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.07, wspace=0.03)
    return _save(fig, path)
