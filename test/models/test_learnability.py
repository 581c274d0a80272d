"""Learnability: a small network trained on 4 frames must then pose those frames through the real inference path.

Training goes through the shared loop (``training.fit``: sampler, loss, schedule, checkpoint file), and the
poses come from ``Estimator.from_checkpoint(...).predict`` on the RGB image alone, with the estimator's own
detection: what a user runs. So a broken loss, a wrong target, an affine or keypoint-order mismatch
between training and inference, or a bad checkpoint round trip shows up here as poses at chance, where a
model that merely needs more data would still fit its own training frames. Each test also checks its own
power: the same checkpoint with the inference path broken on purpose must fail the same bar.

Photometric augmentation is off; the geometric crop jitter stays on, since the crops at inference come
from the network's own detection, never exactly the training crops.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.metrics import PoseEvaluator
from vfm_pose_ros.models import clip, dinov2
from vfm_pose_ros.models.training import fit
from vfm_pose_ros.paths import default_catalogue_dir

# minutes of training each (about 2 on an idle 2-core machine, 5 under load): the default 300 s timeout is short
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

N_FRAMES = 4  # 8 instances of the two default objects
DEVICE = os.environ.get("VFM_TEST_DEVICE", "cpu")  # scripts/gpu_check.sh runs this test with cuda


@pytest.fixture(scope="module")
def scenes():
    """4 frames at 320x240 (half the LM-O camera), both objects clearly visible, no distractors."""
    from vfm_pose_ros.data.scenes import LMO_K, SceneConfig, SceneGenerator

    cat = Catalogue.from_dir(default_catalogue_dir())
    K = LMO_K.copy()
    K[:2] *= 0.5
    gen = SceneGenerator(list(cat), SceneConfig(width=320, height=240, K=K, distance=(0.5, 0.8), distractors=0,
                                                min_visib_fract=0.5), seed=1)
    frames = [gen.frame(i) for i in range(N_FRAMES)]
    return cat, [SimpleNamespace(rgb=f.rgb, K=f.K, gts=f.gts) for f in frames]


def _train(backend: str, cfg: dict, scenes, tmp_path, steps: int, lr: float):
    cat, frames = scenes
    out = tmp_path / f"{backend}.pt"
    # the frames repeated: 16 passes make one epoch, so the per-epoch checkpoint is not written every step
    fit(backend, cfg, frames * 16, None, cat, out, epochs=10_000, lr=lr, batch_size=8, max_steps=steps,
        progress=False, seed=0, device=DEVICE)
    return out


def _score(est, scenes) -> dict:
    """The evaluator's overall report of RGB-only predictions on the training frames."""
    from vfm_pose_ros.core.types import Frame

    cat, frames = scenes
    ev = PoseEvaluator(cat)
    for f in frames:
        ev.add_frame(f.gts, est.predict(Frame(rgb=f.rgb, K=f.K)), K=f.K, image_width=f.rgb.shape[1])
    return ev.report()


def test_dinov2_fits_its_frames_through_the_inference_path(scenes, tmp_path):
    cfg = {**dinov2.SMALL_CONFIG, "arch_overrides": {"embed_dim": 96, "depth": 4, "num_heads": 3, "init_values": None},
           "head_channels": 48, "detail_channels": [16, 32], "full_frame_prob": 0.5,
           "aug": {"color": 0.0, "blur": 0.0, "noise": 0.0, "occluders": 0.0},
           "train_margin_range": [1.1, 1.6], "train_shift": 0.1}
    ckpt = _train("dinov2", cfg, scenes, tmp_path, steps=1000, lr=3e-3)
    est = dinov2.Estimator.from_checkpoint(ckpt, device=DEVICE, use_depth=False)
    rep = _score(est, scenes)["overall"]
    assert rep["n_predicted"] == rep["n_gt"] == 2 * N_FRAMES, rep
    assert rep["add_s_01d_acc"] >= 0.75, rep  # chance is 0
    # power: keypoints fed to PnP in the wrong order (an order mismatch between head and model points)
    est.keypoints = est.keypoints[:, ::-1].copy()
    broken = _score(est, scenes)["overall"]
    assert broken["add_s_01d_acc"] <= 0.25, broken


def test_dinov2_coords_fits_its_frames_through_the_inference_path(scenes, tmp_path, monkeypatch):
    """The same network and budget with representation "coords": model coordinates per cell, PnP-RANSAC on
    all mask cells."""
    cfg = {**dinov2.SMALL_CONFIG, "arch_overrides": {"embed_dim": 96, "depth": 4, "num_heads": 3, "init_values": None},
           "head_channels": 48, "detail_channels": [16, 32], "full_frame_prob": 0.5,
           "aug": {"color": 0.0, "blur": 0.0, "noise": 0.0, "occluders": 0.0},
           "train_margin_range": [1.1, 1.6], "train_shift": 0.1, "representation": "coords"}
    # 600 steps: 7/8 instances within 0.1 d on two runs (400 steps: 6/8, at the bar); the votes test needs 1000
    ckpt = _train("dinov2", cfg, scenes, tmp_path, steps=600, lr=3e-3)
    est = dinov2.Estimator.from_checkpoint(ckpt, device=DEVICE, use_depth=False)
    report = _score(est, scenes)
    rep = report["overall"]
    print("coords:", {name: {k: o.get(k) for k in ("add_s_01d_acc", "rot_err_median_deg")}
                      for name, o in [("overall", rep), *report["objects"].items()]})
    assert rep["n_predicted"] == rep["n_gt"] == 2 * N_FRAMES, rep
    assert rep["add_s_01d_acc"] >= 0.75, rep  # chance is 0
    # power: the coordinate axes fed to PnP in the wrong order (a channel-order mismatch between head and model)
    correspondences = est._correspondences

    def swapped(*args):
        corr = correspondences(*args)
        if corr is not None:
            corr.points_3d = corr.points_3d[:, ::-1].copy()
        return corr

    monkeypatch.setattr(est, "_correspondences", swapped)
    broken = _score(est, scenes)["overall"]
    assert broken["add_s_01d_acc"] <= 0.25, broken


def _clip_fits_its_frames(scenes, tmp_path, monkeypatch, steps: int, **config) -> None:
    """Train the tiny CLIP network on 2 frames (4 instances), then pose them with the estimator: the bars of
    both CLIP tests (its rotation head, ``config``, is what differs)."""
    arch = {"embed_dim": 96, "vision_cfg": {"image_size": 96, "patch_size": 16, "width": 96, "layers": 3,
                                            "head_width": 32},
            "text_cfg": {"context_length": 16, "vocab_size": 1024, "width": 64, "heads": 2, "layers": 2}}
    cfg = clip.merged_config({"clip_arch": arch, "fusion_dim": 96, "fusion_heads": 4, "head_hidden": 192,
                              "negative_prob": 0.0, "context_prob": 0.0, "part_prompt_prob": 0.0, **config},
                             small=True)
    two = (scenes[0], scenes[1][:2])  # 4 instances: 1,500 steps do not fit the rotations of 8
    ckpt = _train("clip", cfg, two, tmp_path, steps=steps, lr=2e-3)
    est = clip.Estimator.from_checkpoint(ckpt, device=DEVICE, use_depth=False)
    rep = _score(est, two)
    overall, drill = rep["overall"], rep["objects"]["driller_like"]
    assert overall["n_predicted"] == overall["n_gt"] == 4, overall
    # rotation and the object centre are learnt within this budget; the depth (log z) is the slow part and
    # keeps most instances outside 0.1 d (docs/decisions.md), so the translation bar is half the can's diameter
    assert drill["rot_err_median_deg"] < 10.0, drill
    assert overall["trans_err_median_mm"] < 0.5 * 1000 * 0.135, overall
    # power: the allocentric rotation decoded without the viewing-ray correction
    decode = clip.decode_pose

    def wrong_rotation(uv, logz, R_allo, *args):
        R, t = decode(uv, logz, R_allo, *args)
        return np.asarray(R_allo, float).reshape(3, 3).T, t

    monkeypatch.setattr(clip, "decode_pose", wrong_rotation)
    broken = _score(est, two)["objects"]["driller_like"]
    assert broken["rot_err_median_deg"] > 10.0, broken


def test_clip_fits_its_frames_through_the_inference_path(scenes, tmp_path, monkeypatch):
    _clip_fits_its_frames(scenes, tmp_path, monkeypatch, steps=1500)


def test_clip_anchor_rotation_head_fits_its_frames(scenes, tmp_path, monkeypatch):
    """rotation_head: anchors (class over 60 anchor rotations + 6D residual) through the same path and bars, in
    half the 6D head's steps: on the 2-core machine under load, 750 steps (104 s) gave a median rotation error of
    2.6 deg and a median translation error of 36 mm, 500 steps (85 s) 2.8 deg and 41 mm; 1,500 steps took 264 s."""
    _clip_fits_its_frames(scenes, tmp_path, monkeypatch, steps=750, rotation_head="anchors")
