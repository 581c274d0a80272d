"""Pose from 2D-3D keypoint correspondences: confidence-weighted PnP-RANSAC with degeneracy checks.

Pipeline (OpenCV does the heavy lifting, cv2 imported lazily):

1. Drop keypoints whose confidence is below ``min_confidence`` times the best one
   (unreliable votes only poison RANSAC's hypotheses).
2. ``cv2.solvePnPRansac`` (SQPnP by default, EPnP on request) for an outlier-free
   initial pose and its inlier set.
3. ``cv2.solvePnPRefineLM`` on the inliers (Levenberg-Marquardt on the
   reprojection error).
4. When confidences differ, a confidence-weighted refinement: residuals scaled by
   sqrt(confidence), solved with ``scipy.optimize.least_squares`` from the LM
   result (OpenCV's refiners take no weights; this small step is hand-written).
5. Rejection of degenerate solutions: too few inliers, object behind the camera
   (t_z <= 0 or most keypoints at z <= 0), mean inlier reprojection error above
   ``max_reproj_error_px``, non-finite values. A rejection returns ``None`` and a
   reason string instead of a wrong pose.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from .transforms import is_rotation, project, transform_points


@dataclass
class PnPResult:
    R: np.ndarray  # 3x3 object -> camera
    t: np.ndarray  # (3,) metres
    inliers: np.ndarray  # indices into the input keypoints
    reproj_error_px: float  # mean reprojection error over the inliers
    n_used: int  # keypoints that passed the confidence filter

    @property
    def n_inliers(self) -> int:
        return int(len(self.inliers))


def _reproj_errors(R, t, pts3d, pts2d, K) -> np.ndarray:
    cam = transform_points(R, t, pts3d)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = project(K, cam)
    return np.linalg.norm(uv - pts2d, axis=1)


def _weighted_refine(R, t, pts3d, pts2d, K, w):
    """Minimise sum_i w_i |proj(R p_i + t) - u_i|^2 over (rotvec, t) from a good start."""
    sw = np.sqrt(np.asarray(w, dtype=float))[:, None]

    def residuals(x):
        Rx = Rotation.from_rotvec(x[:3]).as_matrix()
        cam = transform_points(Rx, x[3:], pts3d)
        z = np.where(np.abs(cam[:, 2:3]) < 1e-9, 1e-9, cam[:, 2:3])
        uv = (cam @ K.T)[:, :2] / z
        return ((uv - pts2d) * sw).ravel()

    x0 = np.concatenate([Rotation.from_matrix(R).as_rotvec(), t])
    sol = least_squares(residuals, x0, method="lm" if residuals(x0).size >= 6 else "trf", max_nfev=100)
    return Rotation.from_rotvec(sol.x[:3]).as_matrix(), sol.x[3:]


def rejection_reason(R, t, keypoints_3d, inlier_3d, inlier_2d, K, max_reproj_error_px: float) -> str:
    """Why a pose is degenerate ('' when it is acceptable): non-finite, behind the camera, poor reprojection."""
    R = np.asarray(R, dtype=float)
    t = np.asarray(t, dtype=float).reshape(-1)
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))) or not is_rotation(R, tol=1e-3):
        return "non-finite or invalid pose"
    if t[2] <= 0:
        return f"object behind the camera (t_z = {t[2]:.3f} m)"
    z = transform_points(R, t, keypoints_3d)[:, 2]
    if np.mean(z <= 0) > 0.5:
        return "most keypoints behind the camera"
    mean_err = float(np.mean(_reproj_errors(R, t, inlier_3d, inlier_2d, K)))
    if not np.isfinite(mean_err) or mean_err > max_reproj_error_px:
        return f"reprojection error too large ({mean_err:.1f} px > {max_reproj_error_px} px)"
    return ""


def solve_pnp(
    points_3d,
    points_2d,
    K,
    confidences=None,
    *,
    method: str = "sqpnp",
    min_confidence: float = 0.2,
    ransac_threshold_px: float = 8.0,
    ransac_iterations: int = 200,
    min_inliers: int = 5,
    max_reproj_error_px: float = 10.0,
    refine: bool = True,
    dist_coeffs=None,
) -> tuple[PnPResult | None, str]:
    """Robust pose from Nx3 object-frame keypoints (metres) and their Nx2 pixel projections.

    Returns ``(PnPResult, "ok")`` or ``(None, reason)``. ``confidences`` (N,) in [0, 1]
    filter (below ``min_confidence`` x max) and weight the final refinement.
    """
    import cv2

    p3 = np.asarray(points_3d, dtype=np.float64).reshape(-1, 3)
    p2 = np.asarray(points_2d, dtype=np.float64).reshape(-1, 2)
    K = np.asarray(K, dtype=np.float64)
    if len(p3) != len(p2):
        raise ValueError(f"solve_pnp: {len(p3)} 3D points but {len(p2)} 2D points")
    conf = np.ones(len(p3)) if confidences is None else np.asarray(confidences, dtype=np.float64).reshape(-1)
    finite = np.isfinite(p3).all(1) & np.isfinite(p2).all(1) & np.isfinite(conf) & (conf > 0)
    keep = finite.copy()
    if keep.any():
        keep &= conf >= min_confidence * conf[keep].max()
    idx = np.flatnonzero(keep)
    need = max(4, min_inliers)
    if len(idx) < need:
        return None, f"too few confident keypoints ({len(idx)} < {need})"
    P3, P2, W = p3[idx], p2[idx], conf[idx]
    dist = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, dtype=np.float64)
    flag = {"sqpnp": cv2.SOLVEPNP_SQPNP, "epnp": cv2.SOLVEPNP_EPNP}.get(method.lower())
    if flag is None:
        raise ValueError(f"method must be 'sqpnp' or 'epnp', got {method!r}")
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            P3, P2, K, dist, iterationsCount=ransac_iterations, reprojectionError=ransac_threshold_px,
            confidence=0.999, flags=flag,
        )
    except cv2.error as exc:
        return None, f"PnP-RANSAC failed in OpenCV: {exc.msg if hasattr(exc, 'msg') else exc}"
    if not ok or inl is None:
        return None, "PnP-RANSAC found no consistent pose"
    inl = inl.reshape(-1)
    if len(inl) < need:
        return None, f"too few inliers ({len(inl)} < {need})"
    if refine:
        rvec, tvec = cv2.solvePnPRefineLM(P3[inl], P2[inl], K, dist, rvec, tvec)
    R = cv2.Rodrigues(rvec)[0]
    t = tvec.reshape(3)
    w_in = W[inl]
    if refine and np.ptp(w_in) > 1e-6 * max(w_in.max(), 1e-12):
        R, t = _weighted_refine(R, t, P3[inl], P2[inl], K, w_in)
    reason = rejection_reason(R, t, p3[finite], P3[inl], P2[inl], K, max_reproj_error_px)
    if reason:
        return None, reason
    mean_err = float(np.mean(_reproj_errors(R, t, P3[inl], P2[inl], K)))
    # Recount inliers against the refined pose (the refinement may recover or lose points).
    all_err = _reproj_errors(R, t, P3, P2, K)
    inliers = idx[np.flatnonzero(all_err <= ransac_threshold_px)]
    if len(inliers) < need:
        return None, f"too few inliers after refinement ({len(inliers)} < {need})"
    return PnPResult(R=R, t=t, inliers=inliers, reproj_error_px=mean_err, n_used=len(idx)), "ok"
