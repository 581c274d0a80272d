"""Image-plane affines and boxes: the 2x3 maps between an image and a square network input (a crop of it, or
the whole image letterboxed), and the head-output grid. Both backends crop through these."""
from __future__ import annotations

import numpy as np


def crop_affine(center, side: float, size: int) -> np.ndarray:
    """2x3 affine mapping image pixels to a size x size crop of ``side`` image pixels around ``center``
    (pixel-centre convention: image ``center`` lands on crop pixel (size - 1) / 2)."""
    s = size / float(side)
    cx, cy = float(center[0]), float(center[1])
    return np.array([[s, 0.0, (size - 1) / 2.0 - s * cx], [0.0, s, (size - 1) / 2.0 - s * cy]])


def letterbox_affine(height: int, width: int, size: int) -> np.ndarray:
    """The crop affine that fits the whole image into a size x size square (padding the short side)."""
    return crop_affine(((width - 1) / 2.0, (height - 1) / 2.0), max(height, width), size)


def window_affine(center, side: float, size: int) -> np.ndarray:
    """2x3 map from image pixels to input pixels of a square window (centre, side) resampled to size
    (pixel-corner convention: image ``center`` lands on size / 2; the CLIP backend was trained with it)."""
    k = size / float(side)
    cx, cy = float(center[0]), float(center[1])
    return np.array([[k, 0.0, size / 2.0 - k * cx], [0.0, k, size / 2.0 - k * cy]])


def out_affine(A: np.ndarray, stride: int) -> np.ndarray:
    """Image -> output-grid affine for a head of the given stride, given the image -> input affine (pixel
    centres)."""
    B = A / stride
    B[:, 2] = (A[:, 2] + 0.5) / stride - 0.5
    return B


def out_grid(size: int, stride: int) -> np.ndarray:
    """Input-pixel coordinates (h, w, 2) of the cell centres of a stride-``stride`` output grid."""
    n = size // stride
    c = (np.arange(n) + 0.5) * stride - 0.5
    xs, ys = np.meshgrid(c, c)
    return np.stack([xs, ys], axis=-1)


def apply_affine(A, uv) -> np.ndarray:
    """Points (Nx2, or anything reshaping to it) mapped by the 2x3 affine ``A``."""
    uv = np.asarray(uv, dtype=float).reshape(-1, 2)
    return uv @ A[:, :2].T + A[:, 2]


def invert_affine(A) -> np.ndarray:
    """The inverse 2x3 affine, by OpenCV's ``invertAffineTransform`` formula (the DINOv2 checkpoints' poses
    were measured with it, to the last bit; a singular map gives zeros, as OpenCV's)."""
    (a11, a12, b1), (a21, a22, b2) = np.asarray(A, dtype=np.float64)
    d = a11 * a22 - a12 * a21
    d = 1.0 / d if d != 0.0 else 0.0
    A11, A22, A12, A21 = a22 * d, a11 * d, -a12 * d, -a21 * d
    return np.array([[A11, A12, -A11 * b1 - A12 * b2], [A21, A22, -A21 * b1 - A22 * b2]])


def as_boxes(boxes) -> list[np.ndarray]:
    """One box [x0, y0, x1, y1] or an Nx4 array of boxes -> a list of (4,) float arrays."""
    arr = np.asarray(boxes, dtype=float)
    if arr.ndim == 1 and arr.shape == (4,):
        return [arr]
    if arr.ndim == 2 and arr.shape[1] == 4:
        return list(arr)
    raise ValueError(f"a 2D box is [x0, y0, x1, y1] (or an Nx4 array of boxes); got shape {arr.shape}")


def in_box(uv, box, margin: float = 0.0) -> np.ndarray:
    """Which points (Nx2 pixels) lie in ``box`` grown by ``margin`` times its size on every side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    uv = np.asarray(uv, dtype=float)
    return (uv[:, 0] >= x0 - mx) & (uv[:, 0] <= x1 + mx) & (uv[:, 1] >= y0 - my) & (uv[:, 1] <= y1 + my)
