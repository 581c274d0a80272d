"""Rigid transforms, rotations and camera geometry.

Quaternions are (x, y, z, w), the order of ROS messages and scipy, so nothing
reorders them at the ROS edge. Rotation work is delegated to
``scipy.spatial.transform.Rotation``; only the 6D representation (Zhou et al.
2019), which scipy lacks, is written here. scipy is imported on first use:
``scipy.spatial`` alone costs about 0.2 s, more than the rest of the core.
"""
from __future__ import annotations

import numpy as np


def _rotation():
    from scipy.spatial.transform import Rotation

    return Rotation


def quat_to_matrix(q_xyzw) -> np.ndarray:
    return _rotation().from_quat(np.asarray(q_xyzw, dtype=float)).as_matrix()


def matrix_to_quat(R) -> np.ndarray:
    """Quaternion (x, y, z, w), sign-canonical (w >= 0) so equal rotations compare equal."""
    q = _rotation().from_matrix(np.asarray(R, dtype=float)).as_quat()
    return canonical_quat(q)


def canonical_quat(q) -> np.ndarray:
    """Flip q (..., 4, w last) so that w >= 0: q and -q are the same rotation."""
    q = np.asarray(q, dtype=float)
    sign = np.where(q[..., 3:4] < 0, -1.0, 1.0)
    return q * sign


def axis_angle_to_matrix(rotvec) -> np.ndarray:
    return _rotation().from_rotvec(np.asarray(rotvec, dtype=float)).as_matrix()


def matrix_to_axis_angle(R) -> np.ndarray:
    return _rotation().from_matrix(np.asarray(R, dtype=float)).as_rotvec()


def matrix_to_6d(R) -> np.ndarray:
    """First two columns of R, flattened column-major (..., 6)."""
    R = np.asarray(R, dtype=float)
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def sixd_to_matrix(d6) -> np.ndarray:
    """Gram-Schmidt of the 6D representation back to a rotation matrix (..., 3, 3)."""
    d6 = np.asarray(d6, dtype=float)
    a1, a2 = d6[..., :3], d6[..., 3:6]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    a2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / np.linalg.norm(a2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def make_T(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=float).reshape(3)
    return T


def invert_T(T) -> np.ndarray:
    T = np.asarray(T, dtype=float)
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def transform_points(R, t, pts) -> np.ndarray:
    """Apply p' = R p + t to Nx3 points."""
    return np.asarray(pts, dtype=float) @ np.asarray(R, dtype=float).T + np.asarray(t, dtype=float).reshape(1, 3)


def rotation_angle_deg(R_est, R_gt) -> np.ndarray:
    """Rotation error in degrees exactly as BOP's ``pose_error.re``: arccos((tr(R_est inv(R_gt)) - 1) / 2), clipped.

    The inverse, not the transpose: real annotations are not exactly orthonormal (R R^T off I by up to
    about 5e-3), and near 0 degrees arccos is steep, so the two forms read differently there. Batched
    over leading axes.
    """
    R_est = np.asarray(R_est, dtype=float)
    R_gt = np.asarray(R_gt, dtype=float)
    tr = np.trace(R_est @ np.linalg.inv(R_gt), axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip(0.5 * (tr - 1.0), -1.0, 1.0)))


def is_rotation(R, tol: float = 1e-4) -> bool:
    """True for a finite, orthonormal, right-handed 3x3 matrix."""
    R = np.asarray(R, dtype=float)
    return (
        R.shape == (3, 3)
        and bool(np.all(np.isfinite(R)))
        and np.allclose(R @ R.T, np.eye(3), atol=tol)
        and abs(np.linalg.det(R) - 1.0) < tol
    )


def project(K, pts_cam) -> np.ndarray:
    """Pinhole projection of Nx3 camera-frame points to Nx2 pixels."""
    pts = np.asarray(pts_cam, dtype=float)
    uvw = pts @ np.asarray(K, dtype=float).T
    return uvw[:, :2] / uvw[:, 2:3]


def project_object(K, R, t, pts_obj) -> np.ndarray:
    return project(K, transform_points(R, t, pts_obj))


def backproject(K, uv, z) -> np.ndarray:
    """Pixels (Nx2) at depths z (N,) metres to Nx3 camera-frame points."""
    K = np.asarray(K, dtype=float)
    uv = np.asarray(uv, dtype=float)
    z = np.asarray(z, dtype=float).reshape(-1)
    x = (uv[:, 0] - K[0, 2]) * z / K[0, 0]
    y = (uv[:, 1] - K[1, 2]) * z / K[1, 1]
    return np.stack([x, y, z], axis=1)


def depth_to_points(depth, K, mask=None, stride: int = 1) -> np.ndarray:
    """Depth image (metres; 0, NaN and inf mean no measurement) to an Nx3 cloud in the camera frame."""
    depth = np.asarray(depth)
    d = depth[::stride, ::stride]
    vs, us = np.mgrid[0 : depth.shape[0] : stride, 0 : depth.shape[1] : stride]
    valid = np.isfinite(d) & (d > 0)
    if mask is not None:
        valid &= np.asarray(mask)[::stride, ::stride].astype(bool)
    uv = np.stack([us[valid], vs[valid]], axis=1)
    return backproject(K, uv, d[valid])
