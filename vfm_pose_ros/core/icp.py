"""ICP refinement of a pose against a depth cloud (Open3D point-to-plane, imported lazily).

What the calibration experiment (DESIGN notes) taught, built in:

* Before ICP, translate the model so the centroid of its *visible* points (normals
  facing the camera) meets the centroid of the observed cloud: RGB-only poses are
  mostly wrong in depth, and ICP's nearest-neighbour matching cannot undo a large
  offset along the viewing ray.
* Try a few rotated starts (multi-start) and keep the best: the remaining failures
  are gross rotation errors that one ICP run from a bad start does not escape.

Registration direction: the *observed* points are the source and the model (in the
camera frame, with its mesh normals) is the target, so point-to-plane uses exact
model normals rather than normals estimated from noisy depth, and every observed
point (all on the visible surface) finds its partner on the model's visible side.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
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
    thresholds=(0.1, 0.04, 0.015),
    max_iterations: int = 30,
    refine_top: int = 2,
    min_points: int = 30,
    max_model_points: int = 3000,
) -> ICPResult | None:
    """Refine (R0, t0) so the model's visible surface meets the observed cloud (camera frame, metres).

    ``thresholds`` are correspondence distances as fractions of the diameter, coarse to
    fine. Each start (the given pose, then rotated ones) is centroid-aligned and refined at the
    coarsest distance; the ``refine_top`` best continue through the finer ones. The winner has
    the best score = mean of (observed->model fitness, visible-model->observed coverage) minus
    0.5 * rmse / threshold: fitness alone rewards poses whose model merely *contains* the
    observed points, the coverage term penalises them.
    Returns None when the cloud has fewer than ``min_points`` points.
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
    obs_tree = cKDTree(obs)
    obs_centroid = obs.mean(0)
    model_centre = pts.mean(0)
    est = o3d.pipelines.registration.TransformationEstimationPointToPlane()
    final_thr = thresholds[-1] * diameter

    def run(start, fracs):
        for frac in fracs:
            reg = o3d.pipelines.registration.registration_icp(
                source, start["target"], frac * diameter, start["T"], est,
                o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=max_iterations),
            )
            start["T"] = reg.transformation

    def evaluate(start, thr):
        """(score, fitness, rmse, R, t); observed' = T observed matches the model at (R, t), so the
        refined model pose is T^-1 (R, t)."""
        T = invert_T(start["T"]) @ make_T(start["R"], start["t"])
        Rr, tr = T[:3, :3], T[:3, 3]
        ev = o3d.pipelines.registration.evaluate_registration(source, start["target"], thr, start["T"])
        vis = visible_mask(Rr, tr, pts, normals)
        if vis.sum() == 0:
            return -np.inf, 0.0, np.inf, Rr, tr
        d, _ = obs_tree.query(transform_points(Rr, tr, pts[vis]), distance_upper_bound=thr)
        coverage = float(np.mean(np.isfinite(d)))
        fitness, rmse = float(ev.fitness), float(ev.inlier_rmse)
        return 0.5 * (fitness + coverage) - 0.5 * rmse / thr, fitness, rmse, Rr, tr

    starts = []
    for dR in _start_rotations(start_angle_deg, n_starts):
        # rotate about the model centre as seen in the camera, keeping that centre in place
        R = dR @ R0
        t = (R0 @ model_centre + t0) - R @ model_centre
        if align_centroid:
            vis = visible_mask(R, t, pts, normals)
            if vis.sum() >= 10:
                t = t + (obs_centroid - transform_points(R, t, pts[vis]).mean(0))
        target = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(transform_points(R, t, pts)))
        target.normals = o3d.utility.Vector3dVector(normals @ R.T)
        starts.append({"R": R, "t": t, "target": target, "T": np.eye(4)})
    # coarse pass for every start; the finer passes only for the most promising ones (ICP is the cost)
    for st in starts:
        run(st, thresholds[:1])
    if len(starts) > refine_top:
        mid = thresholds[min(1, len(thresholds) - 1)] * diameter
        order = np.argsort([-evaluate(st, mid)[0] for st in starts], kind="stable")
        keep = sorted(order[:refine_top].tolist())
    else:
        keep = list(range(len(starts)))
    best = None
    for k in keep:
        run(starts[k], thresholds[1:])
        score, fitness, rmse, Rr, tr = evaluate(starts[k], final_thr)
        if np.isfinite(score) and (best is None or score > best.score):
            U, _, Vt = np.linalg.svd(Rr)  # re-orthonormalise accumulated float error
            best = ICPResult(U @ Vt, tr.copy(), fitness, rmse, score, k, len(obs))
    return best


def refine_with_depth(R, t, observed, model_points, model_normals, diameter, *, n_starts: int = 7,
                      min_fitness: float = 0.3, max_observed: int = 2500):
    """The depth stage both backends share: clean the masked depth cloud, ICP the model into it, and keep
    the RGB pose when the cloud is too small or the fit too poor. Returns (R, t, fitness or None)."""
    observed = np.asarray(observed, dtype=float)
    if len(observed) >= 30:
        observed = clean_observed(observed, z_window=0.6 * diameter)
    if len(observed) >= 30:
        observed = clean_observed(observed, center=np.median(observed, axis=0), radius=0.75 * diameter)
    if len(observed) < 30:
        return R, t, None
    if len(observed) > max_observed:  # ICP cost grows with the cloud; a few thousand points pin the pose down
        observed = observed[np.random.default_rng(0).choice(len(observed), max_observed, replace=False)]
    res = refine_icp(R, t, model_points, observed, model_normals=model_normals, diameter=diameter, n_starts=n_starts)
    if res is None or res.fitness < min_fitness:
        return R, t, None if res is None else res.fitness
    return res.R, res.t, res.fitness
