"""Consistent subsampling of depth clouds: a point is kept or not by its own coordinates, not its index.

The depth stage thins the masked cloud several times (the cloud it keeps, the coarse and middle ICP
passes, the rotation search's screen). A random draw of k of N points picks an unrelated subset when N
changes by one, so a single mask cell that flips (fp16 against fp32, one frame to the next) reshuffled
every subset, moved every score a little, and turned near-ties between ICP starts the other way. Here
each point gets a fixed pseudo-random key hashed from the bits of its coordinates, and the k points with
the smallest keys are kept (bottom-k sampling): one point more or less changes the subset by at most
that point, and the subsets of different sizes are nested.
"""
from __future__ import annotations

import numpy as np

_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def point_keys(points) -> np.ndarray:
    """A uint64 key per point (Nx3), a hash of its float64 coordinates' bits (splitmix64 finaliser)."""
    bits = np.ascontiguousarray(np.asarray(points, dtype=np.float64).reshape(-1, 3)).view(np.uint64)
    with np.errstate(over="ignore"):
        h = bits[:, 0] * _MIX[0] ^ bits[:, 1] * _MIX[1] ^ bits[:, 2] * _MIX[2]
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


def consistent_subsample(points, k: int) -> np.ndarray:
    """Indices of the ``k`` points (of Nx3) with the smallest keys, in key order; all N, in key order, when
    N <= k. The same point set gives the same points in any order."""
    keys = point_keys(points)
    if len(keys) > k:
        idx = np.argpartition(keys, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)
    else:
        idx = np.arange(len(keys))
    return idx[np.argsort(keys[idx], kind="stable")]
