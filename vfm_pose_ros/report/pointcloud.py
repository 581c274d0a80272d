"""The point-cloud figure: the coloured cloud from depth with ground-truth and predicted 3D boxes, one view per
backend, rendered by Open3D's offscreen renderer in a child process (a renderer that cannot start aborts its
process, which Python cannot catch), or by a matplotlib 3D scatter when that fails."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..core.catalogue import Catalogue
from ..core.transforms import depth_to_points, transform_points
from .figure_style import (
    BOX_EDGES,
    GT_COLOR,
    NO_OPEN3D_ENV,
    PRED_COLOR,
    FrameView,
    _legend_handles,
    _plt,
    _save,
)


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
    vfm_pose_ros.report.pointcloud`` (see :func:`_render_child`).
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
        cmd = [sys.executable, "-m", "vfm_pose_ros.report.pointcloud", str(inp), str(Path(tmp) / "view")]
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


if __name__ == "__main__":  # the Open3D child process of render_open3d
    if len(sys.argv) != 3:
        print("usage: python -m vfm_pose_ros.report.pointcloud SCENE.npz OUT_PREFIX", file=sys.stderr)
        sys.exit(2)
    sys.exit(_render_child(sys.argv[1], sys.argv[2]))
