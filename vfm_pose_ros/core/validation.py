"""Checks on what enters and leaves the estimators, with errors that name the problem and the fix.

Nodes and commands call these before inference (is this frame usable?) and after it
(is this pose safe to hand to a robot?). Every refusal is one exception type,
:class:`InvalidInput`, carrying a short ``reason_code`` that the pose node counts in
its diagnostics (``rejected_<reason_code>``), so an operator sees *why* frames are
refused, not just that outputs are empty.

ROS-free: numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# Every reason code a check below can raise, with the fix the message suggests (documentation and
# the diagnostics key list; tests check that each raise uses a listed code).
REASONS = {
    "bad_encoding": "the image message cannot be decoded: publish rgb8/bgr8/rgba8/bgra8/mono8 or 16UC1/32FC1",
    "bad_step": "the Image's width, height, step and data length disagree: fix the publisher "
                "(step >= width x bytes per pixel, len(data) = step x height)",
    "empty_image": "the image has no pixels: check the camera driver and the image topic",
    "bad_image": "the image must be HxWx3 uint8 RGB (after conversion): check the encoding",
    "size_mismatch": "image size differs from CameraInfo width/height: use the camera_info of this image stream",
    "bad_intrinsics": "CameraInfo K is all zero or not finite: calibrate the camera or fix camera_info",
    "implausible_intrinsics": "CameraInfo K does not fit the image (focal length or principal point in the wrong "
                              "units, K[2][2] != 1): fix camera_info (K in pixels of this image, K[2][2] = 1)",
    "depth_size_mismatch": "depth and colour differ in size: use the depth stream aligned to colour",
    "depth_all_zero": "the depth image has no valid measurement: check the depth stream, or set use_depth false",
    "stamp_backwards": "timestamps went backwards: a bag restarted or clocks jumped; reset the node or use_sim_time",
    "unknown_prompt": "the prompt names no catalogue object: set one that does "
                      "(ros2 param set /vfm_pose prompt \"the <object>\"), or '' to look for every object",
    "bad_pose": "the estimator produced a non-finite, non-orthonormal or behind-camera pose: it is never "
                "published; if it recurs, check the model and the camera intrinsics",
}


class InvalidInput(ValueError):
    """A frame or pose that must not be used; ``reason_code`` is one of :data:`REASONS`."""

    def __init__(self, reason_code: str, message: str):
        if reason_code not in REASONS:
            raise KeyError(f"unknown reason code {reason_code!r}; add it to validation.REASONS")
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message

    def __str__(self) -> str:
        return f"[{self.reason_code}] {self.message}"


@dataclass
class FrameCheck:
    """What validation did to a usable frame: warnings to log and counters to add."""

    depth: np.ndarray | None = None  # the sanitised depth (metres, invalid -> 0), or None
    depth_nonfinite: int = 0  # NaN/inf depth pixels set to 0
    warnings: list[str] = field(default_factory=list)


def validate_image(rgb) -> np.ndarray:
    """The colour image as HxWx3 uint8, or InvalidInput (empty_image, bad_image)."""
    if rgb is None:
        raise InvalidInput("empty_image", "no colour image was given")
    rgb = np.asarray(rgb)
    if rgb.size == 0 or rgb.ndim < 2 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InvalidInput("empty_image", f"the colour image is empty (shape {rgb.shape}); {REASONS['empty_image']}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InvalidInput("bad_image", f"colour image has shape {rgb.shape} and dtype {rgb.dtype}; "
                                        f"{REASONS['bad_image']}")
    return rgb


# Plausible intrinsics for an image of size (w, h), in pixels: focal lengths between these multiples of max(w, h)
# (0.05: a field of view near 170 degrees; 50: near 1 degree), the principal point within the image widened by
# this fraction of its size on every side. A K outside these is in the wrong units (normalised, mm, scaled).
FOCAL_RANGE = (0.05, 50.0)
PRINCIPAL_POINT_MARGIN = 0.25


def validate_intrinsics(K, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """K as a 3x3 float64 with finite, positive focal lengths, or InvalidInput (bad_intrinsics).

    With ``image_size`` (width, height) K must also fit that image (implausible_intrinsics): last row
    (0, 0, 1), focal lengths within :data:`FOCAL_RANGE` of the image size, principal point inside the image
    (with :data:`PRINCIPAL_POINT_MARGIN`). A K that passes the first checks but not these would give poses
    metres or millimetres off (a normalised K put a can at z = 2 mm), so the frame is refused instead.
    """
    try:
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    except (TypeError, ValueError):
        raise InvalidInput("bad_intrinsics", f"K must have 9 numbers, got {np.shape(K)}; "
                                             f"{REASONS['bad_intrinsics']}") from None
    if not np.all(np.isfinite(K)):
        raise InvalidInput("bad_intrinsics", f"K has NaN or inf entries: {K.tolist()}; {REASONS['bad_intrinsics']}")
    if not np.any(K):
        raise InvalidInput("bad_intrinsics", f"K is all zero (an uncalibrated camera); {REASONS['bad_intrinsics']}")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InvalidInput("bad_intrinsics", f"focal lengths fx={K[0, 0]}, fy={K[1, 1]} must be positive; "
                                             f"{REASONS['bad_intrinsics']}")
    if image_size is not None:
        check_intrinsics_fit(K, image_size)
    return K


def check_intrinsics_fit(K: np.ndarray, image_size: tuple[int, int]) -> None:
    """Raise InvalidInput (implausible_intrinsics) when a finite, positive K cannot be this image's (see above)."""
    w, h = (int(v) for v in image_size)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    fix = REASONS["implausible_intrinsics"]
    if abs(K[2, 2] - 1.0) > 1e-6 or abs(K[2, 0]) > 1e-9 or abs(K[2, 1]) > 1e-9 or abs(K[1, 0]) > 1e-9:
        raise InvalidInput("implausible_intrinsics",
                           f"K's last row is {K[2].tolist()} (and K[1][0] = {K[1, 0]}): a pinhole K has rows "
                           f"[fx, s, cx], [0, fy, cy], [0, 0, 1]; K scaled by a factor? {fix}")
    size = max(w, h)
    lo, hi = FOCAL_RANGE[0] * size, FOCAL_RANGE[1] * size
    if max(fx, fy) <= 10.0 and max(abs(cx), abs(cy)) <= 1.5 and size > 10:
        raise InvalidInput("implausible_intrinsics",
                           f"K looks normalised: multiply by the image size (fx, cx by the width {w}; fy, cy by the "
                           f"height {h}); got fx={fx:.4g}, fy={fy:.4g}, cx={cx:.4g}, cy={cy:.4g}; {fix}")
    if not (lo <= fx <= hi and lo <= fy <= hi):
        raise InvalidInput("implausible_intrinsics",
                           f"focal lengths fx={fx:.4g}, fy={fy:.4g} px are implausible for a {w}x{h} image (expected "
                           f"{lo:.4g}..{hi:.4g} px, i.e. {FOCAL_RANGE[0]}..{FOCAL_RANGE[1]} x {size}); {fix}")
    m = PRINCIPAL_POINT_MARGIN
    if not (-m * w <= cx <= (1 + m) * w and -m * h <= cy <= (1 + m) * h):
        raise InvalidInput("implausible_intrinsics",
                           f"principal point ({cx:.4g}, {cy:.4g}) lies outside the {w}x{h} image (allowed: "
                           f"{-m * w:.4g}..{(1 + m) * w:.4g}, {-m * h:.4g}..{(1 + m) * h:.4g}); {fix}")


def sanitize_depth(depth, image_shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Depth (metres) with NaN/inf/negative set to 0, and how many pixels were changed.

    Raises InvalidInput (depth_size_mismatch, depth_all_zero). The input is not modified.
    """
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.shape[:2] != tuple(image_shape):
        raise InvalidInput("depth_size_mismatch",
                           f"depth is {depth.shape[1]}x{depth.shape[0]} but colour is "
                           f"{image_shape[1]}x{image_shape[0]}; "
                           f"{REASONS['depth_size_mismatch']}")
    depth = depth.astype(np.float32, copy=False)
    bad = ~np.isfinite(depth)
    n_bad = int(bad.sum())
    negative = depth < 0  # NaN compares False, so this only adds finite negatives
    if n_bad or negative.any():
        depth = np.where(bad | negative, np.float32(0), depth)
        n_bad += int(negative.sum())
    if not np.any(depth > 0):
        raise InvalidInput("depth_all_zero", f"all {depth.size} depth pixels are zero or invalid; "
                                             f"{REASONS['depth_all_zero']}")
    return depth, n_bad


def validate_frame(rgb, K, depth=None, camera_size: tuple[int, int] | None = None) -> FrameCheck:
    """Check one frame before inference; returns the sanitised depth and warnings, raises InvalidInput.

    ``camera_size`` is CameraInfo's (width, height) when known: it must equal the image size
    (0x0 means "not set" in CameraInfo and is accepted).
    """
    rgb = validate_image(rgb)
    h, w = rgb.shape[:2]
    if camera_size is not None and tuple(camera_size) != (0, 0) and tuple(camera_size) != (w, h):
        raise InvalidInput("size_mismatch", f"image is {w}x{h} but camera_info says {camera_size[0]}x{camera_size[1]}; "
                                            f"{REASONS['size_mismatch']}")
    validate_intrinsics(K, image_size=(w, h))
    check = FrameCheck()
    if depth is not None:
        check.depth, check.depth_nonfinite = sanitize_depth(depth, (h, w))
        if check.depth_nonfinite:
            check.warnings.append(f"{check.depth_nonfinite} depth pixels were NaN, inf or negative and were set to 0 "
                                  "(no measurement)")
    return check


class StampOrder:
    """Refuses a stamp older than the previous one (a restarted bag, a clock jump); equal stamps are allowed.

    The refused stamp becomes the new reference, so after a restart only the first frame of the
    new timeline is refused (and reported), not every frame until the old time is reached again.
    """

    def __init__(self):
        self.last_ns: int | None = None

    def check(self, stamp_ns: int) -> None:
        last, self.last_ns = self.last_ns, int(stamp_ns)
        if last is not None and stamp_ns < last:
            back = (last - stamp_ns) / 1e9
            raise InvalidInput("stamp_backwards", f"stamp {stamp_ns} ns is {back:.3f} s older than the previous frame; "
                                                  f"{REASONS['stamp_backwards']}")

    def reset(self) -> None:
        self.last_ns = None


def validate_pose(R, t, min_z: float = 1e-3, tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """R (3x3), t (3,) as float64 when finite, orthonormal (det +1) and in front of the camera (z > min_z, metres).

    Raises InvalidInput (bad_pose) otherwise: such a pose must never reach a robot.
    """
    try:
        R = np.asarray(R, dtype=np.float64).reshape(3, 3)
        t = np.asarray(t, dtype=np.float64).reshape(3)
    except (TypeError, ValueError):
        raise InvalidInput("bad_pose", f"pose has shapes R {np.shape(R)}, t {np.shape(t)}; need 3x3 and 3") from None
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        raise InvalidInput("bad_pose", "pose has NaN or inf entries")
    err = float(np.abs(R @ R.T - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if err > tol or not math.isclose(det, 1.0, abs_tol=tol):
        raise InvalidInput("bad_pose", f"rotation is not orthonormal (max |R R^T - I| = {err:.2e}, det = {det:.4f})")
    if t[2] <= min_z:
        raise InvalidInput("bad_pose", f"object centre is not in front of the camera (z = {t[2]:.4f} m)")
    return R, t
