"""Visible Surface Discrepancy (BOP ``pose_error.vsd`` with ``visibility.py``'s 'bop19' masks), computed on
the pixels the object covers: the model's depth is rendered only inside its window."""
from __future__ import annotations

import numpy as np

VSD_TAUS = np.arange(0.05, 0.51, 0.05)  # BOP 2019: misalignment tolerances, fractions of the diameter
VSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)  # BOP 2019: VSD correctness thresholds
VSD_DELTA_M = 0.015  # BOP 2019 visibility tolerance: 15 mm ...
VSD_DELTA_ITODD_M = 0.005  # ... and 5 mm for ITODD


def depth_to_distance(depth, K, x0: int = 0, y0: int = 0) -> np.ndarray:
    """Depth (z) to distance from the camera centre, as BOP's ``misc.depth_im_to_dist_im_fast``: the
    pixel (u, v) holds z * sqrt(((u - cx) / fx)^2 + ((v - cy) / fy)^2 + 1). ``(x0, y0)`` is the image
    position of a crop's top-left pixel; 0 stays 0."""
    depth = np.asarray(depth, dtype=np.float64)
    K = np.asarray(K, dtype=float)
    u = (np.arange(x0, x0 + depth.shape[1]) - K[0, 2]) / K[0, 0]
    v = (np.arange(y0, y0 + depth.shape[0]) - K[1, 2]) / K[1, 1]
    return depth * np.sqrt(v[:, None] ** 2 + u[None, :] ** 2 + 1.0)


def visib_mask(dist_test, dist_model, delta: float, visib_mode: str = "bop19") -> np.ndarray:
    """BOP ``visibility._estimate_visib_mask``: model pixels not behind the test surface by more than
    ``delta``; 'bop19' also counts pixels without a test measurement (0) as visible, 'bop18' does not."""
    diff = dist_model - dist_test
    if visib_mode == "bop19":
        return ((diff <= delta) | (dist_test == 0)) & (dist_model > 0)
    if visib_mode == "bop18":
        return (diff <= delta) & (dist_test > 0) & (dist_model > 0)
    raise ValueError(f"unknown visib_mode {visib_mode!r} (bop18 or bop19)")


def visib_mask_est(dist_test, dist_est, visib_gt, delta: float, visib_mode: str = "bop19") -> np.ndarray:
    """BOP ``visibility.estimate_visib_mask_est``: the estimate is also visible wherever the ground
    truth is visible and the estimate covers the pixel (Hodan et al. 2016, eq. 14)."""
    return visib_mask(dist_test, dist_est, delta, visib_mode) | (visib_gt & (dist_est > 0))


def vsd_from_depths(depth_test, depth_est, depth_gt, K, delta, taus, normalized_by_diameter, diameter,
                    cost_type: str = "step", x0: int = 0, y0: int = 0) -> np.ndarray:
    """VSD errors (one per tau) from the model's rendered depth in the estimated and ground-truth poses.

    All three depth images cover the same window of the test image (top-left pixel ``(x0, y0)``); any
    window holding every pixel either rendering covers gives the full-image result, since pixels the
    model covers in neither pose are in neither visibility mask. Test depth 0 or non-finite: no
    measurement. The rest is BOP's ``pose_error.vsd``: 'bop19' visibility, cost 'step' (d >= tau) or
    'tlinear' (min(d / tau, 1)), error (sum of costs + |union - intersection|) / |union|, 1 for an
    empty union.
    """
    taus = np.asarray(taus, dtype=float).reshape(-1)
    test = np.asarray(depth_test, dtype=np.float64)
    test = np.where(np.isfinite(test), test, 0.0)
    d_test = depth_to_distance(test, K, x0, y0)
    d_est = depth_to_distance(depth_est, K, x0, y0)
    d_gt = depth_to_distance(depth_gt, K, x0, y0)
    v_gt = visib_mask(d_test, d_gt, delta)
    v_est = visib_mask_est(d_test, d_est, v_gt, delta)
    inter = v_gt & v_est
    n_union = int(np.count_nonzero(v_gt | v_est))
    if n_union == 0:
        return np.ones(len(taus))
    n_comp = n_union - int(np.count_nonzero(inter))
    dists = np.abs(d_gt[inter] - d_est[inter])
    if normalized_by_diameter:
        dists = dists / diameter
    if cost_type == "step":
        costs = len(dists) - np.searchsorted(np.sort(dists), taus, side="left")  # count of d >= tau
    elif cost_type == "tlinear":
        costs = np.minimum(dists[None, :] / taus[:, None], 1.0).sum(axis=1)
    else:
        raise ValueError(f"unknown VSD cost_type {cost_type!r} (step or tlinear)")
    return (costs + n_comp) / float(n_union)


def _paste(patches, shape):
    """Patches ``(x0, y0, depth)`` (or None) pasted into zero images over their union window."""
    live = [p for p in patches if p is not None]
    if not live:
        return None
    x0 = min(p[0] for p in live)
    y0 = min(p[1] for p in live)
    x1 = max(p[0] + p[2].shape[1] for p in live)
    y1 = max(p[1] + p[2].shape[0] for p in live)
    out = []
    for p in patches:
        img = np.zeros((y1 - y0, x1 - x0))
        if p is not None:
            img[p[1] - y0 : p[1] - y0 + p[2].shape[0], p[0] - x0 : p[0] - x0 + p[2].shape[1]] = p[2]
        out.append(img)
    return x0, y0, x1, y1, out


def vsd_from_patches(depth_test, patch_est, patch_gt, K, delta, taus, normalized_by_diameter, diameter,
                     cost_type: str = "step") -> np.ndarray:
    """:func:`vsd_from_depths` over the union of the two renderings' windows: each patch is
    ``(x0, y0, depth)`` for the pixels the model covers in that pose, or None where it covers none."""
    pasted = _paste([patch_est, patch_gt], np.shape(depth_test))
    if pasted is None:
        return np.ones(len(np.atleast_1d(taus)))
    x0, y0, x1, y1, (d_est, d_gt) = pasted
    test = np.asarray(depth_test)[y0:y1, x0:x1]
    return vsd_from_depths(test, d_est, d_gt, K, delta, taus, normalized_by_diameter, diameter, cost_type, x0, y0)


def vsd(R_est, t_est, R_gt, t_gt, depth_test, K, delta, taus, normalized_by_diameter, diameter, renderer, model,
        cost_type: str = "step") -> np.ndarray:
    """Visible Surface Discrepancy (Hodan, Michel et al. 2018), one error per misalignment tolerance tau.

    BOP's ``pose_error.vsd`` signature, with ``renderer(model, R, t, K, (height, width))`` giving the
    model's depth in that pose on the pixels it covers as ``(x0, y0, depth)`` (or None): the renderings
    never leave the object's window (``vfm_pose_ros.data.render.Renderer.depth_patch`` does this).
    Units: any one length unit for t, depth, delta and diameter.
    """
    shape = np.shape(depth_test)
    patch_est = renderer(model, R_est, t_est, K, shape)
    patch_gt = renderer(model, R_gt, t_gt, K, shape)
    return vsd_from_patches(depth_test, patch_est, patch_gt, K, delta, taus, normalized_by_diameter, diameter,
                            cost_type)


def overlapping_sphere_projections(radius: float, p1, p2) -> bool:
    """BOP ``misc.overlapping_sphere_projections``: whether the (approximate) image discs of two spheres
    of ``radius`` centred at ``p1`` and ``p2`` (camera frame) overlap. BOP scores VSD 1 without rendering
    where they do not."""
    p1 = np.asarray(p1, float).reshape(3)
    p2 = np.asarray(p2, float).reshape(3)
    if p1[2] == 0 or p2[2] == 0:
        return False
    return bool(np.linalg.norm(p1[:2] / p1[2] - p2[:2] / p2[2]) < radius * (1.0 / p1[2] + 1.0 / p2[2]))

