"""The learnability tests' power against broken *training targets*, run by hand (8 minutes, not in `make test`):

    .venv/bin/python -m pytest test/models/check_learnability_power.py

Each test trains with a target broken on purpose and expects the learnability test's bar to fail. (The
learnability tests check their power against a broken *inference* path themselves, on every run.) The file name
does not match pytest's ``test_*.py``, so the suite does not collect it; given on the command line it runs.
Measured 2026-12-07: DINOv2 with targets ignoring the crop affine: 0 % ADD(-S)-0.1d, rotation median 84 deg;
CLIP with transposed rotation targets: driller rotation median 122 deg.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("learnability", Path(__file__).with_name("test_learnability.py"))
learnability = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(learnability)
scenes = learnability.scenes  # the same 4 frames

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_dinov2_fails_when_vote_targets_ignore_the_crop_affine(scenes, tmp_path, monkeypatch):
    import vfm_pose_ros.models.dinov2.data as data

    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = data.vote_targets
    monkeypatch.setattr(data, "vote_targets", lambda gts, K, A, *rest: targets(gts, K, identity, *rest))
    with pytest.raises(AssertionError):
        learnability.test_dinov2_fits_its_frames_through_the_inference_path(scenes, tmp_path)


def test_clip_fails_when_rotation_targets_are_transposed(scenes, tmp_path, monkeypatch):
    import vfm_pose_ros.models.clip_data as clip_data

    encode = clip_data.encode_pose

    def transposed(*args, **kwargs):
        out = encode(*args, **kwargs)
        out["rot"] = np.ascontiguousarray(np.asarray(out["rot"]).T)
        return out

    monkeypatch.setattr(clip_data, "encode_pose", transposed)
    with pytest.raises(AssertionError):
        learnability.test_clip_fits_its_frames_through_the_inference_path(scenes, tmp_path, monkeypatch)
