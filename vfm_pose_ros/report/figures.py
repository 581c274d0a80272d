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
reports look alike from run to run. Everything here draws; nothing computes metrics.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.catalogue import Catalogue
from ..core.transforms import depth_to_points, project_object, transform_points
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


def _legend_handles():
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=GT_COLOR, lw=3, label="ground truth"),
            Line2D([], [], color=PRED_COLOR, lw=3, label="prediction")]


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


# ----------------------------------------------------------------------------- (b) point cloud with boxes

def _cloud(view: FrameView, stride: int, center, radius: float, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points within ``radius`` of ``center`` and their RGB colours (0..1), from the depth image."""
    depth = np.asarray(view.depth, dtype=np.float32)
    pts = depth_to_points(depth, view.K, stride=stride)
    d = depth[::stride, ::stride]
    valid = np.isfinite(d) & (d > 0)  # the same selection and order as depth_to_points
    cols = view.rgb[::stride, ::stride][valid].astype(np.float64) / 255.0
    keep = np.linalg.norm(pts - center, axis=1) <= radius  # the objects and some context around them
    pts, cols = pts[keep], cols[keep]
    if len(pts) > max_points:
        idx = np.random.default_rng(0).choice(len(pts), max_points, replace=False)
        pts, cols = pts[idx], cols[idx]
    return pts, cols


def _scene_boxes(view: FrameView, backend: str, catalogue: Catalogue):
    """(corners_cam 8x3, rgb colour) for the ground truth and one backend's predictions."""
    out = []
    for g in view.gts:
        if g.name in catalogue:
            out.append((transform_points(g.R, g.t, catalogue[g.name].box_corners()), GT_COLOR))
    for p in view.predictions.get(backend, []):
        if p.name in catalogue:
            out.append((transform_points(p.R, p.t, catalogue[p.name].box_corners()), PRED_COLOR))
    return out


def _focus(view: FrameView, catalogue: Catalogue) -> tuple[np.ndarray, float]:
    """Centre and radius of the region holding the ground-truth objects (where the camera looks)."""
    centres = [np.asarray(g.t, float) for g in view.gts]
    diam = [catalogue[g.name].diameter for g in view.gts if g.name in catalogue] or [0.2]
    if not centres:
        centres = [np.array([0.0, 0.0, 0.8])]
    c = np.mean(centres, axis=0)
    spread = max(float(np.linalg.norm(x - c)) for x in centres)
    return c, spread + 1.2 * max(diam)


def _orbit_eye(center: np.ndarray, azimuth_deg: float, elevation_deg: float, zoom: float) -> np.ndarray:
    """A viewpoint orbiting the focus: the real camera's, turned about the image 'up' axis and tilted."""
    from scipy.spatial.transform import Rotation

    v = -center  # from the focus back to the real camera (the camera frame's origin)
    rot = Rotation.from_euler("y", azimuth_deg, degrees=True) * Rotation.from_euler("x", -elevation_deg, degrees=True)
    return center + zoom * rot.apply(v)


def pointcloud_figure(path, view: FrameView, backends: list[str], catalogue: Catalogue, dpi: int = 100,
                      renderer: str = "auto", stride: int = 1, max_points: int = 250_000,
                      azimuth_deg: float = 30.0, elevation_deg: float = 20.0) -> tuple[Path, str]:
    """Point cloud + 3D boxes per backend; returns (path, renderer used: 'open3d' or 'matplotlib (why)')."""
    if view.depth is None:
        raise ValueError("pointcloud_figure needs a frame with depth")
    center, radius = _focus(view, catalogue)
    pts, cols = _cloud(view, stride, center, radius, max_points)
    zoom = min(1.0, 4.0 * radius / max(float(np.linalg.norm(center)), 1e-6))  # nearer only for far-away objects
    eye = _orbit_eye(center, azimuth_deg, elevation_deg, zoom=zoom)
    boxes = {b: _scene_boxes(view, b, catalogue) for b in backends}
    images, used = None, "matplotlib"
    if renderer in ("auto", "open3d") and os.environ.get(NO_OPEN3D_ENV, "") not in ("1", "true", "yes"):
        images, why = render_open3d(pts, cols, [boxes[b] for b in backends], center, eye)
        used = "open3d" if images is not None else f"matplotlib (Open3D offscreen failed: {why})"
        if images is None and renderer == "open3d":
            raise RuntimeError(f"Open3D offscreen rendering failed: {why}")
    elif renderer not in ("auto", "open3d", "matplotlib"):
        raise ValueError(f"renderer must be auto, open3d or matplotlib; got {renderer!r}")
    else:
        used = "matplotlib (Open3D disabled)" if renderer != "matplotlib" else "matplotlib"

    plt = _plt()
    n = max(1, len(backends))
    fig = plt.figure(figsize=(6.6 * n, 5.6), dpi=dpi)
    for k, b in enumerate(backends):
        if images is not None:
            ax = fig.add_subplot(1, n, k + 1)
            ax.imshow(images[k])
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax = fig.add_subplot(1, n, k + 1, projection="3d")
            _scatter3d(ax, pts, cols, boxes[b], center, radius, azimuth_deg, elevation_deg)
        ax.set_title(f"{b}: ground truth (green) vs prediction (red)")
    how = "Open3D offscreen (CPU)" if images is not None else used.replace("matplotlib", "matplotlib 3D scatter", 1)
    fig.suptitle(f"point cloud from depth with 3D boxes ({view.title}); rendered with {how}")
    fig.legend(handles=_legend_handles(), loc="lower center", ncol=2, frameon=False)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.07, wspace=0.03)
    return _save(fig, path), used


def _scatter3d(ax, pts, cols, boxes, center, radius, azimuth_deg, elevation_deg) -> None:
    """matplotlib fallback: the camera frame shown with 'up' = -y and depth going into the plot."""
    def m(p):  # camera (x right, y down, z forward) -> plot (x, z, -y)
        p = np.asarray(p)
        return p[..., 0], p[..., 2], -p[..., 1]

    sub = pts[:: max(1, len(pts) // 20_000)]
    csub = cols[:: max(1, len(cols) // 20_000)]
    x, y, z = m(sub)
    ax.scatter(x, y, z, c=csub, s=1.5, depthshade=False, linewidths=0)
    for corners, color in boxes:
        for i, j in BOX_EDGES:
            xs, ys, zs = m(corners[[i, j]])
            ax.plot(xs, ys, zs, color=color, lw=2)
    cx, cy, cz = m(center)
    r = 0.8 * radius
    ax.set_xlim(cx - r, cx + r)
    ax.set_ylim(cy - r, cy + r)
    ax.set_zlim(cz - r, cz + r)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=elevation_deg, azim=-90 + azimuth_deg)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("depth z (m)")
    ax.set_zlabel("up -y (m)")


def render_open3d(pts, cols, box_sets, center, eye, width: int = 640, height: int = 480,
                  timeout_s: float = 180.0) -> tuple[list[np.ndarray] | None, str]:
    """Render one image per box set with Open3D's OffscreenRenderer, in a child process.

    Returns (images, "") or (None, reason). The child is ``python -m
    vfm_pose_ros.report.figures`` (see :func:`_render_child`).
    """
    with tempfile.TemporaryDirectory(prefix="vfm_o3d_") as tmp:
        inp = Path(tmp) / "scene.npz"
        arrays = dict(points=np.asarray(pts, np.float64), colors=np.asarray(cols, np.float64),
                      center=np.asarray(center, np.float64), eye=np.asarray(eye, np.float64),
                      size=np.array([width, height]), n_views=np.array(len(box_sets)))
        for k, boxes in enumerate(box_sets):
            arrays[f"boxes_{k}"] = np.array([c for c, _ in boxes], dtype=np.float64).reshape(-1, 8, 3)
            arrays[f"box_colors_{k}"] = np.array([col for _, col in boxes], dtype=np.float64).reshape(-1, 3)
        np.savez(inp, **arrays)
        cmd = [sys.executable, "-m", "vfm_pose_ros.report.figures", str(inp), str(Path(tmp) / "view")]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout_s:.0f} s"
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            return None, (lines[-1][:160] if lines else f"exit code {proc.returncode}")
        import matplotlib.image as mpimg

        try:
            return [mpimg.imread(Path(tmp) / f"view_{k}.png") for k in range(len(box_sets))], ""
        except (FileNotFoundError, OSError) as exc:
            return None, f"no image written ({exc})"


def _render_child(inp: str, out_prefix: str) -> int:
    """Child process of :func:`render_open3d`: Open3D Filament offscreen rendering to PNG files."""
    import open3d as o3d
    from open3d.visualization import rendering

    d = np.load(inp)
    width, height = (int(v) for v in d["size"])
    renderer = rendering.OffscreenRenderer(width, height)
    renderer.scene.view.set_post_processing(False)  # exact colours: no tone mapping of the unlit points
    renderer.scene.set_background([1.0, 1.0, 1.0, 1.0])
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(d["points"]))
    cloud.colors = o3d.utility.Vector3dVector(d["colors"])
    pmat = rendering.MaterialRecord()
    pmat.shader = "defaultUnlit"
    pmat.point_size = 2.0
    lmat = rendering.MaterialRecord()
    lmat.shader = "unlitLine"
    lmat.line_width = 3.0
    for k in range(int(d["n_views"])):
        renderer.scene.clear_geometry()
        renderer.scene.add_geometry("cloud", cloud, pmat)
        for j, (corners, color) in enumerate(zip(d[f"boxes_{k}"], d[f"box_colors_{k}"])):
            ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(corners), o3d.utility.Vector2iVector(BOX_EDGES))
            ls.paint_uniform_color(color)
            renderer.scene.add_geometry(f"box{j}", ls, lmat)
        renderer.setup_camera(45.0, d["center"], d["eye"], [0.0, -1.0, 0.0])  # optical frame: up is -y
        img = renderer.render_to_image()
        if not o3d.io.write_image(f"{out_prefix}_{k}.png", img):
            return 1
    return 0


# ----------------------------------------------------------------------------- (d) error distributions

@dataclass
class ErrorSamples:
    """Per ground-truth instance errors of one backend (missed instances: inf / nan)."""

    objects: list[str]
    add_s_mm: np.ndarray  # ADD for asymmetric objects, ADD-S for symmetric ones; inf when missed
    re_deg: np.ndarray  # nan when missed
    te_mm: np.ndarray  # nan when missed


def error_figure(path, samples: dict[str, ErrorSamples], diameters_mm: dict[str, float],
                 stats: dict[str, dict] | None = None, max_threshold_mm: float = 100.0, dpi: int = 100) -> Path:
    """Cumulative ADD(-S) accuracy (0 to max_threshold_mm) and error histograms for every backend.

    ``stats`` (backend -> the evaluator's overall report) supplies the numbers quoted in the
    legends, so the figure never disagrees with the table (nothing is recomputed here).
    """
    plt = _plt()
    fig, (a_cum, a_re, a_te) = plt.subplots(1, 3, figsize=(18, 5.4), dpi=dpi)
    thr = np.linspace(0.0, max_threshold_mm, 401)
    re_all = [s.re_deg[np.isfinite(s.re_deg)] for s in samples.values()]
    te_all = [s.te_mm[np.isfinite(s.te_mm)] for s in samples.values()]
    re_top = _hist_top(re_all, 180.0)
    te_top = _hist_top(te_all, None)
    for k, (b, s) in enumerate(samples.items()):
        color = backend_color(b, k)
        st = (stats or {}).get(b, {})
        e = np.asarray(s.add_s_mm, float)
        n = max(len(e), 1)
        acc = [(e < x).sum() / n for x in thr]  # strict, as the evaluator's accuracies
        a_cum.plot(thr, acc, color=color, lw=2.2,
                   label=f"{b}:{_fmt(' ADD(-S)-0.1d {:.2f},', st.get('add_s_01d_acc'))} n={len(e)}")
        re, te = re_all[k], te_all[k]
        a_re.hist(np.clip(re, 0, re_top), bins=36, range=(0, re_top), histtype="stepfilled", alpha=0.3, color=color)
        a_re.hist(np.clip(re, 0, re_top), bins=36, range=(0, re_top), histtype="step", lw=2, color=color,
                  label=f"{b}: {len(re)} matched{_fmt(', median {:.1f} deg', st.get('rot_err_median_deg'))}")
        a_te.hist(np.clip(te, 0, te_top), bins=40, range=(0, te_top), histtype="stepfilled", alpha=0.3, color=color)
        a_te.hist(np.clip(te, 0, te_top), bins=40, range=(0, te_top), histtype="step", lw=2, color=color,
                  label=f"{b}: {len(te)} matched{_fmt(', median {:.1f} mm', st.get('trans_err_median_mm'))}")
    for k, (name, d) in enumerate(sorted(diameters_mm.items())):
        x = 0.1 * d
        if x <= max_threshold_mm:
            a_cum.axvline(x, color="0.35", ls=(0, (4, 2 + 2 * k)), lw=1.3, label=f"0.1 d {name} ({x:.1f} mm)")
    a_cum.set_xlim(0, max_threshold_mm)
    a_cum.set_ylim(0, 1.02)
    a_cum.set_xlabel("threshold (mm)")
    a_cum.set_ylabel("fraction of instances with ADD(-S) < threshold")
    a_cum.set_title("cumulative ADD(-S) accuracy")
    a_cum.grid(alpha=0.3)
    a_cum.legend(loc="lower right")
    a_re.set_xlabel("rotation error (deg)" + (f" (last bin: >= {re_top:.0f})" if re_top < 180 else ""))
    a_re.set_ylabel("instances")
    a_re.set_title("rotation error")
    a_re.legend(loc="upper right")
    a_te.set_xlabel(f"translation error (mm) (last bin: >= {te_top:.0f})")
    a_te.set_ylabel("instances")
    a_te.set_title("translation error")
    a_te.legend(loc="upper right")
    fig.suptitle("error distributions (matched instances; missed ones count as failures in the curve)")
    fig.subplots_adjust(left=0.05, right=0.99, top=0.86, bottom=0.12, wspace=0.22)
    return _save(fig, path)


def _fmt(template: str, value, suffix: str = "") -> str:
    return "" if value is None else template.format(value) + suffix


def _hist_top(values: list[np.ndarray], cap: float | None) -> float:
    """Histogram range end: the 95th percentile over all backends (rounded up), so outliers share a last bin."""
    allv = np.concatenate([v for v in values if len(v)] or [np.zeros(1)])
    top = float(np.percentile(allv, 95)) * 1.15 if len(allv) else 1.0
    top = max(top, 1.0)
    mag = 10 ** np.floor(np.log10(top))
    top = float(np.ceil(top / mag) * mag)
    return min(top, cap) if cap else top


if __name__ == "__main__":  # the Open3D child process of render_open3d
    if len(sys.argv) != 3:
        print("usage: python -m vfm_pose_ros.report.figures SCENE.npz OUT_PREFIX", file=sys.stderr)
        sys.exit(2)
    sys.exit(_render_child(sys.argv[1], sys.argv[2]))


def training_curves(path, history: list[dict], title: str = "", dpi: int = 100) -> Path:
    """Learning curves from a training record: the training loss beside the loss on fresh augmentations of
    validation frames, and per object the validation ADD(-S)-0.1d and median rotation error, RGB-only
    (solid) and with the depth stage (dashed)."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=dpi)
    ax = axes[0]
    ax.plot(epochs, [h.get("loss", np.nan) for h in history], "-o", ms=3, label="training (fitted samples)")
    ax.plot(epochs, [(h.get("val_fresh") or {}).get("loss", np.nan) for h in history], "-o", ms=3,
            label="validation frames, fresh augmentation")
    ax.set(xlabel="epoch", ylabel="loss", title="loss", yscale="log")
    ax.legend(fontsize=8)
    names = sorted({n for h in history for key in ("val", "val_depth")
                    for n in ((h.get(key) or {}).get("objects") or {})})
    for name, color in zip(names, _FALLBACK_COLORS + list(BACKEND_COLORS.values())):
        for key, style, label in (("val", "-", "RGB"), ("val_depth", "--", "RGB-D")):
            obj = [((h.get(key) or {}).get("objects") or {}).get(name) or {} for h in history]
            if not any(obj):
                continue
            acc = [np.nan if o.get("add_s_01d_acc") is None else 100 * o["add_s_01d_acc"] for o in obj]
            rot = [np.nan if o.get("rot_err_median_deg") is None else o["rot_err_median_deg"] for o in obj]
            axes[1].plot(epochs, acc, style, color=color, marker="o", ms=3, label=f"{name} {label}")
            axes[2].plot(epochs, rot, style, color=color, marker="o", ms=3, label=f"{name} {label}")
    axes[1].set(xlabel="epoch", ylabel="%", title="validation ADD(-S) < 0.1 d", ylim=(0, 100))
    axes[2].set(xlabel="epoch", ylabel="degrees", title="validation median rotation error", ylim=(0, 180))
    for ax in axes[1:]:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
