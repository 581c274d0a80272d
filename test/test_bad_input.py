"""Bad input at the non-ROS boundaries: each refusal is a clear error that names the problem and the fix.

One test per boundary of issue 10 not already covered elsewhere. Covered elsewhere (not repeated here):
frame and pose validation (test/core/test_validation.py), Image decoding (test/ros/test_convert.py),
PnP rejections (test/core/test_pnp.py), checkpoint missing / wrong backend / unknown version / foreign file
(test/models/test_checkpoint.py), weights missing offline (test/models/test_dinov2.py and test_clip.py:
test_missing_weights_file, test_hub_offline_fails_fast, test_fail_fast_offline_names_the_fix), a truncated
bag read up to the cut with a warning (test/data/test_rosbag.py: test_truncated_bag_is_read_up_to_the_cut),
BOP split / scene_camera.json / image missing (test/data/test_bop.py: test_clear_errors). The pose node's
own reactions (counters, start-up failures) are in test/ros/test_fuzz_pose_node.py and test/ros/test_faults.py.
"""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue, load_object_yaml
from vfm_pose_ros.core.types import GroundTruthPose
from vfm_pose_ros.core.validation import REASONS, InvalidInput
from vfm_pose_ros.paths import default_catalogue_dir


def _raises(exc_type, fn, *args, problem: str, fix: str, **kwargs) -> str:
    """Call ``fn`` and check the error's type, that it names the problem and says how to fix it."""
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    text = str(info.value)
    assert re.search(problem, text), f"problem {problem!r} not named in: {text}"
    assert re.search(fix, text), f"no fix ({fix!r}) in: {text}"
    return text


# --------------------------------------------------------------------------- catalogue and meshes


@pytest.fixture
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


def test_unknown_object_in_the_catalogue_lists_the_known_ones(catalogue):
    _raises(KeyError, catalogue.__getitem__, "banana", problem="unknown object 'banana'",
            fix="the catalogue has: can_like, driller_like")
    _raises(KeyError, catalogue.subset, ["driller_like", "banana"], problem="banana", fix="can_like")


def test_missing_mesh(tmp_path):
    (tmp_path / "o.yaml").write_text("name: o\nclass_id: 1\nmesh: missing.ply\n")
    _raises(FileNotFoundError, load_object_yaml, tmp_path / "o.yaml", problem=r"mesh file not found: .*missing\.ply",
            fix="check the catalogue's 'mesh' path")
    _raises(FileNotFoundError, Catalogue.from_dir, tmp_path, problem="missing.ply", fix="'mesh' path")


@pytest.mark.parametrize("content", [b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n",
                                     os.urandom(300)], ids=["cut_ply", "random_bytes"])
def test_unreadable_mesh(tmp_path, content):
    (tmp_path / "bad.ply").write_bytes(content)
    (tmp_path / "o.yaml").write_text("name: o\nclass_id: 1\nmesh: bad.ply\n")
    _raises(ValueError, load_object_yaml, tmp_path / "o.yaml", problem=r"(cannot read mesh|has no vertices) .*bad\.ply",
            fix="re-export")


def test_missing_catalogue_directory(tmp_path):
    _raises(FileNotFoundError, Catalogue.from_dir, tmp_path / "nowhere", problem="catalogue directory not found",
            fix="folder of object YAML")
    _raises(FileNotFoundError, Catalogue.from_dir, tmp_path, problem=r"no \*\.yaml object entries", fix="schema")


# --------------------------------------------------------------------------- prompts


def test_prompt_naming_no_known_object(catalogue):
    """The whole-word check of the `network` prompt resolver (the meaning-based one: test_prompt_resolution)."""
    from vfm_pose_ros.core.prompts import keyword_objects

    assert keyword_objects("grasp the driller by the handle", catalogue) == ["driller_like"]
    assert sorted(keyword_objects("the can and the driller_like", catalogue)) == ["can_like", "driller_like"]
    assert keyword_objects("hold the power drill", catalogue) == ["driller_like"]  # an alias
    for prompt in ("the banana", "", "the scan"):  # whole words only: 'scan' is not 'can'
        assert keyword_objects(prompt, catalogue) == [], prompt
    err = InvalidInput("unknown_prompt", "prompt 'the banana' names no known object")
    assert "ros2 param set" in REASONS[err.reason_code] and "unknown_prompt" in str(err)


# --------------------------------------------------------------------------- bags


@pytest.mark.parametrize("name", ["bag.mcap", "bag.db3"])
@pytest.mark.parametrize("with_metadata", [False, True])
def test_corrupt_bag_is_a_clear_error(tmp_path, name, with_metadata):
    pytest.importorskip("rosbags", reason="rosbags is not installed")
    from vfm_pose_ros.data import rosbag as rb

    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / name).write_bytes(os.urandom(4096))  # garbage: a corrupt or foreign file, not a cut one
    if with_metadata:
        (bag / "metadata.yaml").write_text("rosbag2_bagfile_information:\n  version: 5\n  storage_identifier: "
                                           f"{'mcap' if name.endswith('mcap') else 'sqlite3'}\n  relative_file_paths: "
                                           f"[{name}]\n  topics_with_message_count: []\n")
    _raises(ValueError, lambda: list(rb.read_bag(bag)), problem=r"(not an MCAP file|not an SQLite file)",
            fix="re-record the bag")


def test_missing_or_empty_bag(tmp_path):
    pytest.importorskip("rosbags", reason="rosbags is not installed")
    from vfm_pose_ros.data import rosbag as rb

    _raises(FileNotFoundError, lambda: list(rb.read_bag(tmp_path / "nope")), problem="bag not found", fix="nope")
    (tmp_path / "empty").mkdir()
    _raises(FileNotFoundError, lambda: list(rb.read_bag(tmp_path / "empty")), problem="no metadata.yaml",
            fix=r"\.mcap/\.db3")


# --------------------------------------------------------------------------- BOP folders


@pytest.fixture
def bop(tmp_path):
    from vfm_pose_ros.data.bop import BopWriter

    K = np.array([[50.0, 0, 16], [0, 50.0, 12], [0, 0, 1]])
    rng = np.random.default_rng(0)
    with BopWriter(tmp_path / "ds", "test", K_default=K) as w:
        for i in range(2):
            w.add_frame(0, i, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
                        np.full((24, 32), 0.8, np.float32), K,
                        [GroundTruthPose(1, "driller_like", np.eye(3), np.array([0, 0, 0.8]))])
    return tmp_path / "ds"


def test_bop_corrupt_json(bop):
    from vfm_pose_ros.data.bop import BopDataset

    (bop / "test" / "000000" / "scene_camera.json").write_text('{"0": {"cam_K": [1, 2')
    _raises(ValueError, lambda: BopDataset(bop, "test").keys(), problem="scene_camera.json is not valid JSON",
            fix="restore it from the archive")


@pytest.mark.parametrize("which", ["rgb", "depth"])
def test_bop_corrupt_image(bop, which):
    from vfm_pose_ros.data.bop import BopDataset

    path = bop / "test" / "000000" / which / "000001.png"
    path.write_bytes(path.read_bytes()[:40])  # cut short
    ds = BopDataset(bop, "test")
    assert ds.frame(0, 0).rgb.shape == (24, 32, 3)  # the other image still reads
    _raises(ValueError, ds.frame, 0, 1, problem=f"cannot read {'depth ' if which == 'depth' else ''}image .*000001",
            fix="restore it from the dataset archive")


def test_bop_without_models(bop):
    from vfm_pose_ros.data.bop import BopDataset

    _raises(FileNotFoundError, BopDataset(bop, "test").load_catalogue, problem="no models/models_info.json",
            fix="--objects-dir")


def test_bop_empty_split(tmp_path):
    from vfm_pose_ros.data.bop import BopDataset

    (tmp_path / "ds" / "test").mkdir(parents=True)
    _raises(FileNotFoundError, BopDataset, tmp_path / "ds", "test", problem="no scene folders", fix="000000")


# --------------------------------------------------------------------------- the reason codes themselves


def test_every_reason_code_says_how_to_fix_it():
    fixes = ("publish", "check", "use", "calibrate", "set", "fix", "reset")
    for code, text in REASONS.items():
        assert any(word in text for word in fixes), f"reason {code!r} names no fix: {text}"
