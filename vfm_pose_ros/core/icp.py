"""ICP refinement of a pose against a depth cloud (Open3D point-to-plane, imported lazily).

What the calibration experiment (DESIGN notes) taught, built in:

* Before ICP, translate the model so the centroid of its *visible* points (normals
  facing the camera) meets the centroid of the observed cloud: RGB-only poses are
  mostly wrong in depth, and ICP's nearest-neighbour matching cannot undo a large
  offset along the viewing ray.
* Try a few rotated starts (multi-start) and keep the best: the remaining failures
  are gross rotation errors that one ICP run from a bad start does not escape.
* When the RGB rotation may be far off (a network still learning, an unusual view),
  :func:`depth_hypotheses` scores a few hundred rotations spread over SO(3) against the
  cloud (centroid-aligned, two KD-tree look-ups each, no ICP) and the best distinct ones
  join the starts: a coarse global search, then ICP only where it pays.

Registration direction: the *observed* points are the source and the model (in the
camera frame, with its mesh normals) is the target, so point-to-plane uses exact
model normals rather than normals estimated from noisy depth, and every observed
point (all on the visible surface) finds its partner on the model's visible side.

Threads: the starts are independent ICP runs and Open3D's registration, like pykdtree's
look-ups, releases the GIL, so they run on a small shared thread pool (``threads``; by default
the cores this process may use, at most 8). pykdtree spreads each look-up over its own OpenMP
threads (OMP_NUM_THREADS). The thread count changes the answer only by float
rounding (Open3D's internal sums), which on a near-tie between starts can pick the other one.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from pykdtree.kdtree import KDTree
from scipy.spatial.transform import Rotation

from .transforms import invert_T, make_T, transform_points


@dataclass
class ICPResult:
    R: np.ndarray  # refined rotation, object -> camera
    t: np.ndarray  # refined translation, metres
    fitness: float  # fraction of observed points with a model point within the final threshold
    rmse: float  # inlier RMSE, metres
    score: float  # the multi-start selection score (see refine_icp)
    start: int  # index of the winning start (0 = the given pose)
    n_observed: int


_POOLS: dict[int, ThreadPoolExecutor] = {}

# How much better than a trusted pose's neighbourhood a global hypothesis must score to replace it: on partial
# clouds a wrong pose can fit about as well, and then the RGB evidence decides
GLOBAL_MARGIN = 0.1


def resolve_threads(threads: int | None = None) -> int:
    """Threads for the depth stage: ``threads`` when > 0, else the cores this process may use (at most 8)."""
    if threads and threads > 0:
        return int(threads)
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def parallel_map(fn, items, threads: int | None = None) -> list:
    """``[fn(x) for x in items]`` on a shared pool of ``threads`` threads (in order; serial for one thread)."""
    items = list(items)
    n = resolve_threads(threads)
    if n == 1 or len(items) < 2:
        return [fn(x) for x in items]
    if n not in _POOLS:
        _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="vfm-icp")
    return list(_POOLS[n].map(fn, items))


def estimate_normals(points, k: int = 16) -> np.ndarray:
    """Normals of a model point set, oriented away from its centroid (good for closed, roughly convex parts)."""
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(k))
    n = np.asarray(pcd.normals)
    out = np.asarray(points) - np.asarray(points).mean(0)
    flip = np.sum(n * out, axis=1) < 0
    n[flip] *= -1
    return n


def visible_mask(R, t, points, normals) -> np.ndarray:
    """Model points whose normals face the camera at pose (R, t) (self-occlusion ignored)."""
    cam = transform_points(R, t, points)
    n_cam = np.asarray(normals) @ np.asarray(R).T
    return np.sum(n_cam * cam, axis=1) < 0


def clean_observed(points, center=None, radius=None, z_window=None) -> np.ndarray:
    """Drop mask bleed: points farther than ``radius`` from ``center`` and depths far from the median."""
    pts = np.asarray(points, dtype=float)
    pts = pts[np.isfinite(pts).all(1)]
    if len(pts) and z_window is not None:
        pts = pts[np.abs(pts[:, 2] - np.median(pts[:, 2])) <= z_window]
    if len(pts) and center is not None and radius is not None:
        pts = pts[np.linalg.norm(pts - np.asarray(center).reshape(1, 3), axis=1) <= radius]
    return pts


def _start_rotations(angle_deg: float, n_starts: int) -> list[np.ndarray]:
    """Identity, then +-angle about the camera x, y and z axes (applied about the object's centre)."""
    rots = [np.eye(3)]
    for axis in (0, 1, 2):
        for sign in (1.0, -1.0):
            v = np.zeros(3)
            v[axis] = sign * np.radians(angle_deg)
            rots.append(Rotation.from_rotvec(v).as_matrix())
    return rots[: max(1, n_starts)]


def uniform_rotations(n: int, seed: int = 0) -> np.ndarray:
    """n rotations spread evenly over SO(3) (nx3x3): a super-Fibonacci spiral of unit quaternions
    (Alexa, CVPR 2022), deterministic and without the clumps of random sampling. Hand-written:
    scipy offers only random or group rotations."""
    phi, psi = np.sqrt(2.0), 1.533751168755204288118041
    i = np.arange(n, dtype=float) + 0.5 + (seed % 97) * 1e-3
    s = i / n
    r, R_ = np.sqrt(s), np.sqrt(1.0 - s)
    alpha, beta = 2.0 * np.pi * i / phi, 2.0 * np.pi * i / psi
    q = np.stack([r * np.sin(alpha), r * np.cos(alpha), R_ * np.sin(beta), R_ * np.cos(beta)], axis=1)
    return Rotation.from_quat(q).as_matrix()


def fit_to_model(model_tree, observed, R, t, max_distance: float) -> tuple[float, float]:
    """(fitness, inlier rmse) of ``observed`` (Nx3, camera frame) against the model at (R, t): Open3D's
    ``evaluate_registration`` (fitness = fraction of points within ``max_distance`` of the model, rmse over
    those), computed in the model's own frame against one prebuilt ``model_tree`` (a pykdtree KDTree of the
    model points) instead of a tree of the posed model built per call: ICP scores every start this way."""
    in_model_frame = np.ascontiguousarray((np.asarray(observed, float) - t) @ R)  # R^T (p - t), row-wise
    d, _ = model_tree.query(in_model_frame, distance_upper_bound=max_distance)
    inlier = np.isfinite(d)
    return float(inlier.mean()), float(np.sqrt(np.mean(d[inlier] ** 2))) if inlier.any() else 0.0


def depth_hypotheses(model_points, model_normals, observed, diameter: float, rotations,
                     *, n_model: int = 256, n_observed: int = 256, top: int = 6,
                     min_separation_deg: float = 30.0, tolerance: float = 0.1) -> list[tuple[np.ndarray, np.ndarray]]:
    """The ``top`` best, mutually distinct poses among ``rotations`` (Nx3x3), each translated so its
    camera-facing model points centre on the cloud, scored without ICP.

    Score = 1 - mean of two truncated distances (in ``tolerance`` x diameter): observed points to the
    model (is every observed point on the object?) and camera-facing model points to the cloud (is the
    visible side there?). Visibility is judged against the ray to the cloud's centroid, which is
    what makes this vectorise over all rotations at once. All rotations are screened on a quarter of
    the points; the best eighth of them (at least 8 x ``top``) are scored on all. The look-ups (about
    60,000 per call) use pykdtree, 1.5x faster than SciPy's cKDTree on one thread; it runs them on
    OpenMP threads (OMP_NUM_THREADS)."""
    obs = np.asarray(observed, dtype=np.float64)
    pts = np.asarray(model_points, dtype=np.float64)
    nrm = np.asarray(model_normals, dtype=np.float64)
    Rs = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    rng = np.random.default_rng(0)
    sel = rng.permutation(len(pts))[:n_model]
    pts_s, nrm_s = pts[sel], nrm[sel]
    obs_s = obs[rng.permutation(len(obs))[:n_observed]]
    c = obs.mean(0)
    tau = tolerance * diameter
    model_tree = KDTree(pts)
    obs_tree = KDTree(obs)

    def score(Rs, P, N, Q):
        view = np.einsum("nji,j->ni", Rs, c)  # the centroid's direction in each hypothesis' object frame
        vis = (N @ view.T).T < 0  # (n, P) camera-facing model points
        cnt = vis.sum(1)
        vis_centre = (vis[:, :, None] * P[None]).sum(1) / np.maximum(cnt, 1)[:, None]
        ts = c[None] - np.einsum("nij,nj->ni", Rs, vis_centre)
        # observed -> model, in each hypothesis' object frame
        q_obj = np.einsum("nji,nmj->nmi", Rs, Q[None] - ts[:, None])
        d1, _ = model_tree.query(q_obj.reshape(-1, 3), distance_upper_bound=tau)
        s1 = np.minimum(d1, tau).reshape(len(Rs), -1).mean(1) / tau
        # camera-facing model -> observed (only those points are looked up: about half the queries)
        hyp, pt = np.nonzero(vis)
        d2 = np.zeros(vis.shape)
        m_cam = np.einsum("kij,kj->ki", Rs[hyp], P[pt]) + ts[hyp]
        d2[hyp, pt] = np.minimum(obs_tree.query(m_cam, distance_upper_bound=tau)[0], tau) / tau
        s2 = d2.sum(1) / np.maximum(cnt, 1)
        out = 1.0 - 0.5 * (s1 + s2)
        out[cnt < max(3, P.shape[0] // 25)] = -np.inf
        return out, ts

    screen, _ = score(Rs, pts_s[: max(16, n_model // 4)], nrm_s[: max(16, n_model // 4)],
                      obs_s[: max(16, n_observed // 4)])
    n_keep = min(len(Rs), max(8 * top, len(Rs) // 8))
    cand = np.argsort(-screen, kind="stable")[:n_keep]
    Rs = Rs[cand]
    scores, ts = score(Rs, pts_s, nrm_s, obs_s)
    chosen: list[int] = []
    cos_sep = np.cos(np.radians(min_separation_deg))
    for k in np.argsort(-scores, kind="stable"):
        if not np.isfinite(scores[k]) or len(chosen) >= top:
            break
        # distinct: relative rotation angle above the separation (trace formula)
        if all((np.trace(Rs[j].T @ Rs[k]) - 1.0) / 2.0 < cos_sep for j in chosen):
            chosen.append(int(k))
    return [(Rs[k], ts[k]) for k in chosen]


def refine_icp(
    R0,
    t0,
    model_points,
    observed_points,
    *,
    model_normals=None,
    diameter: float | None = None,
    align_centroid: bool = True,
    n_starts: int = 7,
    start_angle_deg: float = 25.0,
    extra_starts=(),
    extra_margin: float = GLOBAL_MARGIN,
    thresholds=(0.1, 0.04, 0.015),
    max_iterations: int = 30,
    refine_top: int = 2,
    final_tie: float = 0.05,
    min_points: int = 30,
    max_model_points: int = 3000,
    coarse_observed: int = 600,
    middle_observed: int = 1200,
    threads: int | None = None,
) -> ICPResult | None:
    """Refine (R0, t0) so the model's visible surface meets the observed cloud (camera frame, metres).

    ``thresholds`` are correspondence distances as fractions of the diameter, coarse to
    fine. Each start (the given pose, then rotated ones, then ``extra_starts``: (R, t) pairs such as
    :func:`depth_hypotheses` returns) is centroid-aligned and refined at the coarsest distance on at most
    ``coarse_observed`` points; the ``refine_top`` best continue through the finer ones but the last, on at
    most ``middle_observed`` points; the leader after those (and any start within ``final_tie`` of its score)
    takes the last pass on the whole cloud. An extra start wins only by ``extra_margin`` over the given pose's
    neighbourhood. The winner has the best score = mean of (observed->model fitness, visible-model->observed
    coverage) minus 0.5 * rmse / threshold (at least 1.5 x the model's sample spacing): fitness alone rewards
    poses whose model merely *contains* the observed points, the coverage term penalises them.
    Returns None when the cloud has fewer than ``min_points`` points. The starts run on ``threads``
    threads (see the module docstring).
    """
    import open3d as o3d

    obs = np.asarray(observed_points, dtype=np.float64)
    obs = obs[np.isfinite(obs).all(1)]
    if len(obs) < min_points:
        return None
    pts = np.asarray(model_points, dtype=np.float64)
    if len(pts) > max_model_points:
        sel = np.random.default_rng(0).choice(len(pts), max_model_points, replace=False)
        pts = pts[sel]
        normals = None if model_normals is None else np.asarray(model_normals)[sel]
    else:
        normals = None if model_normals is None else np.asarray(model_normals, dtype=np.float64)
    if normals is None:
        normals = estimate_normals(pts)
    if diameter is None or diameter <= 0:
        diameter = float(np.linalg.norm(pts.max(0) - pts.min(0)))
    R0 = np.asarray(R0, dtype=float)
    t0 = np.asarray(t0, dtype=float).reshape(3)

    source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(obs))
    coarse_source, middle_source = source, source
    if len(obs) > coarse_observed:  # the coarse pass only needs the shape, not every point
        sub = obs[np.random.default_rng(1).choice(len(obs), coarse_observed, replace=False)]
        coarse_source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(sub))
    if len(obs) > middle_observed:
        sub = obs[np.random.default_rng(2).choice(len(obs), middle_observed, replace=False)]
        middle_source = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(sub))
    obs_centroid = obs.mean(0)
    model_centre = pts.mean(0)
    est = o3d.pipelines.registration.TransformationEstimationPointToPlane()
    pts, obs = np.ascontiguousarray(pts), np.ascontiguousarray(obs)  # (pykdtree wants C order)
    model_tree, obs_tree = KDTree(pts), KDTree(obs)  # the model in its own frame: one tree scores every start
    # Scoring below the model's own sample spacing would measure the sampling, not the fit
    spacing = float(np.median(model_tree.query(pts, k=2)[0][:, 1]))
    final_thr = max(thresholds[-1] * diameter, 1.5 * spacing)

    def run(start, fracs, sources):
        for frac, src in zip(fracs, sources):
            reg = o3d.pipelines.registration.registration_icp(
                src, start["target"], frac * diameter, start["T"], est,
                o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=max_iterations),
            )
            # Point-to-plane is ill-conditioned on surfaces of revolution and flat patches: with few
            # correspondences a step can throw the cloud away. Such a pass is not taken.
            T_new, T_old = reg.transformation, start["T"]
            moved = np.linalg.norm((T_new[:3, :3] - T_old[:3, :3]) @ obs_centroid + T_new[:3, 3] - T_old[:3, 3])
            if reg.fitness == 0.0 or moved > diameter:
                break
            start["T"] = reg.transformation

    def evaluate(start, thr):
        """(score, fitness, rmse, R, t); observed' = T observed matches the model at (R, t), so the
        refined model pose is T^-1 (R, t)."""
        T = invert_T(start["T"]) @ make_T(start["R"], start["t"])
        Rr, tr = T[:3, :3], T[:3, 3]
        vis = visible_mask(Rr, tr, pts, normals)
        if vis.sum() == 0:
            return -np.inf, 0.0, np.inf, Rr, tr
        fitness, rmse = fit_to_model(model_tree, obs, Rr, tr, thr)
        d, _ = obs_tree.query(transform_points(Rr, tr, pts[vis]), distance_upper_bound=thr)
        coverage = float(np.mean(np.isfinite(d)))
        return 0.5 * (fitness + coverage) - 0.5 * rmse / thr, fitness, rmse, Rr, tr

    candidates = []
    for dR in _start_rotations(start_angle_deg, n_starts):
        # rotate about the model centre as seen in the camera, keeping that centre in place
        R = dR @ R0
        candidates.append((R, (R0 @ model_centre + t0) - R @ model_centre))
    n_local = len(candidates)
    candidates += [(np.asarray(R, float), np.asarray(t, float).reshape(3)) for R, t in extra_starts]
    aligned = [align_centroid] * len(candidates)
    if align_centroid:  # the given pose as it is, too: centroids mislead on partly occluded objects
        candidates.insert(1, (R0, t0))
        aligned.insert(1, False)
        n_local += 1
    starts = []
    for (R, t), align in zip(candidates, aligned):
        if align:
            vis = visible_mask(R, t, pts, normals)
            if vis.sum() >= 10:
                t = t + (obs_centroid - transform_points(R, t, pts[vis]).mean(0))
        target = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(transform_points(R, t, pts)))
        target.normals = o3d.utility.Vector3dVector(normals @ R.T)
        starts.append({"R": R, "t": t, "target": target, "T": np.eye(4)})
    # coarse pass for every start; the finer passes only for the most promising ones (ICP is the cost),
    # always including the best start near the given pose
    mid = thresholds[min(1, len(thresholds) - 1)] * diameter

    def coarse(st):
        run(st, thresholds[:1], [coarse_source])
        return evaluate(st, mid)[0] if len(starts) > refine_top else 0.0

    def middle(st):
        # the finer passes but the last need only the shape: the subsample
        run(st, thresholds[1:-1], [middle_source] * (len(thresholds) - 2))
        return evaluate(st, thresholds[-2] * diameter if len(thresholds) > 2 else final_thr)

    coarse_scores = parallel_map(coarse, starts, threads)
    if len(starts) > refine_top:
        order = np.argsort(-np.asarray(coarse_scores), kind="stable").tolist()
        best_local = next(k for k in order if k < n_local)
        keep = sorted(set(order[:refine_top]) | {best_local})
    else:
        keep = list(range(len(starts)))
    # an extra (global) start must beat the given pose's neighbourhood by extra_margin (GLOBAL_MARGIN)
    margin = {k: extra_margin if k >= n_local else 0.0 for k in keep}
    middle_scores = parallel_map(middle, [starts[k] for k in keep], threads)
    ranked = [(ev[0] - margin[k], k) for k, ev in zip(keep, middle_scores) if np.isfinite(ev[0])]
    if not ranked:
        return None
    # The last pass (the whole cloud, the finest distance) polishes a pose rather than reorders the starts, and it
    # was a third of the stage's time when every kept start took it: only the leader and those within ``final_tie``
    # of it take it
    top = max(ranked)[0]
    finalists = [k for rank, k in ranked if rank >= top - final_tie]
    if len(thresholds) > 1:
        parallel_map(lambda st: run(st, thresholds[-1:], [source]), [starts[k] for k in finalists], threads)
    best, best_rank = None, -np.inf
    for k in finalists:
        score, fitness, rmse, Rr, tr = evaluate(starts[k], final_thr)
        if np.isfinite(score) and score - margin[k] > best_rank:
            U, _, Vt = np.linalg.svd(Rr)  # re-orthonormalise accumulated float error
            best, best_rank = ICPResult(U @ Vt, tr.copy(), fitness, rmse, score, k, len(obs)), score - margin[k]
    return best


_GLOBAL_ROTATIONS: dict[int, np.ndarray] = {}


def refine_with_depth(R, t, observed, model_points, model_normals, diameter, *, n_starts: int = 7,
                      min_fitness: float = 0.3, max_observed: int = 2500, global_rotations: int = 0,
                      global_starts: int = 4, trust_pose: bool | None = None, good_fitness: float = 0.8,
                      threads: int | None = None):
    """The depth stage both backends share: clean the masked depth cloud, ICP the model into it, and keep
    the RGB pose when the cloud is too small, or the fit too poor and the RGB pose plausible (trusted).
    Returns (R, t, fitness or None).

    ``global_rotations`` > 0 adds the ``global_starts`` best of that many rotations spread over SO(3)
    (:func:`depth_hypotheses`) to the starts, for RGB rotations that may be far off. They must beat the
    given pose's neighbourhood by a margin unless the pose is not trusted: ``trust_pose`` False, or None
    and the pose puts the model's centre more than a diameter away from the cloud's. A trusted pose whose
    local refinement reaches ``good_fitness`` skips the global search (most of the stage's cost). ``threads``:
    see the module docstring."""
    observed = np.asarray(observed, dtype=float)
    if len(observed) >= 30:
        observed = clean_observed(observed, z_window=0.6 * diameter)
    if len(observed) >= 30:
        observed = clean_observed(observed, center=np.median(observed, axis=0), radius=0.75 * diameter)
    if len(observed) < 30:
        return R, t, None
    if len(observed) > max_observed:  # ICP cost grows with the cloud; a few thousand points pin the pose down
        observed = observed[np.random.default_rng(0).choice(len(observed), max_observed, replace=False)]
    if trust_pose is None:
        centre = np.asarray(R) @ np.asarray(model_points).mean(0) + np.asarray(t).reshape(3)
        trust_pose = bool(np.linalg.norm(centre - observed.mean(0)) < diameter)
    res = None
    if trust_pose:  # local starts first; the global search only when they do not fit well
        res = refine_icp(R, t, model_points, observed, model_normals=model_normals, diameter=diameter,
                         n_starts=n_starts, threads=threads)
        if res is not None and res.fitness >= good_fitness:
            return res.R, res.t, res.fitness
    if global_rotations > 0 and global_starts > 0:
        if global_rotations not in _GLOBAL_ROTATIONS:
            _GLOBAL_ROTATIONS[global_rotations] = uniform_rotations(global_rotations)
        extra = depth_hypotheses(model_points, model_normals, observed, diameter,
                                 _GLOBAL_ROTATIONS[global_rotations], top=global_starts)
        if res is not None:  # the local winner, refined already, against the refined global hypotheses
            glob = None if not extra else refine_icp(
                *extra[0], model_points, observed, model_normals=model_normals, diameter=diameter, n_starts=1,
                align_centroid=False, extra_starts=extra[1:], threads=threads)
            if glob is not None and glob.score > res.score + GLOBAL_MARGIN:
                res = glob
        else:  # the untrusted pose's neighbourhood against the global hypotheses
            glob = refine_icp(R, t, model_points, observed, model_normals=model_normals, diameter=diameter,
                              n_starts=n_starts, extra_starts=extra, extra_margin=0.0, threads=threads)
            res = glob if glob is not None else res
    elif res is None:
        res = refine_icp(R, t, model_points, observed, model_normals=model_normals, diameter=diameter,
                         n_starts=n_starts, threads=threads)
    if res is None:
        return R, t, None
    if res.fitness < min_fitness and trust_pose:  # a poor fit does not overrule a plausible RGB pose
        return R, t, res.fitness
    return res.R, res.t, res.fitness  # (an implausible RGB pose is worse than the best fit to the cloud)
