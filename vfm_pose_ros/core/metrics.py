"""Pose-error metrics, matching and aggregation: the one definition the CLI, the ROS evaluator and reports use.

Per-instance errors follow the BOP toolkit (``bop_toolkit_lib/pose_error.py``, Hodan et al.):

* ``add``  ADD, mean distance of corresponding model points (Hinterstoisser et al. 2012);
* ``adi``  ADD-S / ADI, mean distance from each ground-truth point to the *nearest* estimated point
  (KD-tree, as the toolkit does with ``scipy.spatial.cKDTree``);
* ``re``   rotation error in degrees, ``arccos((tr(R_est inv(R_gt)) - 1) / 2)`` (BOP's inverse, not the
  transpose: annotated rotations are not exactly orthonormal); ``te`` translation error;
* ``mssd`` the smallest, over the object's symmetry transforms, of the largest 3D vertex distance;
* ``mspd`` the same with 2D projections (pixels);
* ``vsd``  Visible Surface Discrepancy against the test depth image (one error per tolerance tau), with
  BOP's 'bop19' visibility masks; the model's depth is rendered only on the pixels it covers.

The BOP toolkit takes the *minimum* over symmetry transforms of the per-transform maximum distance
(the pose is as good as its best symmetric equivalent); so do we. Symmetry transforms are BOP's
``misc.get_symmetry_transformations(model_info, max_sym_disc_step=0.01)``: the identity, the discrete
ones, and each continuous axis discretised into ``ceil(pi / 0.01) = 315`` rotations.

Aggregation (:class:`PoseEvaluator`): a frame's predictions are matched to its ground truth per object;
for several instances of one object, predictions in decreasing score take the unmatched ground truth
with the lowest ADD(-S) error, each ground truth getting at most one prediction, and only the
``n_gt`` highest-scored predictions of an object count (BOP's ``n_top = -1``). A ground-truth instance
without a prediction is a failure for every accuracy, recall and AUC (denominator: all ground truth);
means and medians of errors are over the instances that have a prediction. BOP's MSSD and MSPD
recalls re-run the toolkit's thresholded greedy matching (``pose_matching.match_poses``: an estimate
takes the unmatched ground truth with the lowest error *below* the threshold) at every threshold, and
so do the VSD recalls at every (tau, threshold); BOP's average recall (``bop19_average_recall``) is the
mean of the VSD, MSSD and MSPD average recalls (``scripts/eval_bop19_pose.py``). Without a depth image
there is no VSD, and the average recall is None with ``bop19_unavailable_reason``, never 0.

Units: metres and radians inside, like the rest of the package; the report gives millimetres,
degrees and pixels.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .symmetry import MAX_SYM_DISC_STEP, symmetric_points, symmetry_array, symmetry_transformations
from .transforms import project, rotation_angle_deg

ADD_THRESHOLD = 0.1  # accuracy threshold: k times the object diameter (LineMOD protocol, k = 0.1)
MSSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)  # BOP 2019: fractions of the object diameter
MSPD_THRESHOLDS_PX = np.arange(5, 51, 5)  # BOP 2019: pixels at 640 px width (scaled by width / 640)
BOP_REFERENCE_WIDTH = 640.0
AUC_MAX_THRESHOLD_M = 0.1  # YCB-Video / PoseCNN: accuracy-threshold curve from 0 to 10 cm
VSD_TAUS = np.arange(0.05, 0.51, 0.05)  # BOP 2019: misalignment tolerances, fractions of the diameter
VSD_THRESHOLDS = np.arange(0.05, 0.51, 0.05)  # BOP 2019: VSD correctness thresholds
VSD_DELTA_M = 0.015  # BOP 2019 visibility tolerance: 15 mm ...
VSD_DELTA_ITODD_M = 0.005  # ... and 5 mm for ITODD
_CHUNK = 1 << 21  # points per vectorised block (about 50 MB of float64 xyz)


# --------------------------------------------------------------------------------------------
# Per-instance errors (BOP signatures). Any consistent length unit; the result is in that unit.
# --------------------------------------------------------------------------------------------


def add(R_est, t_est, R_gt, t_gt, pts) -> float:
    """ADD: mean distance between model points in the estimated and the ground-truth pose."""
    return float(add_batch(*_one(R_est, t_est, R_gt, t_gt), pts)[0])


def adi(R_est, t_est, R_gt, t_gt, pts, tree=None) -> float:
    """ADD-S (ADI): mean distance from each ground-truth model point to the nearest estimated one."""
    return float(adi_batch(*_one(R_est, t_est, R_gt, t_gt), pts, tree=tree)[0])


def add_s(R_est, t_est, R_gt, t_gt, pts, symmetric: bool) -> float:
    """ADD(-S): ADD-S for objects the catalogue marks symmetric, ADD otherwise."""
    return adi(R_est, t_est, R_gt, t_gt, pts) if symmetric else add(R_est, t_est, R_gt, t_gt, pts)


def re(R_est, R_gt) -> float:
    """Rotation error in degrees (BOP ``re``)."""
    return float(rotation_angle_deg(np.asarray(R_est, float).reshape(3, 3), np.asarray(R_gt, float).reshape(3, 3)))


def te(t_est, t_gt) -> float:
    """Translation error: Euclidean distance of the translations (BOP ``te``)."""
    return float(np.linalg.norm(np.asarray(t_est, float).reshape(3) - np.asarray(t_gt, float).reshape(3)))


def mssd(R_est, t_est, R_gt, t_gt, pts, syms) -> float:
    """Maximum Symmetry-aware Surface Distance: min over symmetries of the max vertex distance."""
    return float(mssd_batch(*_one(R_est, t_est, R_gt, t_gt), pts, syms)[0])


def mspd(R_est, t_est, R_gt, t_gt, K, pts, syms) -> float:
    """Maximum Symmetry-aware Projection Distance (pixels): min over symmetries of the max 2D distance."""
    return float(mspd_batch(*_one(R_est, t_est, R_gt, t_gt), K, pts, syms)[0])


# --------------------------------------------------------------------------------------------
# Vectorised forms: N pose pairs at once. R: (N, 3, 3), t: (N, 3), pts: (M, 3).
# --------------------------------------------------------------------------------------------


def _one(R_est, t_est, R_gt, t_gt):
    return (
        np.asarray(R_est, float).reshape(1, 3, 3),
        np.asarray(t_est, float).reshape(1, 3),
        np.asarray(R_gt, float).reshape(1, 3, 3),
        np.asarray(t_gt, float).reshape(1, 3),
    )


def _batch(R_est, t_est, R_gt, t_gt):
    R_est = np.asarray(R_est, float).reshape(-1, 3, 3)
    R_gt = np.asarray(R_gt, float).reshape(-1, 3, 3)
    t_est = np.asarray(t_est, float).reshape(-1, 3)
    t_gt = np.asarray(t_gt, float).reshape(-1, 3)
    n = len(R_est)
    if not (len(R_gt) == len(t_est) == len(t_gt) == n):
        raise ValueError(f"pose batches differ in length: {n}, {len(t_est)}, {len(R_gt)}, {len(t_gt)}")
    return R_est, t_est, R_gt, t_gt


def _relative(R_est, t_est, R_gt, t_gt):
    """The estimate expressed in the ground-truth object frame: R_gt^T R_est, R_gt^T (t_est - t_gt)."""
    Rg_T = np.swapaxes(R_gt, 1, 2)
    return Rg_T @ R_est, (Rg_T @ (t_est - t_gt)[:, :, None])[:, :, 0]


def _apply_many(pts, A) -> np.ndarray:
    """``pts @ A[n]`` for every n as one matrix product (M, N, 3): batched 3x3 matmuls are slow in numpy."""
    n = len(A)
    return (pts @ A.transpose(1, 0, 2).reshape(3, 3 * n)).reshape(len(pts), n, 3)


def add_batch(R_est, t_est, R_gt, t_gt, pts) -> np.ndarray:
    """ADD for N pose pairs (N,)."""
    R_est, t_est, R_gt, t_gt = _batch(R_est, t_est, R_gt, t_gt)
    pts = np.asarray(pts, float).reshape(-1, 3)
    D_T = np.swapaxes(R_est - R_gt, 1, 2)  # (R_est - R_gt) p + (t_est - t_gt) is the point displacement
    dt = t_est - t_gt
    out = np.empty(len(R_est))
    step = max(1, _CHUNK // max(len(pts), 1))
    for s in range(0, len(R_est), step):
        diff = _apply_many(pts, D_T[s : s + step]) + dt[None, s : s + step]
        out[s : s + step] = np.sqrt((diff * diff).sum(-1)).mean(0)
    return out


class NearestModelPoints:
    """Distances from query points to their nearest model point, exactly. Open3D's nearest-neighbour search
    when it is installed (1.6x scipy's cKDTree on 2k-point models, measured: 0.50 vs 0.79 ms for 2k queries),
    else scipy's cKDTree with ``bound`` pruning (every query must have a model point within ``bound``)."""

    def __init__(self, pts):
        self.pts = np.ascontiguousarray(pts, dtype=np.float64)
        try:
            import open3d as o3d

            self._o3d = o3d
            self._nns = o3d.core.nns.NearestNeighborSearch(o3d.core.Tensor(self.pts))
            self._nns.knn_index()
            self._tree = None
        except ImportError:
            from scipy.spatial import cKDTree  # lazy: keeps `import vfm_pose_ros.core.metrics` fast

            self._nns = None
            # unbalanced, 32-point leaves: a fifth faster per query on 2k-point models (measured)
            self._tree = cKDTree(self.pts, leafsize=32, balanced_tree=False)

    def distances(self, q, bound: float = np.inf) -> np.ndarray:
        if self._nns is not None:
            _, d2 = self._nns.knn_search(self._o3d.core.Tensor(np.ascontiguousarray(q, dtype=np.float64)), 1)
            return np.sqrt(d2.numpy().reshape(-1))
        d, _ = self._tree.query(q, k=1, distance_upper_bound=bound, workers=-1 if len(q) > 200_000 else 1)
        return d


def adi_batch(R_est, t_est, R_gt, t_gt, pts, tree=None) -> np.ndarray:
    """ADD-S for N pose pairs (N,), with one nearest-neighbour index over the model points for the whole batch.

    ||R_g p_i + t_g - (R_e p_j + t_e)|| = ||R_rel^T (p_i - t_rel) - p_j|| with R_rel = R_g^T R_e,
    t_rel = R_g^T (t_e - t_g): each ground-truth point becomes a query against the *model* points,
    so the index is built once per model instead of once per estimate.
    """
    R_est, t_est, R_gt, t_gt = _batch(R_est, t_est, R_gt, t_gt)
    pts = np.asarray(pts, float).reshape(-1, 3)
    tree = tree if tree is not None else NearestModelPoints(pts)
    R_rel, t_rel = _relative(R_est, t_est, R_gt, t_gt)
    shift = (t_rel[:, None, :] @ R_rel)[:, 0, :]  # t_rel^T R_rel
    out = np.empty(len(R_est))
    step = max(1, _CHUNK // max(len(pts), 1))
    for s in range(0, len(R_est), step):
        q = _apply_many(pts, R_rel[s : s + step]) - shift[None, s : s + step]
        # exact pruning: point i's nearest model point is no farther than its own counterpart p_i (ADD's
        # distance), so the largest of those bounds every query of the block
        bound = float(np.sqrt(((q - pts[:, None]) ** 2).sum(-1).max())) * (1 + 1e-9) + 1e-12
        d = tree.distances(np.ascontiguousarray(q.reshape(-1, 3)), bound)
        out[s : s + step] = d.reshape(len(pts), -1).mean(0)
    return out


def re_batch(R_est, R_gt) -> np.ndarray:
    return np.asarray(rotation_angle_deg(np.asarray(R_est, float), np.asarray(R_gt, float)), dtype=float)


def te_batch(t_est, t_gt) -> np.ndarray:
    return np.linalg.norm(np.asarray(t_est, float) - np.asarray(t_gt, float), axis=-1)


def _min_over_symmetries(pts, syms, sym_pts, dist) -> float:
    """min over symmetry transforms s of max over points i of ``dist(S_s x, i)``, exactly.

    ``dist(points (B, M', 3), idx)`` gives the (B, M') errors of the points with indices ``idx``. An
    active-set search: the maximum over a few "active" points is a lower bound of each symmetry's full
    maximum; the symmetry with the lowest bound is evaluated in full, and if its worst point is already
    active, its maximum is its bound, which no other symmetry's maximum can beat; otherwise that point
    becomes active and every bound takes it in. Each round costs one symmetry's points plus one point
    under every symmetry, and few rounds are needed (a continuous symmetry's 315 transforms: about 5-20),
    instead of all symmetries times all points. (Hand-written: no library offers this min-max.)
    """
    S = None if sym_pts is not None else symmetry_array(syms)
    n_sym = len(sym_pts) if sym_pts is not None else len(S)

    def points(sel, idx=slice(None)):
        return sym_pts[sel][:, idx] if sym_pts is not None else symmetric_points(pts[idx], S[sel])

    if n_sym == 1:
        return float(dist(points(slice(0, 1)), slice(None)).max())
    bound = np.zeros(n_sym)
    active: set[int] = set()
    while True:
        s = int(np.argmin(bound))
        full = dist(points(slice(s, s + 1)), slice(None))[0]
        i = int(np.argmax(full))
        if i in active or full[i] <= bound[s]:
            return float(full[i])
        active.add(i)
        bound = np.maximum(bound, dist(points(slice(None), [i]), [i])[:, 0])


def mssd_batch(R_est, t_est, R_gt, t_gt, pts, syms, sym_pts=None) -> np.ndarray:
    """MSSD for N pose pairs (N,). ``sym_pts`` (S, M, 3) may be precomputed with :func:`symmetric_points`."""
    R_est, t_est, R_gt, t_gt = _batch(R_est, t_est, R_gt, t_gt)
    pts = np.asarray(pts, float).reshape(-1, 3)
    R_rel, t_rel = _relative(R_est, t_est, R_gt, t_gt)
    out = np.empty(len(R_est))
    for n in range(len(R_est)):
        q = pts @ R_rel[n].T + t_rel[n]  # the estimate in the ground-truth object frame
        out[n] = _min_over_symmetries(pts, syms, sym_pts, lambda P, idx, q=q: np.linalg.norm(P - q[idx], axis=-1))
    return out


def mspd_batch(R_est, t_est, R_gt, t_gt, K, pts, syms, sym_pts=None) -> np.ndarray:
    """MSPD in pixels for N pose pairs (N,); K is 3x3 or (N, 3, 3)."""
    R_est, t_est, R_gt, t_gt = _batch(R_est, t_est, R_gt, t_gt)
    pts = np.asarray(pts, float).reshape(-1, 3)
    K = np.asarray(K, float)
    Ks = np.broadcast_to(K.reshape(-1, 3, 3), (len(R_est), 3, 3))
    out = np.empty(len(R_est))
    for n in range(len(R_est)):
        uv_est = project(Ks[n], pts @ R_est[n].T + t_est[n])

        def dist(P, idx, n=n, uv_est=uv_est):
            uv = project(Ks[n], P.reshape(-1, 3) @ R_gt[n].T + t_gt[n]).reshape(P.shape[0], -1, 2)
            return np.linalg.norm(uv - uv_est[idx], axis=-1)

        out[n] = _min_over_symmetries(pts, syms, sym_pts, dist)
    return out


# --------------------------------------------------------------------------------------------
# VSD (BOP pose_error.vsd with visibility.py's 'bop19' masks), on the pixels the object covers
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Curves and recalls
# --------------------------------------------------------------------------------------------


def auc_posecnn(errors, max_threshold: float = AUC_MAX_THRESHOLD_M) -> float:
    """Area under the accuracy-vs-threshold curve from 0 to ``max_threshold``, normalised to [0, 1].

    This is the YCB-Video / PoseCNN definition (``VOCap`` in YCB_Video_toolbox's
    ``evaluate_poses_keyframe.m``, as ported to Python by DenseFusion, PVN3D, FFB6D), so numbers
    compare with published tables: errors above the threshold (and missing predictions: NaN or inf)
    count as failures; with the finite errors d_1 <= ... <= d_K of n instances, the curve is given
    the accuracy k/n on (d_{k-1}, d_k] and K/n on (d_K, max]. That credits each step with its right
    end, so it exceeds the exact area under the step function (:func:`auc_exact`) by d_K / (n max).
    """
    d = np.sort(np.asarray(errors, dtype=float).reshape(-1))  # NaN sorts last
    n = len(d)
    if n == 0:
        return float("nan")
    acc = np.arange(1, n + 1) / n
    keep = np.isfinite(d) & (d <= max_threshold)
    d, acc = d[keep], acc[keep]
    if len(d) == 0:
        return 0.0
    mrec = np.concatenate(([0.0], d, [max_threshold]))
    mpre = np.maximum.accumulate(np.concatenate(([0.0], acc, [acc[-1]])))
    i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]) / max_threshold)


def auc_exact(errors, max_threshold: float = AUC_MAX_THRESHOLD_M) -> float:
    """The exact area under the step curve acc(x) = #{d_i <= x} / n on [0, max], normalised: mean(1 - d/max)^+."""
    d = np.asarray(errors, dtype=float).reshape(-1)
    if len(d) == 0:
        return float("nan")
    d = np.where(np.isfinite(d), d, np.inf)
    return float(np.mean(np.clip(1.0 - d / max_threshold, 0.0, 1.0)))


def bop_match(errors: np.ndarray, threshold: float) -> np.ndarray:
    """BOP's greedy matching at one threshold: which ground truths (G,) get an estimate.

    ``errors`` is (P, G) with estimates already in decreasing score; each estimate takes the
    unmatched ground truth with the lowest error strictly below ``threshold`` (``pose_matching.match_poses``).
    """
    errors = np.asarray(errors, float)
    matched = np.zeros(errors.shape[1], dtype=bool)
    for row in errors:
        cand = np.where(matched, np.inf, row)
        g = int(np.argmin(cand)) if len(cand) else -1
        if g >= 0 and cand[g] < threshold:
            matched[g] = True
    return matched


def _threshold_hits(errors: np.ndarray, thresholds: np.ndarray, hits: list[np.ndarray]) -> None:
    """Set ``hits[g][k]`` where :func:`bop_match` at ``thresholds[k]`` matches ground truth g. With one
    estimate or one ground truth (most frames) the greedy matching is a plain threshold test on the best
    pair, done for all thresholds at once; otherwise bop_match runs per threshold."""
    P, G = errors.shape
    if P == 1 or G == 1:
        p, g = np.unravel_index(int(np.argmin(errors)), errors.shape) if P == 1 else (int(np.argmin(errors[:, 0])), 0)
        hits[g] |= errors[p, g] < thresholds
        return
    for k, th in enumerate(thresholds):
        for g in np.nonzero(bop_match(errors, th))[0]:
            hits[g][k] = True


# --------------------------------------------------------------------------------------------
# Streaming evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class InstanceResult:
    """The scores of one ground-truth instance (errors in metres / degrees / pixels; NaN: no prediction)."""

    name: str
    obj_id: int
    diameter: float  # metres
    symmetric: bool
    scene_id: int | None = None
    im_id: int | None = None
    gt_id: int = -1
    predicted: bool = False
    score: float = float("nan")
    add: float = float("nan")
    adi: float = float("nan")
    re: float = float("nan")  # degrees
    te: float = float("nan")
    mssd: float = float("nan")
    mspd: float = float("nan")  # pixels
    image_width: float = BOP_REFERENCE_WIDTH
    vsd: float = float("nan")  # mean over BOP's taus of the VSD errors
    mssd_hits: np.ndarray = field(default_factory=lambda: np.zeros(len(MSSD_THRESHOLDS), bool))
    mspd_hits: np.ndarray | None = None  # None where no camera matrix was given
    vsd_hits: np.ndarray | None = None  # (taus, thresholds); None where VSD was not computed ...
    vsd_missing: str = ""  # ... and why

    @property
    def add_s(self) -> float:
        return self.adi if self.symmetric else self.add

    def correct(self, k: float = ADD_THRESHOLD) -> bool:
        """ADD(-S) below k times the diameter (BOP uses a strict inequality)."""
        return bool(self.predicted and self.add_s < k * self.diameter)

    def to_dict(self) -> dict:
        """A flat row (mm, degrees, pixels) for per-instance CSV files."""
        mm = (lambda v: None if math.isnan(v) else v * 1000.0)
        num = (lambda v: None if math.isnan(v) else v)
        return {
            "scene_id": self.scene_id, "im_id": self.im_id, "obj_id": self.obj_id, "name": self.name,
            "gt_id": self.gt_id, "predicted": self.predicted, "score": num(self.score),
            "add_mm": mm(self.add), "adds_mm": mm(self.adi), "add_s_mm": mm(self.add_s),
            "rot_err_deg": num(self.re), "trans_err_mm": mm(self.te), "mssd_mm": mm(self.mssd),
            "mspd_px": num(self.mspd), "vsd_mean": num(self.vsd), "add_s_01d": self.correct(),
            "diameter_mm": self.diameter * 1000.0,
        }


def _gt_index(g, i: int) -> int:
    gid = int(getattr(g, "gt_id", -1))
    return gid if gid >= 0 else i


class _ObjectData:
    """Per-object evaluation data, computed once: points, KD-tree, symmetry transforms."""

    def __init__(self, model, max_points: int | None, max_sym_disc_step: float):
        self.model = model
        self.pts = model.vertices if max_points is None else model.eval_points(max_points)
        self.syms = symmetry_transformations(model.symmetry, max_sym_disc_step)
        small = len(self.syms) * len(self.pts) <= 2 * _CHUNK  # else MSSD/MSPD make them block by block
        self.sym_pts = symmetric_points(self.pts, self.syms) if small else None
        self._tree = None

    @property
    def tree(self):
        if self._tree is None:
            self._tree = NearestModelPoints(self.pts)
        return self._tree


class PoseEvaluator:
    """Streaming scorer: feed frames with :meth:`add_frame`, read the totals with :meth:`report`.

    ``catalogue`` supplies meshes, diameters and symmetry for every object named in the ground
    truth; ``max_points`` subsamples model vertices (None: all of them, as BOP does with its
    ``models_eval`` meshes). VSD (and so BOP's average recall) is computed for frames given a depth
    image and a camera matrix, with ``renderer`` (see :func:`vsd`; e.g. ``data.render.DepthPatches()``)
    and visibility tolerance ``vsd_delta`` (metres).
    """

    def __init__(self, catalogue, max_points: int | None = None, max_sym_disc_step: float = MAX_SYM_DISC_STEP,
                 default_image_width: float = BOP_REFERENCE_WIDTH, renderer=None, vsd_delta: float = VSD_DELTA_M):
        self.catalogue = catalogue
        self.max_points = max_points
        self.max_sym_disc_step = max_sym_disc_step
        self.default_image_width = float(default_image_width)
        self.renderer = renderer
        self.vsd_delta = float(vsd_delta)
        self.instances: list[InstanceResult] = []
        self.n_frames = 0
        self.false_positives: dict[str, int] = defaultdict(int)  # predictions matched to no ground truth
        self.n_invalid_predictions = 0  # non-finite or malformed poses, dropped
        self._objects: dict[str, _ObjectData] = {}

    def _object(self, name: str) -> _ObjectData:
        if name not in self._objects:
            self._objects[name] = _ObjectData(self.catalogue[name], self.max_points, self.max_sym_disc_step)
        return self._objects[name]

    def add_frame(self, gts, predictions, K=None, image_width: float | None = None,
                  scene_id: int | None = None, im_id: int | None = None, depth=None) -> list[InstanceResult]:
        """Score one frame: ``gts`` (GroundTruthPose list), ``predictions`` (ObjectPose list), matched by name.

        ``K`` (3x3) enables MSPD; ``image_width`` scales the MSPD thresholds (default 640); ``depth``
        (HxW metres, 0 or non-finite = no measurement) with ``K`` and the evaluator's renderer enables
        VSD. Returns the frame's per-instance results (also kept for :meth:`report`).
        """
        self.n_frames += 1
        width = float(image_width or self.default_image_width)
        vsd_missing = ("off (the evaluator has no renderer)" if self.renderer is None else "no depth image"
                       if depth is None else "no camera matrix" if K is None else "")
        if not vsd_missing:
            depth = np.asarray(depth)
        gts_by_name: dict[str, list] = defaultdict(list)
        for g in gts:
            gts_by_name[g.name].append(g)
        preds_by_name: dict[str, list] = defaultdict(list)
        for p in predictions:
            if not valid_pose(p.R, p.t):
                self.n_invalid_predictions += 1
                continue
            preds_by_name[p.name].append(p)
        for name, preds in preds_by_name.items():
            if name not in gts_by_name:
                self.false_positives[name] += len(preds)

        frame_results = []
        for name, group in gts_by_name.items():
            obj = self._object(name)
            preds = sorted(preds_by_name.get(name, []), key=lambda p: -float(p.score))
            kept = preds[: len(group)]  # BOP n_top = -1: as many estimates as instances
            self.false_positives[name] += len(preds) - len(kept)
            # without estimates VSD needs no depth: every instance fails it
            missing = "" if not kept and self.renderer is not None else vsd_missing
            results = [
                InstanceResult(name=name, obj_id=int(g.obj_id), diameter=float(obj.model.diameter),
                               symmetric=bool(obj.model.symmetric), scene_id=scene_id, im_id=im_id,
                               gt_id=_gt_index(g, i), image_width=width,
                               mspd_hits=None if K is None else np.zeros(len(MSPD_THRESHOLDS_PX), bool),
                               vsd_hits=None if missing else np.zeros((len(VSD_TAUS), len(VSD_THRESHOLDS)), bool),
                               vsd_missing=missing)
                for i, g in enumerate(group)
            ]
            if kept:
                self._score_group(obj, group, kept, results, K, width, None if vsd_missing else depth)
            frame_results.extend(results)
        self.instances.extend(frame_results)
        return frame_results

    def _score_group(self, obj: _ObjectData, group, kept, results, K, width, depth=None):
        P, G = len(kept), len(group)
        ii, jj = np.meshgrid(np.arange(P), np.arange(G), indexing="ij")
        ii, jj = ii.ravel(), jj.ravel()
        R_e = np.stack([np.asarray(p.R, float) for p in kept])[ii]
        t_e = np.stack([np.asarray(p.t, float).reshape(3) for p in kept])[ii]
        R_g = np.stack([np.asarray(g.R, float) for g in group])[jj]
        t_g = np.stack([np.asarray(g.t, float).reshape(3) for g in group])[jj]
        err = {
            "add": add_batch(R_e, t_e, R_g, t_g, obj.pts),
            "adi": adi_batch(R_e, t_e, R_g, t_g, obj.pts, tree=obj.tree),
            "re": re_batch(R_e, R_g),
            "te": te_batch(t_e, t_g),
            "mssd": mssd_batch(R_e, t_e, R_g, t_g, obj.pts, obj.syms, sym_pts=obj.sym_pts),
        }
        if K is not None:
            err["mspd"] = mspd_batch(R_e, t_e, R_g, t_g, K, obj.pts, obj.syms, sym_pts=obj.sym_pts)
        err = {k: v.reshape(P, G) for k, v in err.items()}
        vsd_err = None if depth is None else self._vsd_errors(obj, R_e, t_e, R_g, t_g, K, depth).reshape(P, G, -1)
        # Primary matching (errors, accuracies, AUC): decreasing score, lowest ADD(-S) among unmatched.
        primary = err["adi"] if obj.model.symmetric else err["add"]
        taken = np.zeros(G, dtype=bool)
        for p in range(P):
            g = int(np.argmin(np.where(taken, np.inf, primary[p])))
            taken[g] = True
            r = results[g]
            r.predicted, r.score = True, float(kept[p].score)
            for key in err:
                setattr(r, key, float(err[key][p, g]))
            if vsd_err is not None:
                r.vsd = float(vsd_err[p, g].mean())
        # BOP recalls: the toolkit's thresholded matching, once per threshold. MSSD is infinite where the
        # centres are a diameter or more apart (eval_calc_errors' bounding-sphere test).
        d = obj.model.diameter
        mssd_bop = np.where(err["te"] < d, err["mssd"], np.inf)
        _threshold_hits(mssd_bop, np.asarray(MSSD_THRESHOLDS) * d, [r.mssd_hits for r in results])
        if K is not None:
            scaled = err["mspd"] * (BOP_REFERENCE_WIDTH / width)
            _threshold_hits(scaled, np.asarray(MSPD_THRESHOLDS_PX, float), [r.mspd_hits for r in results])
        if vsd_err is not None:
            for k in range(len(VSD_TAUS)):  # one matching per (tau, threshold), as eval_bop19_pose runs them
                _threshold_hits(vsd_err[:, :, k], np.asarray(VSD_THRESHOLDS), [r.vsd_hits[k] for r in results])

    def _vsd_errors(self, obj: _ObjectData, R_e, t_e, R_g, t_g, K, depth) -> np.ndarray:
        """VSD at BOP's taus (N, taus) for N pose pairs; each distinct pose is rendered once, and pairs whose
        bounding-sphere projections do not overlap are 1 without rendering (as eval_calc_errors does)."""
        model, diameter = obj.model, float(obj.model.diameter)
        patches: dict[bytes, object] = {}

        def patch(R, t):
            key = R.tobytes() + t.tobytes()
            if key not in patches:
                patches[key] = self.renderer(model, R, t, K, depth.shape)
            return patches[key]

        out = np.ones((len(R_e), len(VSD_TAUS)))
        for n in range(len(R_e)):
            if overlapping_sphere_projections(0.5 * diameter, t_e[n], t_g[n]):
                out[n] = vsd_from_patches(depth, patch(R_e[n], t_e[n]), patch(R_g[n], t_g[n]), K, self.vsd_delta,
                                          VSD_TAUS, True, diameter)
        return out

    def report(self) -> dict:
        """The report: per object (under "objects"), pooled over all instances ("overall"), and object means."""
        by_name: dict[str, list] = defaultdict(list)
        for r in self.instances:
            by_name[r.name].append(r)
        objects = {name: summarise(rs, self.false_positives.get(name, 0)) for name, rs in sorted(by_name.items())}
        overall = summarise(self.instances, sum(self.false_positives.values()))
        fractions = ("add_01d_acc", "adds_01d_acc", "add_s_01d_acc", "auc_add", "auc_adds", "acc_5cm5deg",
                     "mssd_recall", "mspd_recall", "bop19_average_recall", "bop19_average_recall_vsd",
                     "bop19_average_recall_mssd", "bop19_average_recall_mspd")
        mean_over_objects = {}
        for key in fractions:
            vals = [o[key] for o in objects.values() if o[key] is not None]
            mean_over_objects[key] = float(np.mean(vals)) if vals else None
        return {
            "objects": objects,
            "overall": overall,
            "mean_over_objects": mean_over_objects,
            "n_frames": self.n_frames,
            "n_invalid_predictions": self.n_invalid_predictions,
            "settings": report_settings(self.max_points, self.vsd_delta),
        }


# How far an estimate's R may be from orthonormal (max |R R^T - I|, |det R - 1|) and still be scored: rotations
# written with a few decimals (BOP results files, real annotations) deviate by up to ~5e-3.
ROTATION_TOLERANCE = 1e-2


def valid_pose(R, t) -> bool:
    """Whether an estimate can be scored: a finite 3-vector t and a proper rotation R (orthonormal within
    ROTATION_TOLERANCE, det +1). A scaled matrix or a reflection is not a pose."""
    R, t = np.asarray(R, float), np.asarray(t, float)
    if R.shape != (3, 3) or t.size != 3 or not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        return False
    return (float(np.abs(R @ R.T - np.eye(3)).max()) <= ROTATION_TOLERANCE
            and abs(float(np.linalg.det(R)) - 1.0) <= ROTATION_TOLERANCE)


def evaluate_pairs(pairs, catalogue, K=None, image_width: float | None = None, max_points: int | None = None) -> dict:
    """The report for instances matched elsewhere: ``pairs`` of (prediction or None, ground truth).

    Each pair is scored as its own frame (so no re-matching happens); a prediction is scored as the
    ground truth's object whatever its name; None is a missed instance. ``K`` enables MSPD.
    """
    import dataclasses

    ev = PoseEvaluator(catalogue, max_points=max_points)
    for pred, gt in pairs:
        preds = [] if pred is None else [dataclasses.replace(pred, name=gt.name)]
        ev.add_frame([gt], preds, K=K, image_width=image_width)
    return ev.report()


def report_settings(max_points=None, vsd_delta: float = VSD_DELTA_M) -> dict:
    """How the numbers were computed, stored with every report."""
    return {
        "units": "errors in mm, degrees and pixels; fractions in 0..1",
        "add_threshold": f"{ADD_THRESHOLD} x diameter, strict (<), ADD-S for catalogue-symmetric objects in add_s",
        "acc_5cm5deg": "rotation error < 5 deg and translation error < 50 mm",
        "auc": f"YCB-Video/PoseCNN VOCap, thresholds 0..{AUC_MAX_THRESHOLD_M * 1000:.0f} mm, normalised to 1",
        "mssd_thresholds": "0.05..0.50 x diameter, step 0.05 (BOP 2019)",
        "mspd_thresholds": "5..50 px, step 5, scaled by image width / 640 (BOP 2019)",
        "vsd": f"BOP pose_error.vsd: cost step, delta {vsd_delta * 1000:g} mm, taus 0.05..0.50 x diameter, "
               "normalized by diameter, visibility 'bop19'; thresholds 0.05..0.50, step 0.05; 1 where the "
               "bounding-sphere projections do not overlap",
        "bop19_average_recall": "mean of the VSD (over 10 taus x 10 thresholds), MSSD and MSPD recalls, each "
                                "recall = matched / ground truth with BOP's per-threshold greedy matching "
                                "(eval_bop19_pose.py); not available (None) without depth",
        "symmetries": f"BOP get_symmetry_transformations, max_sym_disc_step={MAX_SYM_DISC_STEP}",
        "matching": "per object and frame; top n_gt predictions by score; each takes the unmatched ground truth "
                    "with the lowest ADD(-S); MSSD/MSPD recalls use BOP's thresholded greedy matching",
        "missing_prediction": "failure in every accuracy, recall and AUC; excluded from error means and medians",
        "model_points": "all vertices" if max_points is None else f"at most {max_points} vertices",
    }


def summarise(results: list[InstanceResult], false_positives: int = 0) -> dict:
    """The report keys for a set of instances (one object, or all of them pooled)."""
    n_gt = len(results)
    scored = [r for r in results if r.predicted]

    def stat(attr, fn, scale=1.0):
        vals = np.array([getattr(r, attr) for r in scored], dtype=float)
        return float(fn(vals)) * scale if len(vals) else None

    def frac(count):
        return float(count) / n_gt if n_gt else None

    inf_if_missing = (lambda attr: [getattr(r, attr) if r.predicted else np.inf for r in results])
    out = {
        "n_gt": n_gt,
        "n_predicted": len(scored),
        "n_false_positives": int(false_positives),
        "add_mean_mm": stat("add", np.mean, 1000.0),
        "add_median_mm": stat("add", np.median, 1000.0),
        "adds_mean_mm": stat("adi", np.mean, 1000.0),
        "adds_median_mm": stat("adi", np.median, 1000.0),
        "rot_err_mean_deg": stat("re", np.mean),
        "rot_err_median_deg": stat("re", np.median),
        "trans_err_mean_mm": stat("te", np.mean, 1000.0),
        "trans_err_median_mm": stat("te", np.median, 1000.0),
        "mssd_mean_mm": stat("mssd", np.mean, 1000.0),
        "add_01d_acc": frac(sum(r.predicted and r.add < ADD_THRESHOLD * r.diameter for r in results)),
        "adds_01d_acc": frac(sum(r.predicted and r.adi < ADD_THRESHOLD * r.diameter for r in results)),
        "add_s_01d_acc": frac(sum(r.correct() for r in results)),
        "auc_add": auc_posecnn(inf_if_missing("add")) if n_gt else None,
        "auc_adds": auc_posecnn(inf_if_missing("adi")) if n_gt else None,
        "acc_5cm5deg": frac(sum(r.predicted and r.re < 5.0 and r.te < 0.05 for r in results)),
        "mssd_recall": (float(np.mean(np.sum([r.mssd_hits for r in results], axis=0) / n_gt)) if n_gt else None),
    }
    with_k = [r for r in results if r.mspd_hits is not None]
    out["mspd_recall"] = float(np.mean(np.sum([r.mspd_hits for r in with_k], axis=0) / len(with_k))) if with_k else None
    scored_k = [r.mspd for r in with_k if r.predicted]
    out["mspd_mean_px"] = float(np.mean(scored_k)) if scored_k else None
    out.update(bop19_recalls(results))
    return out


def bop19_recalls(results: list[InstanceResult]) -> dict:
    """BOP 2019's average recalls over a set of ground-truth instances (eval_bop19_pose.py).

    Each recall is (ground truth matched below the threshold) / (ground truth), averaged over the
    thresholds (and for VSD over the taus too); ``bop19_average_recall`` is the mean of the three. A
    recall that cannot be computed for every instance (VSD without depth, MSPD without K) is None, as
    is the average, and ``bop19_unavailable_reason`` says why.
    """
    n_gt = len(results)

    def mean_recall(attr):
        hits = [getattr(r, attr) for r in results]
        if not n_gt or any(h is None for h in hits):
            return None
        return float(np.mean(np.sum(hits, axis=0) / n_gt))

    out = {
        "bop19_average_recall_vsd": mean_recall("vsd_hits"),
        "bop19_average_recall_mssd": mean_recall("mssd_hits"),
        "bop19_average_recall_mspd": mean_recall("mspd_hits"),
    }
    parts = list(out.values())
    out["bop19_average_recall"] = float(np.mean(parts)) if all(v is not None for v in parts) else None
    reason = None
    if not n_gt:
        reason = "no ground truth"
    elif out["bop19_average_recall"] is None:
        why = defaultdict(int)
        for r in results:
            if r.vsd_hits is None:
                why[f"VSD: {r.vsd_missing or 'not computed'}"] += 1
            if r.mspd_hits is None:
                why["MSPD: no camera matrix"] += 1
        reason = "; ".join(f"{k} for {v} of {n_gt} ground-truth instances" for k, v in sorted(why.items()))
    out["bop19_unavailable_reason"] = reason
    return out
