"""PnP-RANSAC: exact recovery, robustness to outliers, and rejection of degenerate solutions."""
import numpy as np
import pytest

from vfm_pose_ros.core.pnp import rejection_reason, solve_pnp
from vfm_pose_ros.core.transforms import axis_angle_to_matrix, project_object, rotation_angle_deg

K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])


def _scene(n=20, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.08, 0.08, size=(n, 3))
    R = axis_angle_to_matrix([0.4, -1.1, 0.7])
    t = np.array([0.05, -0.03, 0.8])
    return pts, R, t, project_object(K, R, t, pts)


@pytest.mark.parametrize("method", ["sqpnp", "epnp"])
def test_exact_keypoints_recover_pose(method):
    pts, R, t, uv = _scene()
    res, why = solve_pnp(pts, uv, K, method=method)
    assert res is not None, why
    assert np.linalg.norm(res.t - t) * 1000 < 0.5
    assert rotation_angle_deg(res.R, R) < 0.1
    assert res.n_inliers == len(pts)


def test_box_keypoints_exact():
    """9 box keypoints (8 corners + centre), the default keypoint set."""
    from vfm_pose_ros.core.catalogue import make_keypoints

    kp = make_keypoints(np.random.default_rng(1).uniform(-0.1, 0.1, (500, 3)), "box")
    R = axis_angle_to_matrix([2.0, 0.3, -0.5])
    t = np.array([-0.1, 0.02, 1.1])
    res, why = solve_pnp(kp, project_object(K, R, t, kp), K)
    assert res is not None, why
    assert np.linalg.norm(res.t - t) * 1000 < 0.5 and rotation_angle_deg(res.R, R) < 0.1


def test_thirty_percent_outliers():
    pts, R, t, uv = _scene(n=30, seed=3)
    rng = np.random.default_rng(4)
    bad = rng.choice(30, 9, replace=False)
    uv = uv.copy()
    uv[bad] += rng.uniform(40, 150, size=(9, 2)) * rng.choice([-1, 1], size=(9, 2))
    res, why = solve_pnp(pts, uv, K)
    assert res is not None, why
    assert np.linalg.norm(res.t - t) * 1000 < 0.5
    assert rotation_angle_deg(res.R, R) < 0.1
    assert not set(bad) & set(res.inliers.tolist())


def test_confidence_filters_and_weights():
    """Low-confidence outliers are dropped before RANSAC; noisy points weigh by confidence."""
    pts, R, t, uv = _scene(n=12, seed=5)
    rng = np.random.default_rng(6)
    noisy = uv + rng.normal(0, 1.5, uv.shape)
    conf = np.full(12, 0.05)
    conf[:6] = 1.0
    noisy[:6] = uv[:6]  # the confident half is exact
    noisy[6:9] += 300  # gross outliers, low confidence
    res, why = solve_pnp(pts, noisy, K, conf, min_confidence=0.01)
    assert res is not None, why
    assert np.linalg.norm(res.t - t) * 1000 < 2.0 and rotation_angle_deg(res.R, R) < 0.3
    res2, _ = solve_pnp(pts, noisy, K, conf, min_confidence=0.5)  # only the 6 exact points survive
    assert res2 is not None and res2.n_used == 6
    assert np.linalg.norm(res2.t - t) * 1000 < 0.5


def test_too_few_points_rejected():
    pts, R, t, uv = _scene(n=3)
    res, why = solve_pnp(pts, uv, K)
    assert res is None and "too few" in why


def test_all_outliers_rejected():
    pts, _, _, _ = _scene(n=12)
    uv = np.random.default_rng(8).uniform(0, 640, size=(12, 2))
    res, why = solve_pnp(pts, uv, K, max_reproj_error_px=3.0, ransac_threshold_px=3.0)
    assert res is None
    assert why


def test_behind_camera_rejected():
    pts, R, t, uv = _scene(n=12)
    assert rejection_reason(R, t, pts, pts, uv, K, 10.0) == ""
    assert "behind the camera" in rejection_reason(R, -t, pts, pts, uv, K, 10.0)
    # t_z > 0 but the object reaches far behind the image plane
    far = pts.copy()
    far[:, 2] = np.where(np.arange(12) < 8, -2.0, far[:, 2])
    assert "behind the camera" in rejection_reason(R, np.array([0, 0, 0.1]), far, pts, uv, K, 10.0)
    assert "non-finite" in rejection_reason(R * np.nan, t, pts, pts, uv, K, 10.0)
    assert "reprojection" in rejection_reason(R, t, pts, pts, uv + 25.0, K, 10.0)
    # end to end: points seen through a mirrored (behind-camera) pose never give a pose behind the camera
    cam = pts @ R.T + np.array([0.0, 0.0, -0.8])
    res, why = solve_pnp(pts, (cam @ K.T)[:, :2] / cam[:, 2:3], K)
    assert res is None or res.t[2] > 0, why


def test_reprojection_threshold_rejects_noisy_fit():
    pts, R, t, uv = _scene(n=12, seed=9)
    noisy = uv + np.random.default_rng(1).normal(0, 6.0, uv.shape)
    res, why = solve_pnp(pts, noisy, K, ransac_threshold_px=50.0, max_reproj_error_px=1.0)
    assert res is None and "reprojection error" in why


def test_non_finite_points_ignored():
    pts, R, t, uv = _scene(n=15)
    uv = uv.copy()
    uv[0] = np.nan
    pts = pts.copy()
    pts[1] = np.inf
    res, why = solve_pnp(pts, uv, K)
    assert res is not None, why
    assert 0 not in res.inliers and 1 not in res.inliers
    assert np.linalg.norm(res.t - t) * 1000 < 0.5


def test_bad_method():
    pts, _, _, uv = _scene()
    with pytest.raises(ValueError, match="sqpnp"):
        solve_pnp(pts, uv, K, method="p3p2")
