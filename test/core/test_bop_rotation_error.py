"""Rotation error exactly as BOP's pose_error.re: arccos((tr(R_est inv(R_gt)) - 1) / 2), on real-like annotations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vfm_pose_ros.core import metrics as M
from vfm_pose_ros.core.transforms import axis_angle_to_matrix, rotation_angle_deg


def bop_re(R_est, R_gt) -> float:
    """BOP's definition, written out: the inverse of R_gt, cosine clipped to [-1, 1]."""
    c = 0.5 * (np.trace(R_est @ np.linalg.inv(R_gt)) - 1.0)
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def non_orthonormal_gt() -> np.ndarray:
    """A rotation stored with limited precision: scaled by 0.997 and nudged by a few 1e-3 (R R^T != I)."""
    R = axis_angle_to_matrix([0.3, -0.5, 0.4]) * 0.997
    R += np.array([[2e-3, -1e-3, 0.0], [0.0, 1e-3, 3e-3], [-2e-3, 0.0, 1e-3]])
    assert np.abs(R @ R.T - np.eye(3)).max() > 3e-3
    return R


def test_estimate_equal_to_non_orthonormal_gt_reads_zero():
    R_gt = non_orthonormal_gt()
    assert bop_re(R_gt, R_gt) == pytest.approx(0.0, abs=1e-5)
    assert M.re(R_gt, R_gt) == pytest.approx(0.0, abs=1e-5)
    assert float(rotation_angle_deg(R_gt, R_gt)) == pytest.approx(0.0, abs=1e-5)
    # the transpose form reads several degrees here: the test can fail
    tr_T = np.trace(R_gt @ R_gt.T)
    assert math.degrees(math.acos(min(1.0, 0.5 * (tr_T - 1.0)))) > 3.0


def test_ten_degree_perturbation_reads_bops_value():
    R_gt = non_orthonormal_gt()
    dR = axis_angle_to_matrix(np.array([0.0, 1.0, 0.0]) * math.radians(10.0))
    # R_gt dR inv(R_gt) is similar to dR: BOP reads exactly 10 degrees
    assert M.re(R_gt @ dR, R_gt) == pytest.approx(10.0, abs=1e-6)
    # an orthonormal estimate 10 degrees from the true rotation: whatever BOP's formula gives
    R_true = axis_angle_to_matrix([0.3, -0.5, 0.4])
    R_est = R_true @ dR
    expected = bop_re(R_est, R_gt)
    assert M.re(R_est, R_gt) == pytest.approx(expected, abs=1e-9)
    assert abs(expected - 10.0) > 0.05  # the annotation error shows: a wrong formula would not hit it by chance
    c_T = 0.5 * (np.trace(R_est @ R_gt.T) - 1.0)
    assert abs(math.degrees(math.acos(min(1.0, c_T))) - expected) > 0.05


def test_batched_re_equals_bop_per_pair():
    rng = np.random.default_rng(0)
    R_gt = np.stack([axis_angle_to_matrix(rng.normal(size=3)) + rng.normal(scale=2e-3, size=(3, 3)) for _ in range(6)])
    R_est = np.stack([axis_angle_to_matrix(rng.normal(size=3) * 0.2) @ R for R in R_gt])
    got = M.re_batch(R_est, R_gt)
    assert got == pytest.approx([bop_re(a, b) for a, b in zip(R_est, R_gt)], abs=1e-9)
