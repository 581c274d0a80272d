"""Rotation as a class over fixed anchor rotations plus a residual (the CLIP pose head's ``rotation_head: anchors``).

A regressor trained with an L1 loss on an ambiguous (multimodal) rotation target collapses to a mean
answer. Classifying the rotation over a fixed near-uniform set of anchors and regressing a small residual
from the chosen one (SSD-6D's viewpoint bins, multi-bin orientation, the rotation anchors of equivariant
networks such as EPN) learns fast and keeps the modes apart: the classifier picks a mode, the residual
only has to correct within the anchor's cell.

Anchor sets (:func:`anchor_rotations`): 12, 24 and 60 give the rotation groups of the tetrahedron,
octahedron and icosahedron (a group is exactly uniform: every anchor's Voronoi cell is congruent); any
other count gives a super-Fibonacci spiral (Alexa, CVPR 2022), near-uniform for every N. The default, the
60 icosahedral rotations, has a covering radius of 44.5 deg (any rotation lies within 44.5 deg of an
anchor; super-Fibonacci needs about 128 points for the same) and neighbours 72 deg apart, so the residual
stays within the range a 6D regressor from identity handles well while 60 classes stay learnable from
few views. Labels are symmetry-aware (:func:`anchor_similarity`, :func:`nearest_anchor`).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

GROUPS = {12: "T", 24: "O", 60: "I"}  # anchor counts served by a rotation group (scipy's names)
DEFAULT_ANCHORS = 60
TIE_TOL = 1e-4  # similarities this close count as a tie (symmetry-equivalent anchors): the first one is the label


@functools.lru_cache(maxsize=8)
def _anchors(n: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    if n in GROUPS:
        return Rotation.create_group(GROUPS[n]).as_matrix()
    # super-Fibonacci spiral (Alexa 2022, Algorithm 1): unit quaternions evenly spread over S^3
    phi, psi = np.sqrt(2.0), 1.533751168755204288118041
    i = np.arange(n) + 0.5
    s = i / n
    r, big_r = np.sqrt(s), np.sqrt(1.0 - s)
    alpha, beta = 2.0 * np.pi * i / phi, 2.0 * np.pi * i / psi
    quat = np.stack([r * np.sin(alpha), r * np.cos(alpha), big_r * np.sin(beta), big_r * np.cos(beta)], 1)
    return Rotation.from_quat(quat).as_matrix()


def anchor_rotations(n: int = DEFAULT_ANCHORS) -> np.ndarray:
    """(n, 3, 3) anchor rotations, near-uniform over SO(3) (see the module docstring)."""
    n = int(n)
    if n < 2:
        raise ValueError(f"rotation_anchors must be at least 2; got {n}")
    return _anchors(n).copy()


def covering_radius_deg(anchors: np.ndarray, samples: int = 100_000, seed: int = 0) -> float:
    """The largest angle (degrees) from a random rotation to its nearest anchor over ``samples`` draws: a lower
    estimate of the set's covering radius (60 icosahedral anchors: 44.48 deg exactly, found by local search)."""
    from scipy.spatial.transform import Rotation

    q = Rotation.random(samples, random_state=seed).as_quat()
    qa = Rotation.from_matrix(np.asarray(anchors, dtype=float)).as_quat()
    best = np.abs(q @ qa.T).max(1)
    return float(np.degrees(2.0 * np.arccos(np.clip(best, -1.0, 1.0))).max())


def anchor_similarity(anchors: torch.Tensor, R_gt: torch.Tensor, sym_rots: torch.Tensor, sym_axes: torch.Tensor,
                      sym_cont: torch.Tensor) -> torch.Tensor:
    """(B, N) cosine of the symmetry-aware distance from each anchor to the ground truth (higher is nearer).

    anchors (N, 3, 3); R_gt (B, 3, 3); per sample: discrete symmetry rotations (B, S, 3, 3) (identity
    included), continuous-symmetry axis (B, 3) and flag (B,). No continuous symmetry: the cosine of the
    geodesic angle between the anchor and the nearest of R_gt S_k, ``(tr(A^T R_gt S_k) - 1) / 2``.
    Continuous symmetry about a: only the axis is observable, so the cosine of the angle between A a
    and R_gt S_k a (maximised over the flips S_k).
    """
    A = anchors.float()
    targets = R_gt.float().unsqueeze(1) @ sym_rots.float()  # (B, S, 3, 3)
    full = (torch.einsum("nij,bsij->bsn", A, targets) - 1.0) / 2.0  # (B, S, N): (tr(A^T T) - 1) / 2
    a = sym_axes.float()
    axis = torch.einsum("nij,bj,bsik,bk->bsn", A, a, targets, a)  # (A a) . (T a)
    per = torch.where(sym_cont.view(-1, 1, 1), axis, full)
    return per.max(dim=1).values


def nearest_anchor(sim: torch.Tensor, tol: float = TIE_TOL) -> torch.Tensor:
    """(B,) the label: the first anchor within ``tol`` of the best similarity, so symmetry-equivalent anchors
    (exact ties, broken only by rounding) always give the same label and the residual one anchor to correct."""
    near = sim >= sim.max(dim=1, keepdim=True).values - tol
    return near.float().argmax(dim=1)  # argmax returns the first of equal maxima


def compose(anchors: torch.Tensor, index: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) rotations anchor[index] @ residual, in float32 whatever the autocast type."""
    with torch.autocast(device_type=residual.device.type, enabled=False):
        return anchors.float()[index] @ residual.float()


def decode(logits: torch.Tensor, residual: torch.Tensor, anchors: torch.Tensor) -> dict[str, torch.Tensor]:
    """Network outputs of the anchor head: the logits (float32), the residual and R = best anchor @ residual."""
    logits = logits.float()
    return {"rot_logits": logits, "rot_res": residual, "R": compose(anchors, logits.argmax(dim=-1), residual)}
