"""Rigid transforms, rotations and camera geometry against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vfm_pose_ros.core import transforms as T


def rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def test_quaternion_is_xyzw_and_canonical():
    # 90 deg about z: q = (0, 0, sin 45, cos 45), w last.
    q = T.matrix_to_quat(rot_z(90))
    np.testing.assert_allclose(q, [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(T.quat_to_matrix(q), rot_z(90), atol=1e-12)
    # q and -q are the same rotation; the canonical form has w >= 0.
    np.testing.assert_allclose(T.canonical_quat(-q), q)
    np.testing.assert_allclose(T.quat_to_matrix(-q), rot_z(90), atol=1e-12)
    assert T.matrix_to_quat(rot_z(270))[3] >= 0


def test_axis_angle_round_trip():
    rv = np.array([0.0, 0.0, math.radians(30)])
    np.testing.assert_allclose(T.axis_angle_to_matrix(rv), rot_z(30), atol=1e-12)
    np.testing.assert_allclose(T.matrix_to_axis_angle(rot_z(30)), rv, atol=1e-12)


def test_6d_round_trip_and_gram_schmidt():
    rng = np.random.default_rng(0)
    Rs = np.stack([T.axis_angle_to_matrix(v) for v in rng.normal(size=(5, 3))])
    d6 = T.matrix_to_6d(Rs)
    assert d6.shape == (5, 6)
    np.testing.assert_allclose(d6[0], np.concatenate([Rs[0][:, 0], Rs[0][:, 1]]))
    np.testing.assert_allclose(T.sixd_to_matrix(d6), Rs, atol=1e-12)
    # A scaled, skewed input still gives a proper rotation whose first column is the normalised a1.
    R = T.sixd_to_matrix(np.array([2.0, 0.0, 0.0, 1.0, 3.0, 0.0]))
    assert T.is_rotation(R)
    np.testing.assert_allclose(R, np.eye(3), atol=1e-12)


def test_make_invert_and_transform_points():
    R, t = rot_z(90), np.array([1.0, 2.0, 3.0])
    Tm = T.make_T(R, t)
    np.testing.assert_allclose(T.invert_T(Tm) @ Tm, np.eye(4), atol=1e-12)
    # (1, 0, 0) rotated 90 deg about z is (0, 1, 0); then shifted by t.
    np.testing.assert_allclose(T.transform_points(R, t, [[1.0, 0.0, 0.0]]), [[1.0, 3.0, 3.0]], atol=1e-12)


@pytest.mark.parametrize("deg", [0.0, 10.0, 90.0, 179.0])
def test_rotation_angle_deg(deg):
    R_b = T.axis_angle_to_matrix([0.3, -0.2, 0.5])
    R_a = T.axis_angle_to_matrix(np.array([1.0, 2.0, 2.0]) / 3.0 * math.radians(deg)) @ R_b
    assert float(T.rotation_angle_deg(R_a, R_b)) == pytest.approx(deg, abs=1e-6)


def test_is_rotation_rejects_reflections_and_nan():
    assert T.is_rotation(np.eye(3))
    assert not T.is_rotation(np.diag([1.0, 1.0, -1.0]))
    assert not T.is_rotation(np.full((3, 3), np.nan))
    assert not T.is_rotation(np.eye(4))


def test_project_and_backproject():
    K = np.array([[500.0, 0, 320.0], [0, 400.0, 240.0], [0, 0, 1.0]])
    pts = np.array([[0.0, 0.0, 2.0], [0.2, -0.1, 1.0]])
    uv = T.project(K, pts)
    # u = fx x / z + cx: 500 * 0.2 + 320 = 420; v = 400 * -0.1 + 240 = 200.
    np.testing.assert_allclose(uv, [[320.0, 240.0], [420.0, 200.0]])
    np.testing.assert_allclose(T.backproject(K, uv, pts[:, 2]), pts, atol=1e-12)
    np.testing.assert_allclose(T.project_object(K, np.eye(3), [0, 0, 1.0], [[0.2, -0.1, 0.0]]), [[420.0, 200.0]])


def test_depth_to_points_skips_invalid_and_respects_mask_and_stride():
    K = np.array([[100.0, 0, 2.0], [0, 100.0, 1.0], [0, 0, 1.0]])
    depth = np.full((3, 5), 2.0, dtype=np.float32)
    depth[0, 0] = 0.0
    depth[0, 1] = np.nan
    depth[0, 2] = np.inf
    pts = T.depth_to_points(depth, K)
    assert pts.shape == (12, 3)
    assert np.all(pts[:, 2] == 2.0)
    # pixel (u=4, v=2): x = (4 - 2) * 2 / 100, y = (2 - 1) * 2 / 100.
    assert any(np.allclose(p, [0.04, 0.02, 2.0]) for p in pts)
    mask = np.zeros((3, 5), bool)
    mask[2, 4] = True
    np.testing.assert_allclose(T.depth_to_points(depth, K, mask=mask), [[0.04, 0.02, 2.0]])
    strided = T.depth_to_points(depth, K, stride=2)  # rows 0, 2; cols 0, 2, 4 -> 6 pixels, 2 invalid
    assert strided.shape == (4, 3)
