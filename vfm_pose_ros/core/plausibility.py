"""Plausibility gates: is a valid pose (finite, orthonormal, in front of the camera) also believable?

A grasp planner acts on what the pose node publishes, so a pose that cannot be right must not go
out, however well it scores: blank and noise frames gave poses 3-5 m away while the depth image
said 0.8 m. Each gate answers with a reason code (the node counts ``withheld_<code>`` and says why
in /diagnostics) or None; a gate whose parameter is 0 is off.

* ``distance``: the object's centre lies outside the working range [min_distance_m, max_distance_m];
* ``projected_size``: the object would span fewer than ``min_projected_px`` pixels, or more than
  ``max_projected_size`` times the image's larger side (its diameter at the centre's depth);
* ``depth_mismatch`` (with a depth image): where the model projects, the object would stand more than
  ``depth_tolerance_m`` behind the measured surface (its front hidden everywhere: it could not have
  been seen) or in front of it (floating where the camera measures nothing). Measured per model point
  as (model depth - measured depth): a right pose has its visible points near 0 and its far side and
  occluded points above 0, so "behind" is judged on a low quantile (10 %) and "in front" on a high one
  (90 %), which leaves occlusion up to ~90 % and the object's own thickness alone. Points without a
  measurement are left out; with fewer than ``MIN_DEPTH_POINTS`` the gate cannot judge and passes.

ROS-free: numpy only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

GATE_REASONS = {
    "distance": "the pose lies outside the working range min_distance_m..max_distance_m: a misdetection, "
                "or set the range to the scene's",
    "projected_size": "the object would look implausibly small or large in the image: a misdetection, or check "
                      "the intrinsics, or set min_projected_px / max_projected_size",
    "depth_mismatch": "the object would stand behind or in front of the measured depth surface: a misdetection, "
                      "or check that depth is aligned to colour, or set depth_tolerance_m",
}
MIN_DEPTH_POINTS = 10  # model points with a measurement needed to judge a pose against depth
MAX_MODEL_POINTS = 1000  # model vertices used by the depth gate (every k-th vertex)
LOW_Q, HIGH_Q = 0.1, 0.9


@dataclass(frozen=True)
class GateConfig:
    """The gates' parameters (the pose node's of the same names); 0 turns a gate off."""

    min_distance_m: float = 0.1
    max_distance_m: float = 5.0
    min_projected_px: float = 4.0
    max_projected_size: float = 4.0
    depth_tolerance_m: float = 0.1

    @classmethod
    def from_params(cls, params: dict) -> GateConfig:
        return cls(**{f.name: float(params[f.name]) for f in dataclasses.fields(cls) if f.name in params})


@dataclass(frozen=True)
class GateFailure:
    code: str  # a key of GATE_REASONS
    message: str


def check_pose(R, t, obj, K, image_size: tuple[int, int], depth=None,
               cfg: GateConfig = GateConfig()) -> GateFailure | None:
    """None when the pose of ``obj`` (a catalogue ObjectModel: ``vertices``, ``diameter``) passes every gate,
    else the first gate it fails. ``image_size`` is (width, height); ``depth`` metres (0 = no measurement)."""
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    dist = float(np.linalg.norm(t))
    if (cfg.min_distance_m and dist < cfg.min_distance_m) or (cfg.max_distance_m and dist > cfg.max_distance_m):
        hi = f"{cfg.max_distance_m:g}" if cfg.max_distance_m else "inf"
        return GateFailure("distance", f"{obj.name} at {dist:.3f} m, outside the working range "
                                       f"{cfg.min_distance_m:g}..{hi} m")
    w, h = (int(v) for v in image_size)
    size_px = 0.5 * (K[0, 0] + K[1, 1]) * float(obj.diameter) / max(t[2], 1e-9)
    if (cfg.min_projected_px and size_px < cfg.min_projected_px) or \
            (cfg.max_projected_size and size_px > cfg.max_projected_size * max(w, h)):
        return GateFailure("projected_size", f"{obj.name} would span {size_px:.1f} px in a {w}x{h} image (allowed "
                                             f"{cfg.min_projected_px:g}..{cfg.max_projected_size * max(w, h):g} px)")
    if depth is not None and cfg.depth_tolerance_m:
        return _depth_gate(R, t, obj, K, np.asarray(depth), cfg.depth_tolerance_m)
    return None


def depth_residuals(R, t, obj, K, depth) -> np.ndarray:
    """(model depth - measured depth) in metres at the pixels where the model's points project and depth was
    measured; positive: the model point lies behind the measured surface."""
    pts = np.asarray(obj.vertices, dtype=np.float64)
    pts = pts[::max(1, len(pts) // MAX_MODEL_POINTS)]
    cam = pts @ R.T + t
    cam = cam[cam[:, 2] > 1e-6]
    if not len(cam):
        return np.zeros(0)
    uvw = cam @ K.T
    u = np.floor(uvw[:, 0] / uvw[:, 2]).astype(np.int64)
    v = np.floor(uvw[:, 1] / uvw[:, 2]).astype(np.int64)
    h, w = depth.shape[:2]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    measured = depth[v[inside], u[inside]].astype(np.float64)
    ok = np.isfinite(measured) & (measured > 0)
    return cam[inside][ok, 2] - measured[ok]


def _depth_gate(R, t, obj, K, depth, tol: float) -> GateFailure | None:
    d = depth_residuals(R, t, obj, K, depth)
    if len(d) < MIN_DEPTH_POINTS:
        return None  # the model projects where nothing was measured: depth cannot judge this pose
    low, high = np.quantile(d, [LOW_Q, HIGH_Q])
    if low > tol:
        return GateFailure("depth_mismatch", f"{obj.name} would stand {low:.2f} m behind the measured surface "
                                             f"(median {np.median(d):.2f} m; tolerance {tol:g} m)")
    if high < -tol:
        return GateFailure("depth_mismatch", f"{obj.name} would stand {-high:.2f} m in front of the measured "
                                             f"surface (median {-np.median(d):.2f} m; tolerance {tol:g} m)")
    return None
