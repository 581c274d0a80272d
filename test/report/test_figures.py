"""Report figures from synthetic inputs: every PNG is written, decodes, has the designed pixel size and is not blank."""
from __future__ import annotations

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue, ObjectModel
from vfm_pose_ros.core.transforms import axis_angle_to_matrix, project_object
from vfm_pose_ros.core.types import GroundTruthPose, ObjectPose
from vfm_pose_ros.report import figures as F

trimesh = pytest.importorskip("trimesh")
mpimg = pytest.importorskip("matplotlib.image")

H, W = 120, 160
K = np.array([[150.0, 0.0, 79.5], [0.0, 150.0, 59.5], [0.0, 0.0, 1.0]])


def _catalogue() -> Catalogue:
    objs = []
    for cid, name, ext in ((1, "driller_like", (0.06, 0.12, 0.2)), (2, "can_like", (0.07, 0.07, 0.12))):
        box = trimesh.creation.box(extents=ext)
        objs.append(ObjectModel(name, cid, np.asarray(box.vertices), faces=np.asarray(box.faces)))
    return Catalogue(objs)


def _view(cat, rng, with_keypoints: bool) -> F.FrameView:
    """A plane of depth 1 m with two objects in front; 'predictions' are the ground truth perturbed."""
    rgb = rng.integers(60, 200, (H, W, 3), dtype=np.uint8)
    depth = np.full((H, W), 1.0, np.float32)
    depth[40:80, 50:110] = 0.75
    gts = [GroundTruthPose(1, "driller_like", axis_angle_to_matrix([0.3, 0.5, 0.1]), np.array([-0.08, 0.0, 0.8])),
           GroundTruthPose(2, "can_like", axis_angle_to_matrix([1.0, 0.0, 0.2]), np.array([0.1, 0.02, 0.75]))]
    preds = {}
    for b, noise in (("clip", 0.08), ("dinov2", 0.02)):
        poses = []
        for g in gts:
            kp = project_object(K, g.R, g.t, cat[g.name].keypoints) + 2.0 if with_keypoints and b == "dinov2" else None
            poses.append(ObjectPose(g.name, axis_angle_to_matrix(rng.normal(0, noise, 3)) @ g.R,
                                    g.t + rng.normal(0, noise / 5, 3), keypoints_2d=kp))
        preds[b] = poses
    return F.FrameView(rgb, K, gts, preds, depth=depth, title="scene 0, image 0")


def _check_png(path, size_px):
    assert path.is_file() and path.stat().st_size > 5_000
    img = mpimg.imread(path)
    assert img.shape[1] == size_px[0] and img.shape[0] == size_px[1], img.shape
    assert float(img[..., :3].std()) > 0.05  # something was drawn


def test_pose_panel_and_multi_object(tmp_path):
    cat = _catalogue()
    rng = np.random.default_rng(0)
    views = [_view(cat, rng, True), _view(cat, rng, False)]
    for b in ("clip", "dinov2"):
        kp3d = {o.name: o.keypoints for o in cat} if b == "dinov2" else None  # the points behind keypoints_2d
        p = F.pose_panel(tmp_path / f"panel_{b}.png", views, b, cat, dpi=50, keypoints_3d=kp3d)
        _check_png(p, (17 * 50, int(round((2.75 * 2 + 1.1) * 50))))
    p = F.multi_object_figure(tmp_path / "multi.png", views[0], ["clip", "dinov2"], cat, dpi=50)
    _check_png(p, (int(6.6 * 2 * 50), int(5.6 * 50)))


def test_crop_window_holds_every_box():
    cat = _catalogue()
    view = _view(cat, np.random.default_rng(1), False)
    x0, y0, x1, y1 = F.crop_window(view, cat, min_width=20)
    assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    assert abs((x1 - x0) / (y1 - y0) - W / H) < 1e-6  # the image's aspect
    for g in view.gts:
        uv = np.clip(project_object(K, g.R, g.t, cat[g.name].box_corners()), [0, 0], [W, H])
        assert np.all(uv[:, 0] >= x0 - 1e-9) and np.all(uv[:, 0] <= x1 + 1e-9)
        assert np.all(uv[:, 1] >= y0 - 1e-9) and np.all(uv[:, 1] <= y1 + 1e-9)


def test_silhouette_covers_projection():
    cat = _catalogue()
    g = _view(cat, np.random.default_rng(2), False).gts[0]
    mask = F.silhouette(K, g.R, g.t, cat[g.name], (H, W))
    c = np.round(project_object(K, g.R, g.t, cat[g.name].bbox_center[None])[0]).astype(int)
    assert mask[c[1], c[0]] and 0 < mask.sum() < H * W
    assert F.silhouette(K, g.R, -g.t, cat[g.name], (H, W)) is None  # behind the camera


def test_pointcloud_matplotlib_fallback(tmp_path):
    cat = _catalogue()
    view = _view(cat, np.random.default_rng(3), False)
    p, used = F.pointcloud_figure(tmp_path / "cloud.png", view, ["clip", "dinov2"], cat, dpi=50, renderer="matplotlib")
    assert used == "matplotlib"
    _check_png(p, (int(6.6 * 2 * 50), int(5.6 * 50)))


def test_pointcloud_fallback_when_open3d_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv(F.NO_OPEN3D_ENV, "1")
    cat = _catalogue()
    view = _view(cat, np.random.default_rng(3), False)
    _, used = F.pointcloud_figure(tmp_path / "cloud.png", view, ["clip"], cat, dpi=50)
    assert used.startswith("matplotlib") and "disabled" in used


def test_pointcloud_open3d_offscreen(tmp_path):
    """Open3D's Filament renderer on the CPU (Mesa llvmpipe): skipped only where Open3D cannot render."""
    pytest.importorskip("open3d")
    cat = _catalogue()
    view = _view(cat, np.random.default_rng(4), False)
    try:
        p, used = F.pointcloud_figure(tmp_path / "cloud.png", view, ["clip", "dinov2"], cat, dpi=50,
                                      renderer="open3d")
    except RuntimeError as exc:
        pytest.skip(f"Open3D offscreen rendering unavailable here: {exc}")
    assert used == "open3d"
    _check_png(p, (int(6.6 * 2 * 50), int(5.6 * 50)))
    img = mpimg.imread(p)[: int(0.85 * 5.6 * 50), :, :3]  # above the legend
    green = (img[..., 1] > 0.6) & (img[..., 0] < 0.3) & (img[..., 2] < 0.3)
    red = (img[..., 0] > 0.6) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    assert green.sum() > 20 and red.sum() > 20  # both kinds of box were rendered


def test_error_figure(tmp_path):
    rng = np.random.default_rng(5)
    n = 60
    samples = {
        "clip": F.ErrorSamples(["driller_like"] * n, np.r_[rng.gamma(2, 15, n - 5), [np.inf] * 5],
                               np.r_[rng.gamma(2, 5, n - 5), [np.nan] * 5],
                               np.r_[rng.gamma(2, 10, n - 5), [np.nan] * 5]),
        "dinov2": F.ErrorSamples(["driller_like"] * n, rng.gamma(2, 5, n), rng.gamma(2, 2, n), rng.gamma(2, 3, n)),
    }
    p = F.error_figure(tmp_path / "errors.png", samples, {"driller_like": 230.0},
                       stats={"clip": {"add_s_01d_acc": 0.4, "rot_err_median_deg": 8.0}}, dpi=50)
    _check_png(p, (18 * 50, int(5.4 * 50)))
    # all missed: the figure still draws (empty histograms)
    empty = {"clip": F.ErrorSamples(["a"] * 3, np.full(3, np.inf), np.full(3, np.nan), np.full(3, np.nan))}
    _check_png(F.error_figure(tmp_path / "e2.png", empty, {"a": 100.0}, dpi=50), (18 * 50, int(5.4 * 50)))
