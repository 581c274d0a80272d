"""Plausibility gates (core.plausibility): a valid pose that cannot be right is withheld, with its reason."""
from __future__ import annotations

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.plausibility import GATE_REASONS, GateConfig, check_pose, depth_residuals
from vfm_pose_ros.core.types import ObjectPose
from vfm_pose_ros.paths import default_catalogue_dir

K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
SIZE = (640, 480)
CAT = Catalogue.from_dir(default_catalogue_dir())
CAN, DRILLER = CAT["can_like"], CAT["driller_like"]
R0 = np.eye(3)


def scene_depth(obj, t, background=1.5, R=R0):
    """A depth image of the object in front of a wall: the nearest model point per pixel, dilated 3x3."""
    depth = np.full(SIZE[::-1], background, np.float32)
    cam = obj.vertices @ R.T + t
    uv = np.floor((cam @ K.T)[:, :2] / cam[:, 2:3]).astype(int)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            np.minimum.at(depth, (uv[:, 1] + dv, uv[:, 0] + du), cam[:, 2].astype(np.float32))
    return depth


@pytest.mark.parametrize("obj", [CAN, DRILLER])
def test_a_right_pose_passes_with_and_without_depth(obj):
    t = np.array([0.05, -0.02, 0.8])
    assert check_pose(R0, t, obj, K, SIZE) is None
    depth = scene_depth(obj, t)
    assert check_pose(R0, t, obj, K, SIZE, depth) is None
    d = depth_residuals(R0, t, obj, K, depth)
    assert len(d) > 100 and d.min() >= -1e-6 and d.max() <= obj.diameter


def test_a_right_pose_half_hidden_behind_an_occluder_passes():
    t = np.array([0.0, 0.0, 0.8])
    depth = scene_depth(DRILLER, t)
    depth[:, :320] = 0.5  # the left half of the image (and of the object) is behind something 0.3 m nearer
    assert check_pose(R0, t, DRILLER, K, SIZE, depth) is None


@pytest.mark.parametrize("z, words", [(4.0, "behind the measured surface"), (0.3, "in front of the measured")])
def test_a_pose_off_the_measured_depth_is_withheld(z, words):
    depth = np.full(SIZE[::-1], 0.8, np.float32)  # the flat 0.8 m of the phantom frames in issue 22
    failure = check_pose(R0, np.array([0.0, 0.0, z]), CAN, K, SIZE, depth)
    assert failure.code == "depth_mismatch" and words in failure.message
    assert check_pose(R0, np.array([0.0, 0.0, z]), CAN, K, SIZE, depth, GateConfig(depth_tolerance_m=0)) is None


def test_no_measurement_where_the_object_projects_cannot_judge():
    depth = np.full(SIZE[::-1], 0.8, np.float32)
    depth[100:400, 200:450] = 0  # a hole where the can projects
    assert check_pose(R0, np.array([0.0, 0.0, 3.0]), CAN, K, SIZE, depth) is None
    off_image = np.array([3.0, 0.0, 3.0])  # projects outside the image (x = 920 px)
    assert check_pose(R0, off_image, CAN, K, SIZE, np.full(SIZE[::-1], 0.8, np.float32)) is None


@pytest.mark.parametrize("t", [[0, 0, 0.05], [0, 0, 6.0], [4.0, 3.0, 2.0]])
def test_outside_the_working_range_is_withheld(t):
    failure = check_pose(R0, np.array(t, float), CAN, K, SIZE)
    assert failure.code == "distance" and "working range 0.1..5 m" in failure.message
    assert check_pose(R0, np.array(t, float), CAN, K, SIZE,
                      cfg=GateConfig(min_distance_m=0, max_distance_m=0, min_projected_px=0,
                                     max_projected_size=0)) is None


def test_an_implausible_projected_size_is_withheld():
    K_short = np.diag([20.0, 20.0, 1.0]) + [[0, 0, 320], [0, 0, 240], [0, 0, 0]]
    small = check_pose(R0, np.array([0, 0, 4.0]), CAN, K_short, SIZE)
    assert small.code == "projected_size" and "0.7 px" in small.message
    big = check_pose(R0, np.array([0, 0, 0.3]), DRILLER, K, (32, 24))
    assert big.code == "projected_size" and "32x24" in big.message
    assert check_pose(R0, np.array([0, 0, 0.3]), DRILLER, K, (32, 24), cfg=GateConfig(max_projected_size=0)) is None


def test_select_poses_withholds_implausible_poses_by_gate():
    from vfm_pose_ros.pipeline import select_poses

    depth = np.full(SIZE[::-1], 0.8, np.float32)
    gate = (lambda p: check_pose(p.R, p.t, CAT[p.name], K, SIZE, depth))
    phantom = [ObjectPose("can_like", R0, np.array([0.0, 0.0, 4.0]), score=0.5),
               ObjectPose("driller_like", R0, np.array([0.0, 0.0, 3.0]), score=0.4)]
    sel = select_poses(phantom, CAT, 0.3, gate=gate)
    assert sel.poses == [] and [f.code for _, f in sel.gated] == ["depth_mismatch"] * 2
    assert "withheld as implausible" in sel.reason and "behind the measured surface" in sel.reason
    t = np.array([0.0, 0.0, 0.8])
    real = ObjectPose("can_like", R0, t, score=0.5)
    sel = select_poses([real, *phantom], CAT, 0.3,
                       gate=lambda p: check_pose(p.R, p.t, CAT[p.name], K, SIZE, scene_depth(CAN, t)))
    assert [p.name for p in sel.poses] == ["can_like"] and len(sel.gated) == 2 and sel.reason == ""


def test_every_gate_says_how_to_fix_it():
    assert set(GATE_REASONS) == {"distance", "projected_size", "depth_mismatch"}
    assert all("set " in text for text in GATE_REASONS.values())
