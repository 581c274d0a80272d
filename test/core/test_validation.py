"""Frame and pose validation: each refusal has its reason code and a message naming the fix."""
from __future__ import annotations

import numpy as np
import pytest

from vfm_pose_ros.core.transforms import axis_angle_to_matrix
from vfm_pose_ros.core.validation import (
    REASONS,
    InvalidInput,
    StampOrder,
    sanitize_depth,
    validate_frame,
    validate_intrinsics,
    validate_pose,
)

K = np.array([[500.0, 0, 32], [0, 500, 24], [0, 0, 1]])
RGB = np.zeros((48, 64, 3), np.uint8)


def _code(fn, *args, **kw) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        fn(*args, **kw)
    assert info.value.reason_code in REASONS
    assert info.value.reason_code in str(info.value)
    return info.value


def test_a_good_frame_passes_untouched():
    depth = np.full((48, 64), 0.8, np.float32)
    check = validate_frame(RGB, K, depth, camera_size=(64, 48))
    assert check.depth_nonfinite == 0 and not check.warnings
    np.testing.assert_array_equal(check.depth, depth)
    assert validate_frame(RGB, K).depth is None


@pytest.mark.parametrize("rgb", [np.zeros((0, 0, 3), np.uint8), np.zeros((0, 64, 3), np.uint8), None])
def test_empty_image(rgb):
    assert _code(validate_frame, rgb, K).reason_code == "empty_image"


def test_wrong_image_layout():
    err = _code(validate_frame, np.zeros((48, 64), np.uint8), K)
    assert err.reason_code == "bad_image" and "HxWx3 uint8" in err.message


def test_image_size_differs_from_camera_info():
    err = _code(validate_frame, RGB, K, camera_size=(640, 480))
    assert err.reason_code == "size_mismatch" and "64x48" in err.message and "640x480" in err.message
    validate_frame(RGB, K, camera_size=(0, 0))  # CameraInfo leaves 0x0 when unknown


@pytest.mark.parametrize("bad", [np.zeros((3, 3)), np.full((3, 3), np.nan), K * np.array([[np.inf], [1], [1]]),
                                 -K, np.zeros(4)])
def test_bad_intrinsics(bad):
    assert _code(validate_intrinsics, bad).reason_code == "bad_intrinsics"


def test_all_zero_intrinsics_message_says_uncalibrated():
    assert "uncalibrated" in _code(validate_frame, RGB, np.zeros((3, 3))).message


def test_depth_nan_and_inf_are_zeroed_and_counted():
    depth = np.full((48, 64), 0.5, np.float32)
    depth[0, :3] = np.nan
    depth[1, 0] = np.inf
    depth[2, 0] = -0.2
    before = depth.copy()
    check = validate_frame(RGB, K, depth)
    assert check.depth_nonfinite == 5
    assert check.depth[0, 0] == 0 and check.depth[1, 0] == 0 and check.depth[2, 0] == 0
    assert np.all(np.isfinite(check.depth)) and check.warnings and "set to 0" in check.warnings[0]
    np.testing.assert_array_equal(depth, before)  # the caller's array is not modified


@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_depth_with_no_measurement(fill):
    err = _code(validate_frame, RGB, K, np.full((48, 64), fill, np.float32))
    assert err.reason_code == "depth_all_zero" and "use_depth" in err.message


def test_depth_and_colour_sizes_differ():
    err = _code(sanitize_depth, np.ones((24, 32), np.float32), (48, 64))
    assert err.reason_code == "depth_size_mismatch" and "aligned" in err.message


def test_stamps_going_backwards():
    order = StampOrder()
    order.check(100)
    order.check(100)  # equal stamps are fine (two cameras, a repeated frame)
    order.check(200)
    err = _code(order.check, 150)
    assert err.reason_code == "stamp_backwards"
    order.check(160)  # the new timeline (a restarted bag) is accepted from the next frame on
    order.reset()
    order.check(10)


def test_valid_pose():
    R = axis_angle_to_matrix([0.1, 0.2, 0.3])
    R2, t2 = validate_pose(R, [0, 0, 0.5])
    np.testing.assert_array_equal(R2, R)
    assert t2.shape == (3,)


@pytest.mark.parametrize("R, t, words", [
    (np.full((3, 3), np.nan), [0, 0, 1], "NaN"),
    (np.eye(3), [0, 0, np.inf], "NaN"),
    (np.eye(3) * 1.1, [0, 0, 1], "orthonormal"),
    (np.diag([1.0, 1.0, -1.0]), [0, 0, 1], "det"),  # a reflection
    (np.eye(3), [0, 0, -0.3], "in front of the camera"),
    (np.eye(2), [0, 0, 1], "3x3"),
])
def test_invalid_poses(R, t, words):
    err = _code(validate_pose, R, t)
    assert err.reason_code == "bad_pose" and words in err.message


def test_unknown_reason_codes_are_refused():
    with pytest.raises(KeyError):
        InvalidInput("made_up", "x")


# --------------------------------------------------------------------------- intrinsics that cannot be this image's

K640 = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
RGB640 = np.zeros((480, 640, 3), np.uint8)


def test_plausible_intrinsics_pass():
    validate_frame(RGB640, K640, camera_size=(640, 480))
    validate_frame(RGB640, K640 * np.array([[0.1], [0.1], [1]]))  # a wide lens, 143 degrees
    validate_frame(RGB640, K640 * np.array([[20], [20], [1]]) - np.array([[0, 0, 6080], [0, 0, 4560], [0, 0, 0]]))
    validate_frame(RGB640, np.array([[600.0, 0.5, 300], [0, 610, 200], [0, 0, 1]]))  # skew, off-centre


@pytest.mark.parametrize("K_bad, words", [
    (np.array([[0.894, 0, 0.508], [0, 1.19, 0.5], [0, 0, 1]]), "K looks normalised: multiply by the image size"),
    (K640 * 1000, "last row"),
    (np.array([[600.0, 0, 1e9], [0, 600, 1e9], [0, 0, 1]]), "principal point"),
    (np.array([[600.0, 0, -400], [0, 600, 240], [0, 0, 1]]), "principal point"),
    (np.array([[6e5, 0, 320], [0, 6e5, 240], [0, 0, 1]]), "focal lengths"),
    (np.array([[5.0, 0, 320], [0, 5, 240], [0, 0, 1]]), "focal lengths"),
    (np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 2]]), "last row"),
])
def test_intrinsics_that_do_not_fit_the_image_are_refused(K_bad, words):
    err = _code(validate_frame, RGB640, K_bad, camera_size=(640, 480))
    assert err.reason_code == "implausible_intrinsics" and words in err.message
    assert "fix camera_info" in err.message
    validate_intrinsics(K_bad)  # without an image size only the basic checks apply
