"""Scores that mean the same thing for every backend: the chance that a pose is right.

Each backend's raw score is a product of its own confidences (DINOv2: detection x mask x keypoint support;
CLIP: presence; the hybrid: both), on scales that differ by an order of magnitude, so one
``score_threshold`` cannot suit them all (docs/decisions.md). A calibration maps a pose's evidence (its raw
score or the hybrid's two stage scores; the depth stage's ICP fitness; how the model projected at the pose
meets the detected box and the measured depth) to P(ADD(-S) < 0.1 d) with a logistic model fitted per
checkpoint and input (RGB-D, RGB) on held-out synthetic frames, half of them holding no catalogue object, so
phantoms count as wrong poses (``vfm-pose calibrate``).

It lives beside the checkpoint it was fitted for (``<checkpoint>.calibration.json``) with that file's
fingerprint; a calibration fitted for other weights is not applied. The frame pipeline applies it once
per estimate, keeping the raw score in ``ObjectPose.raw_score``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .catalogue import surface_samples
from .detections import box_iou
from .plausibility import depth_residuals
from .transforms import project, transform_points

LOG = logging.getLogger(__name__)
FORMAT = "vfm_pose_ros-score-calibration"
SUFFIX = ".calibration.json"
MODES = ("rgbd", "rgb")
EPS = 1e-4


def _logit(p) -> float:
    p = min(max(float(p), EPS), 1.0 - EPS)
    return float(np.log(p / (1.0 - p)))


def _raw(pose) -> float:
    raw = getattr(pose, "raw_score", None)
    return float(pose.score if raw is None else raw)


@dataclass(frozen=True)
class Context:
    """What the evidence of a frame's poses is judged against."""

    catalogue: object
    K: np.ndarray | None = None
    depth: np.ndarray | None = None


SURFACE_SAMPLES = 2000  # what a checkpoint's catalogue carries per object (models.checkpoint)
AGREEMENT = 0.05  # a model point meets the measured surface within this share of the object's diameter


def _surface(obj) -> tuple[np.ndarray, np.ndarray, float]:
    """(surface samples, outward normals, median spacing in metres): the checkpoint's own samples when the
    object came from one, else the same even sampling of its mesh; computed once per object."""
    cached = getattr(obj, "_calibration_surface", None)
    if cached is None:
        from pykdtree.kdtree import KDTree

        pts, normals = getattr(obj, "surface_normals", None) or surface_samples(obj, SURFACE_SAMPLES)
        pts, normals = np.asarray(pts, float), np.asarray(normals, float)
        d, _ = KDTree(pts).query(pts, k=2)
        cached = obj._calibration_surface = (pts, normals, float(np.median(d[:, 1])))
    return cached


class _Evidence:
    """One pose judged against its frame; what several features read (the depth residuals) is computed once."""

    def __init__(self, pose, context: Context):
        self.pose, self.context = pose, context
        self.obj = context.catalogue[pose.name]
        self.tol = AGREEMENT * float(self.obj.diameter)

    @functools.cached_property
    def residuals(self) -> np.ndarray:
        """(model depth - measured depth) per model point where depth was measured (core.plausibility)."""
        c = self.context
        return depth_residuals(self.pose.R, self.pose.t, self.obj, c.K, c.depth)

    @functools.cached_property
    def visible_surface(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The model's surface seen from the camera at the pose against the measured depth: (model depth -
        measured depth in metres, (u, v) pixel) per visible surface sample where depth was measured; None when
        none is. Drawn from the surface samples a checkpoint carries (no mesh needed, so the node's catalogue
        and a mesh catalogue give the same features)."""
        c, pose = self.context, self.pose
        pts, normals, spacing = _surface(self.obj)
        cam, n_cam = transform_points(pose.R, pose.t, pts), normals @ np.asarray(pose.R, float).T
        front = (np.einsum("ij,ij->i", cam, n_cam) < 0) & (cam[:, 2] > 1e-6)  # facing the camera
        cam = cam[front]
        if not len(cam):
            return None
        K = np.asarray(c.K, float)
        uv = project(K, cam)
        h, w = c.depth.shape[:2]
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        cam, uv = cam[inside], uv[inside]
        if not len(cam):
            return None
        # the model hiding itself (a handle in front of the body): a z-buffer over cells about two sample
        # spacings wide keeps the samples near each cell's nearest
        cell = max(1.0, 2.0 * spacing * float(K[0, 0]) / float(np.median(cam[:, 2])))
        cu, cv = (uv[:, 0] // cell).astype(np.int64), (uv[:, 1] // cell).astype(np.int64)
        key = cv * (int(w // cell) + 1) + cu
        nearest = np.full(int(key.max()) + 1, np.inf)
        np.minimum.at(nearest, key, cam[:, 2])
        seen = cam[:, 2] <= nearest[key] + 3.0 * spacing
        cam, uv = cam[seen], uv[seen].astype(np.int64)
        measured = np.asarray(c.depth, float)[uv[:, 1], uv[:, 0]]
        ok = np.isfinite(measured) & (measured > 0)
        if not ok.any():
            return None
        return cam[ok, 2] - measured[ok], uv[ok]

    @functools.cached_property
    def visible_shares(self) -> tuple[float, float, float]:
        """Of the pixels the model covers at the pose (where depth was measured): the shares hidden behind
        something nearer, in agreement with the measured surface, and standing in front of it, each by 5 % of
        the diameter. Unlike the model-point features, the model's own back side and silhouette do not count."""
        if self.context.depth is None or self.visible_surface is None:
            return 0.0, 0.0, 0.0
        r = self.visible_surface[0]
        return float(np.mean(r > self.tol)), float(np.mean(np.abs(r) <= self.tol)), float(np.mean(r < -self.tol))

    def visible_agreement(self) -> float:
        """Of the model's pixels not hidden by something nearer, the share where the measured surface is the
        model's: about 1 for a right pose however occluded, less for a model fitted to part of another shape."""
        _, agree, front = self.visible_shares
        return agree / (agree + front) if agree + front > 0 else 0.0

    def visible_box_iou(self) -> float:
        """IoU of the detected box with the box of the model's pixels at the pose that nothing nearer hides:
        what a detector sees of an occluded object. Beside the whole model's box IoU (which tells a fit to a
        distractor from an object), it keeps a right pose of a half-hidden object from looking wrong."""
        if self.pose.box_2d is None or self.context.depth is None or self.visible_surface is None:
            return 0.0
        r, uv = self.visible_surface
        seen = uv[r <= self.tol]  # not hidden behind something nearer
        if not len(seen):
            return 0.0
        return box_iou(self.pose.box_2d, [*seen.min(0), *(seen.max(0) + 1)])

    def projected_box_iou(self) -> float:
        """IoU of the detected 2D box with the box of the model projected at the pose: a pose fitted to a
        blob of another shape or size projects to another box."""
        pose, K = self.pose, self.context.K
        if pose.box_2d is None or K is None:
            return 0.0
        pts = np.asarray(self.obj.vertices, float)
        pts = transform_points(pose.R, pose.t, pts[:: max(1, len(pts) // 500)])
        pts = pts[pts[:, 2] > 1e-6]
        if not len(pts):
            return 0.0
        uv = project(K, pts)
        return box_iou(pose.box_2d, [*uv.min(0), *uv.max(0)])

    def depth_inliers(self) -> float:
        """Share of the model's points that meet the measured surface within 5 % of the diameter (about the
        visible share for a right pose; less for a model fitted to part of another object)."""
        if self.context.depth is None or not len(self.residuals):
            return 0.0
        return float(np.mean(np.abs(self.residuals) < self.tol))

    def free_space_violations(self) -> float:
        """Share of the model's points that would stand in front of the measured surface by more than 5 % of
        the diameter, where the camera saw something farther: impossible for a right pose, occluded or not
        (occluded points lie behind the occluder), common for a model fitted to part of another shape."""
        if self.context.depth is None or not len(self.residuals):
            return 0.0
        return float(np.mean(self.residuals < -self.tol))


FEATURES = {
    "score_logit": lambda e: _logit(_raw(e.pose)),
    "icp_fitness": lambda e: 0.0 if e.pose.icp_fitness is None else float(e.pose.icp_fitness),
    "icp_missing": lambda e: float(e.pose.icp_fitness is None),
    "clip_logit": lambda e: _logit(getattr(e.pose, "clip_score", None) or 0.0),
    "geometry_logit": lambda e: (0.0 if getattr(e.pose, "geometry_score", None) is None
                                 else _logit(e.pose.geometry_score)),
    "geometry_missing": lambda e: float(getattr(e.pose, "geometry_score", None) is None),
    "box_iou": _Evidence.projected_box_iou,
    "depth_inliers": _Evidence.depth_inliers,
    "free_space_violations": _Evidence.free_space_violations,
    "visible_agreement": _Evidence.visible_agreement,
    "visible_hidden": lambda e: e.visible_shares[0],
    "visible_in_front": lambda e: e.visible_shares[2],
    "visible_box_iou": _Evidence.visible_box_iou,
}


def feature_names(backend: str, mode: str) -> list[str]:
    """The evidence a backend's poses carry in one input mode."""
    names = ["clip_logit", "geometry_logit", "geometry_missing"] if backend == "hybrid" else ["score_logit"]
    names.append("box_iou")
    if mode == "rgbd":
        names += ["visible_box_iou", "icp_fitness", "icp_missing", "depth_inliers", "free_space_violations",
                  "visible_agreement", "visible_hidden", "visible_in_front"]
    return names


def features(poses, names: list[str], context: Context) -> np.ndarray:
    evidence = [_Evidence(p, context) for p in poses]
    return np.array([[FEATURES[n](e) for n in names] for e in evidence],
                    dtype=float).reshape(len(poses), len(names))


@dataclass(frozen=True)
class LogisticModel:
    names: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float

    def probability(self, poses, context: Context) -> np.ndarray:
        return self.probability_of(features(poses, list(self.names), context))

    def probability_of(self, X: np.ndarray) -> np.ndarray:
        """From a feature matrix whose columns are ``names``."""
        z = np.asarray(X, float) @ np.asarray(self.weights, float) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def fit_logistic(X: np.ndarray, y: np.ndarray, names: list[str], l2: float = 1e-2,
                 iterations: int = 50) -> LogisticModel:
    """L2-regularised logistic regression by Newton's method on standardised features (weights returned in
    the raw feature scale). A constant feature gets weight 0."""
    X, y = np.asarray(X, float), np.asarray(y, float)
    if len(y) == 0 or y.min() == y.max():
        raise ValueError(f"calibration needs right and wrong poses; got {int(y.sum())} right of {len(y)}")
    mu, sd = X.mean(0), X.std(0)
    live = sd > 1e-9
    Z = np.zeros_like(X)
    Z[:, live] = (X[:, live] - mu[live]) / sd[live]
    A = np.hstack([Z, np.ones((len(Z), 1))])
    w = np.zeros(A.shape[1])
    reg = np.full(A.shape[1], l2 * len(y))
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(A @ w, -40.0, 40.0)))
        grad = A.T @ (p - y) + reg * w
        H = (A * (p * (1 - p))[:, None]).T @ A + np.diag(reg + 1e-9)
        step = np.linalg.solve(H, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    raw_w = np.where(live, w[:-1] / np.where(live, sd, 1.0), 0.0)
    bias = float(w[-1] - (raw_w * mu).sum())
    return LogisticModel(tuple(names), tuple(float(v) for v in raw_w), bias)


def base_rate_model(y: np.ndarray) -> LogisticModel:
    """Where every pose of the calibration set was right (or every one wrong), no feature can weigh the
    evidence: each pose scores the base rate, smoothed by half a pose each way (0 of 300 right -> 0.0017),
    rather than keeping a raw score that means nothing."""
    y = np.asarray(y, float)
    return LogisticModel((), (), _logit((y.sum() + 0.5) / (len(y) + 1.0)))


@dataclass(frozen=True)
class ScoreCalibration:
    """One logistic model per input mode; ``fingerprint`` names the checkpoint file(s) it was fitted for."""

    backend: str
    fingerprint: str
    models: dict[str, LogisticModel] = field(default_factory=dict)
    fitted_on: dict = field(default_factory=dict)  # what data, how many poses, held-out figures

    def apply(self, poses, context: Context) -> None:
        """Replace each pose's score by its calibrated probability (the raw score kept in ``raw_score``); the
        RGB-D model when the frame has depth."""
        model = self.models.get("rgbd" if context.depth is not None else "rgb")
        # tracked poses carry their calibrated score; an object outside the catalogue is left to the selection,
        # which drops and counts it
        fresh = [p for p in poses if getattr(p, "raw_score", None) is None and p.name in context.catalogue]
        if model is None or not fresh:
            return
        for p, prob in zip(fresh, model.probability(fresh, context)):
            p.raw_score = float(p.score)
            p.score = float(prob)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "backend": self.backend, "fingerprint": self.fingerprint,
                "models": {m: {"features": list(v.names), "weights": list(v.weights), "bias": v.bias}
                           for m, v in self.models.items()},
                "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict) -> ScoreCalibration:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not a score calibration (no '{FORMAT}' header)")
        models = {}
        for mode, m in d["models"].items():
            unknown = set(m["features"]) - set(FEATURES)
            if mode not in MODES or unknown or len(m["features"]) != len(m["weights"]):
                raise ValueError(f"bad calibration model {mode!r}: features {m['features']}")
            models[mode] = LogisticModel(tuple(m["features"]), tuple(float(w) for w in m["weights"]), float(m["bias"]))
        return cls(str(d["backend"]), str(d["fingerprint"]), models, dict(d.get("fitted_on", {})))


def sidecar_path(checkpoint) -> Path:
    return Path(str(checkpoint) + SUFFIX)


def fingerprint(paths) -> str:
    """sha256 (16 hex) over the bytes of the files an estimator was loaded from, in order."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def save_calibration(calibration: ScoreCalibration, checkpoint) -> Path:
    path = sidecar_path(checkpoint)
    path.write_text(json.dumps(calibration.to_dict(), indent=1) + "\n")
    return path


def load_calibration(checkpoint, files) -> ScoreCalibration | None:
    """The calibration beside ``checkpoint`` when it was fitted for these ``files``; None (logged) otherwise."""
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return None
    try:
        cal = ScoreCalibration.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}; delete it or refit it with `vfm-pose calibrate --checkpoint "
                         f"{checkpoint}`") from exc
    found = fingerprint(files)
    if cal.fingerprint != found:
        LOG.warning("%s was fitted for other weights (fingerprint %s, the checkpoint's is %s): raw scores are "
                    "used; refit it with `vfm-pose calibrate --checkpoint %s`", path, cal.fingerprint, found,
                    checkpoint)
        return None
    return cal
