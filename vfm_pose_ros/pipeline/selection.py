"""Which of an estimator's poses may be published: valid, known, scoring enough, plausible; numbered once.

ROS-free: the frame pipeline (:mod:`vfm_pose_ros.pipeline.frame`) runs this on every frame.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..core.detections import instance_indices
from ..core.validation import InvalidInput, validate_pose


@dataclasses.dataclass
class Selection:
    """What :func:`select_poses` kept, and what it dropped and why."""

    poses: list
    reason: str = ""  # why nothing was kept ("" when something was)
    withheld: int = 0  # below the score threshold
    gated: list = dataclasses.field(default_factory=list)  # (name, GateFailure): failed a plausibility gate
    rejected: list = dataclasses.field(default_factory=list)  # (name, message): invalid poses
    unknown: list = dataclasses.field(default_factory=list)  # names outside the catalogue


def select_poses(raw, catalogue, threshold: float, prompt: str = "", gate=None) -> Selection:
    """The poses fit to publish: valid (finite, orthonormal, in front of the camera; the others are rejected),
    of catalogue objects, scoring at least ``threshold`` (the others are withheld), plausible (``gate(pose)``,
    :func:`vfm_pose_ros.core.plausibility.check_pose` in the pipeline, returns None; the others are withheld by
    gate), sorted by score and numbered per object (``instance`` = k of the TF frame ``<name>_<k>``)."""
    kept, low = [], []
    sel = Selection(poses=[])
    for p in raw:
        try:
            R, t = validate_pose(p.R, p.t)
        except InvalidInput as exc:
            sel.rejected.append((p.name, exc.message))
            continue
        if p.name not in catalogue:
            sel.unknown.append(p.name)
            continue
        if not np.isfinite(p.score) or p.score < threshold:
            low.append(p)
            continue
        failure = gate(dataclasses.replace(p, R=R, t=t)) if gate is not None else None
        if failure is not None:
            sel.gated.append((p.name, failure))
            continue
        kept.append(dataclasses.replace(p, R=R, t=t))
    sel.withheld = len(low)
    kept.sort(key=lambda p: -p.score)
    sel.poses = [dataclasses.replace(p, instance=k) for p, k in zip(kept, instance_indices(p.name for p in kept))]
    if not sel.poses:
        sel.reason = _why_empty(sel, low, threshold, prompt)
    return sel


def _why_empty(sel: Selection, low: list, threshold: float, prompt: str) -> str:
    """One line saying why nothing was kept (the node's ``last_empty_reason``)."""
    if low:
        best = max(low, key=lambda p: p.score if np.isfinite(p.score) else -1.0)
        return f"{len(low)} result(s) below score_threshold {threshold:.2f} (best {best.name} {best.score:.2f})"
    if sel.gated:
        return (f"{len(sel.gated)} result(s) withheld as implausible ("
                + "; ".join(f"{f.code}: {f.message}" for _, f in sel.gated[:3]) + ")")
    if sel.rejected:
        return f"{len(sel.rejected)} result(s) with an invalid pose"
    if sel.unknown:
        return "results named objects outside the catalogue"
    return "no object found" + (f" for prompt {prompt!r}" if prompt else "")
