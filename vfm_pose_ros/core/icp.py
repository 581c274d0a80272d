"""ICP refinement of a pose against a depth cloud (Open3D point-to-plane, imported lazily).

What the depth stage does, and why:

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
threads (OMP_NUM_THREADS). Open3D itself runs on one thread while the stage works
(:func:`serial_open3d`): its TBB reductions sum in an order that changes run to run, and on a
near-tie between starts that rounding picked the other one, so one frame could give two poses.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace

import numpy as np
from pykdtree.kdtree import KDTree
from scipy.spatial.transform import Rotation

from .point_sampling import consistent_subsample
from .rotation_search import depth_hypotheses, uniform_rotations
from .settings import config_items, settings_from
from .symmetry import Symmetry, canonical_view
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
# A trusted pose whose local refinement fits this well skips the global search (most of the stage's cost)
GOOD_FITNESS = 0.8
MIN_CLOUD_POINTS = 30  # a masked depth cloud smaller than this cannot pin a pose down


@dataclass(frozen=True)
class SurfaceModel:
    """What ICP aligns: model surface points (object frame, metres), their outward normals (None: estimated),
    the diameter (None: the points' bounding-box diagonal) and the object's symmetry (None: none), under
    which the starts are scored (:meth:`_Registration.evaluate`)."""

    points: np.ndarray
    normals: np.ndarray | None = None
    diameter: float | None = None
    symmetry: Symmetry | None = None


@dataclass(frozen=True)
class ICPSettings:
    """One multi-start refinement (:func:`refine_icp`). ``thresholds`` are correspondence distances as
    fractions of the diameter, coarse to fine; ``threads``: see the module docstring."""

    align_centroid: bool = True  # move each start so the model's visible centroid meets the cloud's
    n_starts: int = 7  # the given pose, then +-start_angle_deg about the camera axes
    start_angle_deg: float = 25.0
    extra_margin: float = GLOBAL_MARGIN  # an extra start must beat the given pose's neighbourhood by this
    thresholds: tuple[float, ...] = (0.1, 0.04, 0.015)
    max_iterations: int = 30
    refine_top: int = 2  # starts (besides the best local one) that continue past the coarse pass
    final_tie: float = 0.05  # starts within this of the leader's score also take the last pass
    min_points: int = 30
    max_model_points: int = 3000
    coarse_observed: int = 600  # cloud points the coarse pass uses
    middle_observed: int = 1200  # ... and the finer passes but the last
    threads: int | None = None


@dataclass(frozen=True)
class DepthStageConfig:
    """The depth stage's settings (:func:`refine_with_depth`), read from a backend config's ``use_depth`` and
    ``icp_*`` keys (:meth:`from_config`); its defaults are every backend's defaults."""

    use_depth: bool = field(default=True, metadata={"key": "use_depth"})  # with depth: ICP inside the mask
    starts: int = 7
    global_rotations: int = 300  # rotations over SO(3) scored against the depth cloud (0: only local starts)
    global_starts: int = 5  # ... of which the best distinct ones are also refined by ICP
    min_fitness: float = 0.3
    refine_top: int = 2  # starts that go on past the coarse pass (ICPSettings.refine_top; more: slower, a bit surer)
    points: int = 2000  # model surface samples when the checkpoint stores none
    max_observed: int = 2500
    threads: int = 0  # threads for the ICP starts and KD-tree look-ups; 0: the cores this process may use (<= 8)

    CONFIG_PREFIX = "icp_"

    @classmethod
    def from_config(cls, config) -> DepthStageConfig:
        return settings_from(cls, config, cls.CONFIG_PREFIX)

    def as_config(self) -> dict:
        return config_items(self, self.CONFIG_PREFIX)


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


_OPEN3D_SERIAL = {"lock": threading.Lock(), "users": 0, "previous": 0}


@contextlib.contextmanager
def serial_open3d():
    """Open3D limited to one thread inside, so that an ICP pass sums its normal equations in one fixed
    order and the same input gives the same pose. The limit is process-wide (Open3D has no other), so
    nested and concurrent users share it and the last one out restores the limit found on entry. Open3D
    before 0.20 has no limit to set and runs as it is."""
    import open3d as o3d

    util, state = o3d.utility, _OPEN3D_SERIAL
    if not hasattr(util, "set_max_threads"):
        yield
        return
    with state["lock"]:
        if state["users"] == 0:
            state["previous"] = util.get_max_threads()
            util.set_max_threads(1)
        state["users"] += 1
    try:
        yield
    finally:
        with state["lock"]:
            state["users"] -= 1
            if state["users"] == 0:
                util.set_max_threads(state["previous"])


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


def fit_to_model(model_tree, observed, R, t, max_distance: float) -> tuple[float, float]:
    """(fitness, inlier rmse) of ``observed`` (Nx3, camera frame) against the model at (R, t): Open3D's
    ``evaluate_registration`` (fitness = fraction of points within ``max_distance`` of the model, rmse over
    those), computed in the model's own frame against one prebuilt ``model_tree`` (a pykdtree KDTree of the
    model points) instead of a tree of the posed model built per call: ICP scores every start this way."""
    in_model_frame = np.ascontiguousarray((np.asarray(observed, float) - t) @ R)  # R^T (p - t), row-wise
    d, _ = model_tree.query(in_model_frame, distance_upper_bound=max_distance)
    inlier = np.isfinite(d)
    return float(inlier.mean()), float(np.sqrt(np.mean(d[inlier] ** 2))) if inlier.any() else 0.0


def _model_samples(model: SurfaceModel, max_points: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(points, normals, diameter): at most ``max_points`` of the model's points (a fixed draw), their
    normals (estimated when the model has none) and its diameter."""
    pts = np.asarray(model.points, dtype=np.float64)
    normals = model.normals
    if len(pts) > max_points:
        sel = np.random.default_rng(0).choice(len(pts), max_points, replace=False)
        pts = pts[sel]
        normals = None if normals is None else np.asarray(normals)[sel]
    elif normals is not None:
        normals = np.asarray(normals, dtype=np.float64)
    if normals is None:
        normals = estimate_normals(pts)
    diameter = model.diameter
    if diameter is None or diameter <= 0:
        diameter = float(np.linalg.norm(pts.max(0) - pts.min(0)))
    return pts, normals, diameter


class _Registration:
    """The state one :func:`refine_icp` call shares between its starts: the observed cloud (source) and its
    subsamples, the sampled model and KD-trees of both."""

    def __init__(self, obs: np.ndarray, model: SurfaceModel, settings: ICPSettings):
        import open3d as o3d

        self.o3d, self.settings = o3d, settings
        pts, self.normals, self.diameter = _model_samples(model, settings.max_model_points)
        self.source = self._cloud(obs)
        self.coarse_source = self.middle_source = self.source
        if len(obs) > settings.coarse_observed:  # the coarse pass only needs the shape, not every point
            self.coarse_source = self._cloud(obs[consistent_subsample(obs, settings.coarse_observed)])
        if len(obs) > settings.middle_observed:
            self.middle_source = self._cloud(obs[consistent_subsample(obs, settings.middle_observed)])
        self.obs_centroid, self.model_centre = obs.mean(0), pts.mean(0)
        self.symmetry = model.symmetry  # canonical_view and _symmetry_centre take None and 'none' alike
        self.symmetry_centre = _symmetry_centre(self.symmetry, pts)
        self.estimation = o3d.pipelines.registration.TransformationEstimationPointToPlane()
        self.pts, self.obs = np.ascontiguousarray(pts), np.ascontiguousarray(obs)  # (pykdtree wants C order)
        self.model_tree, self.obs_tree = KDTree(self.pts), KDTree(self.obs)  # the model in its own frame
        # Scoring below the model's own sample spacing would measure the sampling, not the fit
        spacing = float(np.median(self.model_tree.query(self.pts, k=2)[0][:, 1]))
        self.final_thr = max(settings.thresholds[-1] * self.diameter, 1.5 * spacing)

    def _cloud(self, points):
        return self.o3d.geometry.PointCloud(self.o3d.utility.Vector3dVector(points))

    def start(self, R, t, align: bool) -> dict:
        """A start at (R, t), centroid-aligned when ``align``: the posed model as target, T the cloud's motion."""
        if align:
            vis = visible_mask(R, t, self.pts, self.normals)
            if vis.sum() >= 10:
                t = t + (self.obs_centroid - transform_points(R, t, self.pts[vis]).mean(0))
        target = self._cloud(transform_points(R, t, self.pts))
        target.normals = self.o3d.utility.Vector3dVector(self.normals @ R.T)
        return {"R": R, "t": t, "target": target, "T": np.eye(4)}

    def run(self, start: dict, fracs, sources) -> None:
        """ICP passes at the given distances (fractions of the diameter), each on its source cloud."""
        reg_mod = self.o3d.pipelines.registration
        for frac, src in zip(fracs, sources):
            reg = reg_mod.registration_icp(src, start["target"], frac * self.diameter, start["T"], self.estimation,
                                           reg_mod.ICPConvergenceCriteria(max_iteration=self.settings.max_iterations))
            # Point-to-plane is ill-conditioned on surfaces of revolution and flat patches: with few
            # correspondences a step can throw the cloud away. Such a pass is not taken.
            T_new, T_old = reg.transformation, start["T"]
            moved = np.linalg.norm((T_new[:3, :3] - T_old[:3, :3]) @ self.obs_centroid + T_new[:3, 3] - T_old[:3, 3])
            if reg.fitness == 0.0 or moved > self.diameter:
                break
            start["T"] = reg.transformation

    def evaluate(self, start: dict, thr: float):
        """(score, fitness, rmse, R, t); observed' = T observed matches the model at (R, t), so the
        refined model pose is T^-1 (R, t).

        A symmetric model is scored at the canonical equivalent of the pose (core.symmetry.canonical_view), so
        that equivalent poses score alike: the samples on the visible side change as a can turns about its
        axis, enough to move one and the same pose's score by up to 0.03, and that noise would choose between
        starts."""
        T = invert_T(start["T"]) @ make_T(start["R"], start["t"])
        Rr, tr = T[:3, :3], T[:3, 3]
        Rs, ts = canonical_view(self.symmetry, self.symmetry_centre, Rr, tr)  # (Rr, tr) for an asymmetric model
        vis = visible_mask(Rs, ts, self.pts, self.normals)
        if vis.sum() == 0:
            return -np.inf, 0.0, np.inf, Rr, tr
        fitness, rmse = fit_to_model(self.model_tree, self.obs, Rs, ts, thr)
        d, _ = self.obs_tree.query(transform_points(Rs, ts, self.pts[vis]), distance_upper_bound=thr)
        coverage = float(np.mean(np.isfinite(d)))
        return 0.5 * (fitness + coverage) - 0.5 * rmse / thr, fitness, rmse, Rr, tr


def _symmetry_centre(symmetry: Symmetry | None, pts: np.ndarray) -> np.ndarray:
    """A point the symmetries keep in place, from which the canonical view is taken: the bounding-box centre,
    moved onto the axis of a continuous symmetry."""
    centre = 0.5 * (pts.min(0) + pts.max(0))
    axis = symmetry.continuous_axis if symmetry is not None else None
    if axis is not None:
        a, o = axis
        centre = o + np.dot(centre - o, a) * a
    return centre


def _starts(reg: _Registration, R0, t0, extra_starts) -> tuple[list[dict], int]:
    """The starts (local ones first) and how many are local: the given pose and its rotations about the
    model centre as seen in the camera, then ``extra_starts``."""
    s = reg.settings
    candidates = []
    for dR in _start_rotations(s.start_angle_deg, s.n_starts):
        R = dR @ R0  # rotate about the model centre as seen in the camera, keeping that centre in place
        candidates.append((R, (R0 @ reg.model_centre + t0) - R @ reg.model_centre))
    n_local = len(candidates)
    candidates += [(np.asarray(R, float), np.asarray(t, float).reshape(3)) for R, t in extra_starts]
    aligned = [s.align_centroid] * len(candidates)
    if s.align_centroid:  # the given pose as it is, too: centroids mislead on partly occluded objects
        candidates.insert(1, (R0, t0))
        aligned.insert(1, False)
        n_local += 1
    return [reg.start(R, t, align) for (R, t), align in zip(candidates, aligned)], n_local


def _promising(reg: _Registration, starts: list[dict], n_local: int) -> list[int]:
    """The coarse pass for every start; the indices of those that go on: the ``refine_top`` best and always
    the best start near the given pose (ICP is the cost)."""
    s = reg.settings
    mid = s.thresholds[min(1, len(s.thresholds) - 1)] * reg.diameter

    def coarse(st):
        reg.run(st, s.thresholds[:1], [reg.coarse_source])
        return reg.evaluate(st, mid)[0] if len(starts) > s.refine_top else 0.0

    coarse_scores = parallel_map(coarse, starts, s.threads)
    if len(starts) <= s.refine_top:
        return list(range(len(starts)))
    order = np.argsort(-np.asarray(coarse_scores), kind="stable").tolist()
    best_local = next(k for k in order if k < n_local)
    return sorted(set(order[: s.refine_top]) | {best_local})


def _ranked_after_middle(reg: _Registration, starts, keep, margin) -> list[tuple[float, int]]:
    """The finer passes but the last (on the subsample: they need only the shape) for the kept starts;
    (score minus the start's margin, index) of those with a finite score."""
    s = reg.settings
    n_mid = len(s.thresholds) - 2
    thr = s.thresholds[-2] * reg.diameter if len(s.thresholds) > 2 else reg.final_thr

    def middle(st):
        reg.run(st, s.thresholds[1:-1], [reg.middle_source] * n_mid)
        return reg.evaluate(st, thr)

    scores = parallel_map(middle, [starts[k] for k in keep], s.threads)
    return [(ev[0] - margin[k], k) for k, ev in zip(keep, scores) if np.isfinite(ev[0])]


def _final(reg: _Registration, starts, ranked, margin, n_observed: int) -> ICPResult | None:
    """The last pass (the whole cloud, the finest distance) for the leader and those within ``final_tie`` of
    it: it polishes a pose rather than reorders the starts, so the others skip it. The best of them."""
    s = reg.settings
    top = max(ranked)[0]
    finalists = [k for rank, k in ranked if rank >= top - s.final_tie]
    if len(s.thresholds) > 1:
        parallel_map(lambda st: reg.run(st, s.thresholds[-1:], [reg.source]), [starts[k] for k in finalists],
                     s.threads)
    best, best_rank = None, -np.inf
    for k in finalists:
        score, fitness, rmse, Rr, tr = reg.evaluate(starts[k], reg.final_thr)
        if np.isfinite(score) and score - margin[k] > best_rank:
            U, _, Vt = np.linalg.svd(Rr)  # re-orthonormalise accumulated float error
            best, best_rank = ICPResult(U @ Vt, tr.copy(), fitness, rmse, score, k, n_observed), score - margin[k]
    return best


def refine_icp(R0, t0, model: SurfaceModel, observed_points, settings: ICPSettings = ICPSettings(),
               extra_starts=()) -> ICPResult | None:
    """Refine (R0, t0) so the model's visible surface meets the observed cloud (camera frame, metres).

    Each start (the given pose, then rotated ones, then ``extra_starts``: (R, t) pairs such as
    :func:`depth_hypotheses` returns) is centroid-aligned and refined at the coarsest distance on a
    subsample; the most promising continue through the finer ones but the last, on a larger subsample; the
    leader after those (and any start within ``final_tie`` of its score) takes the last pass on the whole
    cloud. An extra start wins only by ``extra_margin`` over the given pose's neighbourhood. The winner has
    the best score = mean of (observed->model fitness, visible-model->observed coverage) minus 0.5 * rmse /
    threshold (at least 1.5 x the model's sample spacing): fitness alone rewards poses whose model merely
    *contains* the observed points, the coverage term penalises them. None when the cloud has fewer than
    ``min_points`` points.
    """
    obs = np.asarray(observed_points, dtype=np.float64)
    obs = obs[np.isfinite(obs).all(1)]
    if len(obs) < settings.min_points:
        return None
    with serial_open3d():
        reg = _Registration(obs, model, settings)
        starts, n_local = _starts(reg, np.asarray(R0, dtype=float), np.asarray(t0, dtype=float).reshape(3),
                                  extra_starts)
        keep = _promising(reg, starts, n_local)
        margin = {k: settings.extra_margin if k >= n_local else 0.0 for k in keep}
        ranked = _ranked_after_middle(reg, starts, keep, margin)
        return _final(reg, starts, ranked, margin, len(obs)) if ranked else None


_GLOBAL_ROTATIONS: dict[int, np.ndarray] = {}


def _global_rotations(n: int) -> np.ndarray:
    if n not in _GLOBAL_ROTATIONS:
        _GLOBAL_ROTATIONS[n] = uniform_rotations(n)
    return _GLOBAL_ROTATIONS[n]


def clean_cloud(observed, diameter: float, max_observed: int) -> np.ndarray:
    """The masked depth cloud without mask bleed (depths far from the median, points far from the median
    point), at most ``max_observed`` points (ICP cost grows with the cloud, and a few thousand points pin the
    pose down), chosen by core.point_sampling so that a mask cell more or less keeps the others."""
    observed = np.asarray(observed, dtype=float)
    if len(observed) >= MIN_CLOUD_POINTS:
        observed = clean_observed(observed, z_window=0.6 * diameter)
    if len(observed) >= MIN_CLOUD_POINTS:
        observed = clean_observed(observed, center=np.median(observed, axis=0), radius=0.75 * diameter)
    if len(observed) > max_observed:
        observed = observed[consistent_subsample(observed, max_observed)]
    return observed


def _with_global_search(R, t, cloud, model: SurfaceModel, cfg: DepthStageConfig, local: ICPResult | None,
                        local_settings: ICPSettings) -> ICPResult | None:
    """The local result against the best distinct of ``cfg.global_rotations`` rotations over SO(3)."""
    extra = depth_hypotheses(model.points, model.normals, cloud, model.diameter,
                             _global_rotations(cfg.global_rotations), top=cfg.global_starts)
    if local is not None:  # the local winner, refined already, against the refined global hypotheses
        glob = None if not extra else refine_icp(
            *extra[0], model, cloud, ICPSettings(align_centroid=False, n_starts=1, refine_top=cfg.refine_top,
                                                 threads=cfg.threads),
            extra_starts=extra[1:])
        return glob if glob is not None and glob.score > local.score + GLOBAL_MARGIN else local
    # the untrusted pose's neighbourhood against the global hypotheses
    glob = refine_icp(R, t, model, cloud, dataclass_replace(local_settings, extra_margin=0.0), extra_starts=extra)
    return glob if glob is not None else local


def refine_with_depth(R, t, cloud, model: SurfaceModel, cfg: DepthStageConfig, *, trust_pose: bool | None = None):
    """The depth stage both backends share: clean the masked depth cloud, ICP the model into it, and keep
    the RGB pose when the cloud is too small, or the fit too poor and the RGB pose plausible (trusted).
    Returns (R, t, fitness or None). ``model`` needs its diameter.

    ``cfg.global_rotations`` > 0 adds the ``cfg.global_starts`` best of that many rotations spread over SO(3)
    (:func:`depth_hypotheses`) to the starts, for RGB rotations that may be far off. They must beat the
    given pose's neighbourhood by a margin unless the pose is not trusted: ``trust_pose`` False, or None
    and the pose puts the model's centre more than a diameter away from the cloud's. A trusted pose whose
    local refinement reaches GOOD_FITNESS skips the global search."""
    cloud = clean_cloud(cloud, model.diameter, cfg.max_observed)
    if len(cloud) < MIN_CLOUD_POINTS:
        return R, t, None
    if trust_pose is None:
        centre = np.asarray(R) @ np.asarray(model.points).mean(0) + np.asarray(t).reshape(3)
        trust_pose = bool(np.linalg.norm(centre - cloud.mean(0)) < model.diameter)
    local_settings = ICPSettings(n_starts=cfg.starts, refine_top=cfg.refine_top, threads=cfg.threads)
    res = None
    if trust_pose:  # local starts first; the global search only when they do not fit well
        res = refine_icp(R, t, model, cloud, local_settings)
        if res is not None and res.fitness >= GOOD_FITNESS:
            return res.R, res.t, res.fitness
    if cfg.global_rotations > 0 and cfg.global_starts > 0:
        res = _with_global_search(R, t, cloud, model, cfg, res, local_settings)
    elif res is None:
        res = refine_icp(R, t, model, cloud, local_settings)
    if res is None:
        return R, t, None
    if res.fitness < cfg.min_fitness and trust_pose:  # a poor fit does not overrule a plausible RGB pose
        return R, t, res.fitness
    return res.R, res.t, res.fitness  # (an implausible RGB pose is worse than the best fit to the cloud)
