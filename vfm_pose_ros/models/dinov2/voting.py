"""PVNet RANSAC voting of keypoints from the head's unit vector fields (vectorised torch)."""
from __future__ import annotations

import torch


def _agree(hyp: torch.Tensor, coords: torch.Tensor, vecs: torch.Tensor, cos_thr: float) -> torch.Tensor:
    """(K, H, P) whether pixel p's vector for keypoint k points at hypothesis h (cosine above cos_thr)."""
    diff = hyp.unsqueeze(2) - coords.view(1, 1, -1, 2)  # (K, H, P, 2)
    return (diff * vecs.unsqueeze(1)).sum(-1) > cos_thr * diff.norm(dim=-1).clamp_min(1e-6)


def ransac_vote(coords: torch.Tensor, vecs: torch.Tensor, n_hyp: int = 128, cos_thr: float = 0.99,
                generator: torch.Generator | None = None, score_pixels: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """PVNet RANSAC voting, vectorised over keypoints.

    coords (P, 2) pixel positions, vecs (K, P, 2) unit vectors pointing at each keypoint.
    Returns keypoints (K, 2) and confidences (K,) = fraction of pixels agreeing with the winner.
    Hypotheses are intersections of random pixel pairs' rays, counted on at most ``score_pixels``
    random pixels (the K x H x P agreement test is the cost: a whole 56x56 mask is 3,136 pixels);
    the winner's inliers are then taken over all pixels and it is re-estimated as the least-squares
    intersection of their rays.
    """
    P = coords.shape[0]
    K = vecs.shape[0]
    if P < 2:
        return torch.full((K, 2), float("nan")), torch.zeros(K)
    i = torch.randint(P, (n_hyp,), generator=generator)
    j = torch.randint(P, (n_hyp,), generator=generator)
    pi, pj = coords[i], coords[j]  # (H, 2)
    vi, vj = vecs[:, i], vecs[:, j]  # (K, H, 2)
    det = vi[..., 1] * vj[..., 0] - vi[..., 0] * vj[..., 1]
    d = pj - pi
    a = (d[:, 1] * vj[..., 0] - d[:, 0] * vj[..., 1]) / torch.where(det.abs() < 1e-4, torch.ones_like(det), det)
    hyp = pi.unsqueeze(0) + a.unsqueeze(-1) * vi  # (K, H, 2)
    valid = det.abs() >= 1e-4
    sub = torch.randperm(P, generator=generator)[:score_pixels] if P > score_pixels > 0 else slice(None)
    counts = _agree(hyp, coords[sub], vecs[:, sub], cos_thr).sum(-1).masked_fill(~valid, -1)  # (K, H)
    best = counts.argmax(dim=1)
    inl_best = _agree(hyp[torch.arange(K), best].unsqueeze(1), coords, vecs, cos_thr)[:, 0]  # (K, P)
    # least-squares intersection: sum_i (I - v v^T) x = sum_i (I - v v^T) p
    eye = torch.eye(2, dtype=coords.dtype)
    A = eye - vecs.unsqueeze(-1) * vecs.unsqueeze(-2)  # (K, P, 2, 2)
    w = inl_best.to(coords.dtype).view(K, P, 1, 1)
    M = (A * w).sum(1)
    b = (A @ coords.view(1, P, 2, 1) * w).sum(1).squeeze(-1)
    ok = torch.linalg.det(M).abs() > 1e-6
    x = torch.where(ok.unsqueeze(-1), torch.linalg.solve(M + (~ok).view(K, 1, 1) * eye, b), hyp[torch.arange(K), best])
    conf = inl_best.float().mean(1)
    conf = torch.where(valid.any(1), conf, torch.zeros_like(conf))
    return x, conf
