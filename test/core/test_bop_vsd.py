"""VSD as BOP defines it (pose_error.vsd, visibility.py 'bop19'), on a scene rendered by the package's renderer.

The scene: a 100 x 100 x 20 mm plate facing the camera on the optical axis, its front face 490 mm away,
in front of a wall at 1 m. Pixel counts, distances and the errors below follow from the definition by hand.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from vfm_pose_ros.core import metrics as M
from vfm_pose_ros.core.catalogue import Catalogue, ObjectModel
from vfm_pose_ros.core.types import GroundTruthPose, ObjectPose
from vfm_pose_ros.data.render import DepthPatches, Renderer

W, H = 640, 480
FX = FY = 600.0
CX, CY = 320.3, 240.3  # off the pixel grid: no silhouette edge falls on a pixel centre
K = np.array([[FX, 0.0, CX], [0.0, FY, CY], [0.0, 0.0, 1.0]])
HALF, THICK = 0.05, 0.02
PLATE_V = np.array([[x, y, z] for x in (-HALF, HALF) for y in (-HALF, HALF) for z in (-THICK / 2, THICK / 2)])
PLATE_F = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
PLATE = ObjectModel("plate", 1, PLATE_V, faces=PLATE_F)
DIAM = math.sqrt((2 * HALF) ** 2 * 2 + THICK**2)  # 142.8 mm
I3 = np.eye(3)
T_GT = np.array([0.0, 0.0, 0.5])
PUSH = 0.02  # 20 mm along the viewing ray through the plate's centre (the optical axis)
WALL = 1.0


def scene_depth() -> np.ndarray:
    d = Renderer(W, H, K=K).render([(PLATE, I3, T_GT)]).depth.astype(np.float64)
    return np.where(d > 0, d, WALL)


def square_pixels(z_front: float) -> int:
    """Pixel centres inside the front face's image square [c - f h / z, c + f h / z], per axis."""
    def n(c):
        r = FX * HALF / z_front
        return math.floor(c + r) - math.ceil(c - r) + 1
    return n(CX) * n(CY)


def test_depth_patch_is_the_renderers_depth_on_the_objects_pixels():
    full = Renderer(W, H, K=K).render([(PLATE, I3, T_GT)]).depth
    x0, y0, patch = Renderer(W, H, K=K).depth_patch(PLATE, I3, T_GT)
    img = np.zeros((H, W))
    img[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch
    assert np.array_equal(img > 0, full > 0)
    assert np.abs(img - full).max() < 1e-6
    assert (img > 0).sum() == square_pixels(T_GT[2] - THICK / 2) == 122 * 122


def test_visibility_masks_by_hand():
    test = np.array([[1.0, 1.0, 0.0, 1.0]])
    model = np.array([[1.01, 1.02, 1.5, 0.0]])
    # within delta, behind by more than delta, no test measurement (bop19: visible), not covered
    assert M.visib_mask(test, model, 0.015).tolist() == [[True, False, True, False]]
    assert M.visib_mask(test, model, 0.015, "bop18").tolist() == [[True, False, False, False]]
    gt_vis = np.array([[False, True, False, False]])
    assert M.visib_mask_est(test, model, gt_vis, 0.015).tolist() == [[True, True, True, False]]


def test_depth_to_distance_is_bops():
    depth = np.full((2, 3), 2.0)
    got = M.depth_to_distance(depth, K, x0=100, y0=200)
    u, v = 101, 201
    assert got[1, 1] == pytest.approx(2.0 * math.sqrt(((u - CX) / FX) ** 2 + ((v - CY) / FY) ** 2 + 1.0))


def test_perfect_estimate_has_vsd_zero():
    ren = DepthPatches()
    e = M.vsd(I3, T_GT, I3, T_GT, scene_depth(), K, M.VSD_DELTA_M, M.VSD_TAUS, True, DIAM, ren, PLATE)
    assert np.array_equal(e, np.zeros(len(M.VSD_TAUS)))


def pushed_error_by_hand() -> np.ndarray:
    """The plate 20 mm farther: its silhouette shrinks to a concentric square inside the ground truth's. The
    estimate is 20 mm behind the measured surface (> delta) but counts as visible where the ground truth is
    (BOP's visib_est), so intersection = estimate's pixels, union = ground truth's. Distances |d_gt - d_est|
    = 20 mm x sqrt(x^2 + y^2 + 1), from 20 to 20.3 mm here: 0.140 .. 0.142 of the diameter, a cost at every
    tau below 0.140 (0.05, 0.10) and at none above."""
    n_gt = square_pixels(T_GT[2] - THICK / 2)
    n_est = square_pixels(T_GT[2] + PUSH - THICK / 2)
    assert (n_gt, n_est) == (122 * 122, 118 * 118)
    return np.array([(n_est * (tau < PUSH / DIAM) + n_gt - n_est) / n_gt for tau in M.VSD_TAUS])


def test_pose_pushed_20mm_along_the_viewing_ray():
    expected = pushed_error_by_hand()
    assert expected[0] == expected[1] == 1.0 and expected[2:] == pytest.approx(960 / 14884)
    t_est = T_GT * (1 + PUSH / np.linalg.norm(T_GT))
    e = M.vsd(I3, t_est, I3, T_GT, scene_depth(), K, M.VSD_DELTA_M, M.VSD_TAUS, True, DIAM, DepthPatches(), PLATE)
    assert e == pytest.approx(expected, abs=1e-12)


def evaluator_report(t_est, depth=True):
    ev = M.PoseEvaluator(Catalogue([PLATE]), renderer=DepthPatches())
    ev.add_frame([GroundTruthPose(1, "plate", I3, T_GT)], [ObjectPose("plate", I3, np.asarray(t_est, float))],
                 K=K, image_width=W, depth=scene_depth() if depth else None)
    return ev.report()


def test_vsd_recall_perfect_and_pushed():
    o = evaluator_report(T_GT)["overall"]
    assert o["bop19_average_recall_vsd"] == 1.0 and o["bop19_average_recall"] == 1.0
    assert o["bop19_unavailable_reason"] is None
    o = evaluator_report(T_GT * (1 + PUSH / 0.5))["overall"]
    # error 1 at tau 0.05 and 0.10 (never below a threshold); 0.0645 at the 8 other taus: below 9 of the
    # 10 thresholds (0.10 .. 0.50). Recall over the 10 x 10 (tau, threshold) pairs: 8 * 9 / 100.
    assert o["bop19_average_recall_vsd"] == pytest.approx(0.72)
    # MSSD is the 20 mm push (0.14 d): thresholds 0.15 .. 0.50 pass, 8 of 10
    assert o["bop19_average_recall_mssd"] == pytest.approx(0.8)
    ar = np.mean([0.72, 0.8, o["bop19_average_recall_mspd"]])
    assert o["bop19_average_recall"] == pytest.approx(ar)


def test_without_depth_vsd_and_ar_are_not_available_never_zero():
    o = evaluator_report(T_GT, depth=False)["overall"]
    assert o["bop19_average_recall_vsd"] is None and o["bop19_average_recall"] is None
    assert "no depth image" in o["bop19_unavailable_reason"]
    assert o["bop19_average_recall_mssd"] == 1.0  # the other recalls are still there


def test_far_estimate_scores_vsd_one_without_rendering():
    calls = []

    def renderer(*args):
        calls.append(args)
        return DepthPatches()(*args)

    ev = M.PoseEvaluator(Catalogue([PLATE]), renderer=renderer)
    far = np.array([0.6, 0.0, 0.5])  # sphere projections (radius d / 2) do not overlap
    assert not M.overlapping_sphere_projections(DIAM / 2, far, T_GT)
    (r,) = ev.add_frame([GroundTruthPose(1, "plate", I3, T_GT)], [ObjectPose("plate", I3, far)], K=K,
                        depth=scene_depth())
    assert r.vsd == 1.0 and not r.vsd_hits.any() and not calls


def test_a_frame_without_estimates_needs_no_depth_for_vsd():
    ev = M.PoseEvaluator(Catalogue([PLATE]), renderer=DepthPatches())
    ev.add_frame([GroundTruthPose(1, "plate", I3, T_GT)], [ObjectPose("plate", I3, T_GT)], K=K, depth=scene_depth())
    ev.add_frame([GroundTruthPose(1, "plate", I3, T_GT)], [], K=K, depth=None)  # missed: a failure, depth or not
    o = ev.report()["overall"]
    assert o["bop19_average_recall_vsd"] == 0.5 and o["bop19_average_recall"] == pytest.approx(0.5)
    # an estimate in a frame without depth: VSD cannot be computed, so neither can AR
    ev.add_frame([GroundTruthPose(1, "plate", I3, T_GT)], [ObjectPose("plate", I3, T_GT)], K=K, depth=None)
    o = ev.report()["overall"]
    assert o["bop19_average_recall_vsd"] is None and "no depth image for 1 of 3" in o["bop19_unavailable_reason"]


def bop_vsd_full_image(depth_test, depth_est, depth_gt, delta, taus, diameter):
    """pose_error.vsd written out on whole images (the definition, no windows): distance images, 'bop19'
    visibility, step cost."""
    v, u = np.mgrid[0:H, 0:W]
    scale = np.sqrt(((u - CX) / FX) ** 2 + ((v - CY) / FY) ** 2 + 1.0)
    d_test, d_est, d_gt = depth_test * scale, depth_est * scale, depth_gt * scale
    vis_gt = ((d_gt - d_test <= delta) | (d_test == 0)) & (d_gt > 0)
    vis_est = ((d_est - d_test <= delta) | (d_test == 0)) & (d_est > 0)
    vis_est |= vis_gt & (d_est > 0)
    inter, union = vis_gt & vis_est, vis_gt | vis_est
    dists = np.abs(d_gt[inter] - d_est[inter]) / diameter
    if union.sum() == 0:
        return np.ones(len(taus))
    return np.array([(np.sum(dists >= tau) + union.sum() - inter.sum()) / union.sum() for tau in taus])


def test_windowed_vsd_equals_the_full_image_definition_with_occlusion_and_missing_depth():
    from vfm_pose_ros.core.transforms import axis_angle_to_matrix

    ren = Renderer(W, H, K=K)
    R_gt = axis_angle_to_matrix([0.4, -0.3, 0.2])
    occluder = ObjectModel("occluder", 2, PLATE_V * [0.6, 0.6, 1.0], faces=PLATE_F)
    scene = ren.render([(PLATE, R_gt, T_GT), (occluder, I3, np.array([0.03, 0.02, 0.4]))]).depth.astype(np.float64)
    scene = np.where(scene > 0, scene, WALL)
    scene[200:230, 250:400] = 0.0  # a band without measurements (bop19: visible there)
    rng = np.random.default_rng(3)
    for _ in range(5):
        R_est = R_gt @ axis_angle_to_matrix(rng.normal(scale=0.15, size=3))
        t_est = T_GT + rng.normal(scale=0.01, size=3)
        # whole-image model depths in float64 (render() rounds to float32; the patches equal it up to that)
        full_est, full_gt = np.zeros((H, W)), np.zeros((H, W))
        for img, (R, t) in ((full_est, (R_est, t_est)), (full_gt, (R_gt, T_GT))):
            x0, y0, patch = ren.depth_patch(PLATE, R, t)
            img[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] = patch
            assert np.abs(img - ren.render([(PLATE, R, t)]).depth).max() < 1e-6
        expected = bop_vsd_full_image(scene, full_est, full_gt, M.VSD_DELTA_M, M.VSD_TAUS, DIAM)
        got = M.vsd(R_est, t_est, R_gt, T_GT, scene, K, M.VSD_DELTA_M, M.VSD_TAUS, True, DIAM, DepthPatches(), PLATE)
        assert got == pytest.approx(expected, abs=1e-9)
        assert 0.0 < expected[-1] < 1.0  # a partly right pose: the comparison is not trivial
