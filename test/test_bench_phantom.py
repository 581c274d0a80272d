"""The benchmark's phantom section: empty frames through the pose node's selection (score threshold and
plausibility gates), counted per backend and input; run here with a stand-in estimator of known output."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vfm_pose_ros.bench.common import default_catalogue, scaled_K
from vfm_pose_ros.bench.phantom import empty_frames, measure_phantom_rate, phantom_targets, published_poses
from vfm_pose_ros.core.types import ObjectPose
from vfm_pose_ros.ros.graph import load_pose_defaults

W, H = 64, 48


class FixedEstimator:
    """Answers every frame with the same poses: a driller 3 m away (behind a surface the depth puts at 0.8 m,
    inside the 5 m working range) scoring 0.9, and a can scoring under the threshold."""

    def predict(self, frame):
        return [ObjectPose("driller_like", np.eye(3), np.array([0.0, 0.0, 3.0]), score=0.9),
                ObjectPose("can_like", np.eye(3), np.array([0.0, 0.0, 0.8]), score=0.1)]


@pytest.fixture(scope="module")
def catalogue():
    return default_catalogue()


def test_the_node_selection_decides_what_counts_as_published(catalogue):
    rgb = np.zeros((H, W, 3), np.uint8)
    depth = np.full((H, W), 0.8, np.float32)
    params = load_pose_defaults()
    poses, dropped = published_poses(FixedEstimator(), catalogue, rgb, scaled_K(W, H), depth,
                                     {**params, "use_depth": True})
    assert poses == [] and sorted(dropped) == ["depth_mismatch", "low_score"]
    poses, dropped = published_poses(FixedEstimator(), catalogue, rgb, scaled_K(W, H), depth,
                                     {**params, "use_depth": False})  # without depth nothing contradicts 3 m
    assert [p.name for p in poses] == ["driller_like"] and dropped == ["low_score"]
    poses, _ = published_poses(FixedEstimator(), catalogue, rgb, scaled_K(W, H), depth,
                               {**params, "use_depth": True, "plausibility_gates": False})
    assert [p.name for p in poses] == ["driller_like"]


def test_empty_frames_hold_no_catalogue_object(catalogue):
    frames = list(empty_frames(catalogue, 3, W, H))
    assert len(frames) == 3 and all(f.gts == [] for f in frames)
    assert all(f.rgb.shape == (H, W, 3) and f.depth.shape == (H, W) for f in frames)
    assert any((f.depth > 0).any() for f in frames)  # distractors or a table: not blank frames


def test_rate_per_backend_and_input_with_the_issue_target(catalogue):
    res = measure_phantom_rate(3, backends=("fixed",), width=W, height=H, load=lambda b, d: (FixedEstimator(), b))
    rows = res["rows"]
    assert set(rows) == {"fixed/rgbd", "fixed/rgb"}
    rgbd, rgb = rows["fixed/rgbd"], rows["fixed/rgb"]
    assert rgb["frames_published"] == 3 and rgb["rate"] == 1.0 and rgb["dropped"] == {"low_score": 3}
    # with depth the driller 3 m away is withheld wherever the frame measured the surface where it projects
    # (the far background of an empty frame can be unmeasured: depth cannot judge there, the gate passes)
    assert rgbd["frames_published"] + rgbd["dropped"]["depth_mismatch"] == 3 and rgbd["dropped"]["depth_mismatch"]
    assert rgbd["rate"] == rgbd["frames_published"] / 3
    assert rows["fixed/rgb"]["published_examples"][0]["poses"][0]["name"] == "driller_like"
    assert res["score_threshold"] == 0.5 and res["target_rate"] == 0.01
    met = {t["target"].split()[2]: t["met"] for t in phantom_targets(res)}
    assert met == {"fixed/rgbd": rgbd["frames_published"] == 0, "fixed/rgb": False}
    json.dumps(res)  # goes into bench/results.json as it is


def test_cli_runs_the_section_alone_and_checks_its_option(tmp_path, capsys):
    from vfm_pose_ros.cli import main

    assert main(["bench", "--only", "phantom", "--phantom-frames", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "--phantom-frames must be positive" in capsys.readouterr().err
    import argparse

    from vfm_pose_ros.commands.bench import add_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    opt = options_from_args(parser.parse_args(["--only", "phantom", "--phantom-frames", "7"]))
    assert opt.sections == ("phantom",) and opt.phantom_frames == 7
    assert options_from_args(parser.parse_args(["--quick"])).phantom_frames == 20
