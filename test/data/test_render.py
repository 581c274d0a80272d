"""The CPU renderer: exact metric depth, masks that match the projected model, correct occlusion."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vfm_pose_ros.core.catalogue import Catalogue, ObjectModel, load_mesh
from vfm_pose_ros.core.transforms import depth_to_points, project, transform_points
from vfm_pose_ros.data.render import Light, Plane, Renderer
from vfm_pose_ros.data.scenes import LMO_K
from vfm_pose_ros.paths import default_catalogue_dir

W, H = 640, 480
SHARED = Path(os.environ.get("VFM_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
LMO_DRILLER = SHARED / "lmo_models" / "models" / "obj_000008.ply"


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


@pytest.fixture(scope="module")
def renderer():
    return Renderer(W, H, LMO_K)


def _pose(euler_deg, t):
    return Rotation.from_euler("xyz", euler_deg, degrees=True).as_matrix(), np.asarray(t, dtype=float)


def _surface_distance(obj, R, t, pts):
    """Distance of camera-frame points to the posed mesh surface (Open3D's exact point-to-triangle distance)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(transform_points(R, t, obj.vertices).astype(np.float32), obj.faces.astype(np.uint32))
    return scene.compute_distance(o3d.core.Tensor(np.asarray(pts, dtype=np.float32))).numpy()


def _projected_mask(obj, R, t):
    """Reference mask: every face of the posed model projected and filled with cv2.fillPoly (sub-pixel)."""
    import cv2

    uv = project(LMO_K, transform_points(R, t, obj.vertices))
    shift = 4
    polys = np.round(uv[obj.faces] * (1 << shift)).astype(np.int32)
    mask = np.zeros((H, W), np.uint8)
    for tri in polys:  # one call per face: fillPoly on many polygons at once fills overlaps even-odd
        cv2.fillConvexPoly(mask, tri, 1, lineType=cv2.LINE_8, shift=shift)
    return mask.astype(bool)


def _raycast(obj, R, t):
    """Independent reference: Open3D (Embree) rays through every pixel centre; hit mask and z depth."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(transform_points(R, t, obj.vertices).astype(np.float32), obj.faces.astype(np.uint32))
    v, u = np.mgrid[0:H, 0:W]
    d = np.stack([(u - LMO_K[0, 2]) / LMO_K[0, 0], (v - LMO_K[1, 2]) / LMO_K[1, 1], np.ones_like(u, float)], -1)
    rays = np.concatenate([np.zeros_like(d), d], axis=-1).reshape(-1, 6).astype(np.float32)
    t_hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().reshape(H, W)  # z = t_hit since d_z = 1
    hit = np.isfinite(t_hit)
    return hit, np.where(hit, t_hit, 0.0)


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _check_mask(mask, obj, R, t):
    """Mask against two references: Open3D ray casting through pixel centres (the renderer's convention), and
    cv2's filled projected faces, which also fill pixels an edge merely touches (a one-pixel rim)."""
    import cv2

    hit, _ = _raycast(obj, R, t)
    assert _iou(mask, hit) >= 0.999
    filled = _projected_mask(obj, R, t)
    assert _iou(mask, filled) >= 0.95
    assert (mask & ~filled).sum() <= 0.002 * mask.sum()
    rim = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert (filled & ~rim).sum() <= 0.002 * mask.sum()


@pytest.mark.parametrize("name,pose", [
    ("driller_like", ((-100, 10, -30), (0.02, -0.01, 0.7))),
    ("driller_like", ((20, 140, 75), (-0.05, 0.03, 1.1))),
    ("can_like", ((-70, 0, 0), (0.0, 0.0, 0.55))),
])
def test_depth_is_metric_and_on_the_posed_surface(catalogue, renderer, name, pose):
    obj = catalogue[name]
    R, t = _pose(*pose)
    res = renderer.render([(obj, R, t)])
    mask = res.masks_visib[0]
    assert mask.sum() > 2000
    assert (res.depth[~mask] == 0).all(), "background must have depth 0"
    pts = depth_to_points(res.depth, LMO_K, mask)
    dist = _surface_distance(obj, R, t, pts[:: max(1, len(pts) // 3000)])
    assert np.median(dist) < 1e-3
    assert np.percentile(dist, 99) < 1e-4  # exact up to float32 storage, not just on average
    # the nearest surface: depth is never behind the front-most mesh point along the ray
    assert res.depth[mask].min() >= transform_points(R, t, obj.vertices)[:, 2].min() - 1e-6


@pytest.mark.skipif(not LMO_DRILLER.is_file(), reason=f"LM-O models not found at {LMO_DRILLER} (set VFM_SHARED_DATA)")
def test_depth_and_mask_for_a_real_bop_mesh(renderer):
    v, f, c = load_mesh(LMO_DRILLER, unit="mm")
    obj = ObjectModel("driller", 8, v, f, c)
    R, t = _pose((-90, 30, 10), (0.0, 0.0, 0.8))
    res = renderer.render([(obj, R, t)])
    mask = res.masks_visib[0]
    pts = depth_to_points(res.depth, LMO_K, mask)
    dist = _surface_distance(obj, R, t, pts[:: max(1, len(pts) // 2000)])
    assert np.median(dist) < 1e-3
    _check_mask(res.masks_full[0], obj, R, t)


@pytest.mark.parametrize("name", ["driller_like", "can_like"])
def test_mask_matches_projected_model(catalogue, renderer, name):
    obj = catalogue[name]
    R, t = _pose((35, -60, 10), (0.03, 0.02, 0.6))
    res = renderer.render([(obj, R, t)])
    _check_mask(res.masks_full[0], obj, R, t)
    hit, z = _raycast(obj, R, t)
    both = hit & res.masks_full[0]
    assert np.abs(res.depth[both] - z[both]).max() < 1e-5
    assert (res.masks_full[0] == res.masks_visib[0]).all()
    assert res.visib_fract == [1.0]
    # the procedural meshes are wound outwards, so back-face culling changes nothing
    culled = Renderer(W, H, LMO_K, cull_backfaces=True).render([(obj, R, t)])
    assert np.array_equal(culled.depth, res.depth) and np.array_equal(culled.rgb, res.rgb)


def test_occlusion_order_and_visible_fractions(catalogue, renderer):
    drill, can = catalogue["driller_like"], catalogue["can_like"]
    Rd, td = _pose((-90, 0, 0), (0.0, 0.0, 0.9))
    Rc, tc = _pose((-90, 0, 0), (0.02, 0.0, 0.6))  # nearer, in front of the drill's middle
    res = renderer.render([(drill, Rd, td), (can, Rc, tc)])
    alone = renderer.render([(drill, Rd, td)])
    overlap = res.masks_full[0] & res.masks_full[1]
    assert overlap.sum() > 500
    assert not (res.masks_visib[0] & res.masks_visib[1]).any()
    assert res.masks_visib[1][overlap].all(), "the nearer can must win where both project"
    assert not res.masks_visib[0][overlap].any()
    assert (res.masks_full[0] == alone.masks_full[0]).all(), "the full mask ignores occluders"
    assert np.isclose(res.visib_fract[0], res.masks_visib[0].sum() / res.masks_full[0].sum())
    assert 0.0 < res.visib_fract[0] < 1.0 and res.visib_fract[1] == 1.0
    assert (res.depth[overlap] < 0.7).all()
    assert (res.labels[res.masks_visib[0]] == 0).all() and (res.labels[res.masks_visib[1]] == 1).all()
    # the list order does not decide visibility, depth does
    swapped = renderer.render([(can, Rc, tc), (drill, Rd, td)])
    assert (swapped.masks_visib[0] == res.masks_visib[1]).all()
    assert np.array_equal(swapped.depth, res.depth)


def test_object_out_of_view_is_invisible(catalogue, renderer):
    R, t = _pose((0, 0, 0), (5.0, 0.0, 0.8))
    res = renderer.render([(catalogue["can_like"], R, t)])
    assert res.visib_fract == [0.0]
    assert not res.masks_full[0].any() and not res.depth.any()


def test_plane_depth_background_and_shading(catalogue, renderer):
    # a table 1 m below... in front: the plane z = 1.5 facing the camera
    tex = np.zeros((4, 4, 3), np.uint8)
    tex[..., 1] = 200
    plane = Plane(normal=np.array([0, 0, 1.0]), origin=np.array([0, 0, 1.5]), axes=np.eye(3)[:2], texture=tex,
                  max_depth=3.0)
    bg = np.full((H, W, 3), 77, np.uint8)
    light = Light(direction=(0, 0, -1), intensity=0.5, ambient=0.5)
    res = renderer.render([], background=bg, light=light, plane=plane)
    assert np.allclose(res.depth, 1.5)
    assert (res.rgb[..., 1] == 200).all() and (res.rgb[..., 0] == 0).all()  # full light on a facing plane
    far = Plane(normal=np.array([0, 0, 1.0]), origin=np.array([0, 0, 5.0]), axes=np.eye(3)[:2], texture=tex)
    res = renderer.render([], background=bg, plane=far)
    assert (res.depth == 0).all() and (res.rgb == 77).all(), "beyond max_depth the background shows"


def test_lambertian_shading(catalogue, renderer):
    can = catalogue["can_like"]
    R, t = _pose((180, 0, 0), (0.0, 0.0, 0.6))  # lid (grey 160,160,168) facing the camera
    flat = renderer.render([(can, R, t)], light=Light(intensity=0.0, ambient=1.0))
    c = flat.rgb[240, 325]
    assert tuple(c) == (160, 160, 168)
    lit = renderer.render([(can, R, t)], light=Light(direction=(0, 0, -1), intensity=0.5, ambient=0.2))
    assert abs(int(lit.rgb[240, 325, 0]) - round(160 * 0.7)) <= 1
    grazing = renderer.render([(can, R, t)], light=Light(direction=(1, 0, 0), intensity=0.5, ambient=0.2))
    assert abs(int(grazing.rgb[240, 325, 0]) - round(160 * 0.2)) <= 1
