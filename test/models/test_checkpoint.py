"""Checkpoints: round trip, self-contained catalogue, size, and clear errors."""
import json

import numpy as np
import pytest
import torch

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.models import dinov2, load_estimator
from vfm_pose_ros.models.checkpoint import (
    CheckpointError,
    catalogue_from_dict,
    catalogue_to_dict,
    dataset_hash,
    load_checkpoint,
    save_checkpoint,
)
from vfm_pose_ros.paths import default_catalogue_dir

TINY = {
    **dinov2.SMALL_CONFIG,
    "arch_overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "init_values": None},
    "img_size": 56, "head_channels": 16, "detail_channels": [8, 16],
}


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


@pytest.fixture()
def saved(tmp_path, catalogue):
    torch.manual_seed(0)
    net = dinov2.build_net(TINY, catalogue)
    path = save_checkpoint(tmp_path / "m.pt", net, backend="dinov2", config=net.config, catalogue=catalogue,
                           data_hash="abc123", epoch=7, metrics={"add_s_01d_acc": 0.5})
    return net, path


def test_round_trip(saved, catalogue):
    net, path = saved
    ck = load_checkpoint(path, expected_backend="dinov2")
    assert ck["backend"] == "dinov2" and ck["epoch"] == 7 and ck["data_hash"] == "abc123"
    assert ck["metrics"] == {"add_s_01d_acc": 0.5} and ck["config"]["img_size"] == 56
    for k, v in net.state_dict().items():
        assert ck["state_dict"][k].dtype == v.dtype
        assert torch.allclose(ck["state_dict"][k], v, atol=2e-3, rtol=1e-3), k  # fp16 storage
    assert torch.equal(ck["state_dict"]["keypoints_3d"], net.keypoints_3d)  # fp64 buffers stay exact
    est = load_estimator(path, device="cpu", backend="dinov2")
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        a, b = net.eval()(x), est.net(x)
    assert torch.allclose(a["seg"], b["seg"], atol=2e-2)


def test_catalogue_is_self_contained(saved, catalogue):
    _, path = saved
    cat = catalogue_from_dict(load_checkpoint(path)["catalogue"])
    assert cat.names == catalogue.names
    for name in cat.names:
        a, b = cat[name], catalogue[name]
        assert a.class_id == b.class_id and a.diameter == pytest.approx(b.diameter)
        assert a.symmetry.kind == b.symmetry.kind
        assert set(a.grasp_frames) == set(b.grasp_frames)
        assert np.allclose(a.grasp_frames[next(iter(a.grasp_frames))].T, b.grasp_frames[next(iter(b.grasp_frames))].T)
        pts, normals = a.surface_normals
        assert pts.shape[1] == 3 and np.allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-3)
        # samples lie on the model: within its bounding box
        assert np.all(pts >= b.bbox_min - 1e-6) and np.all(pts <= b.bbox_max + 1e-6)
    # the keypoints the net was trained on, not re-derived from the samples
    kp = dinov2.object_keypoints(catalogue["driller_like"], "fps:8")
    assert np.allclose(cat["driller_like"].keypoints, kp)


def test_explicit_keypoints_override(catalogue):
    kp = {"driller_like": np.zeros((4, 3)), "can_like": np.ones((4, 3))}
    d = catalogue_to_dict(catalogue, kp, n_points=100)
    assert np.allclose(catalogue_from_dict(d)["can_like"].keypoints, 1.0)


def test_small_checkpoint_size(tmp_path, catalogue):
    net = dinov2.build_net(dinov2.SMALL_CONFIG, catalogue)
    path = save_checkpoint(tmp_path / "s.pt", net, backend="dinov2", config=net.config, catalogue=catalogue,
                           data_hash="x", epoch=0)
    assert path.stat().st_size < 20e6


def test_wrong_backend(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="'dinov2' checkpoint, not 'clip'"):
        load_checkpoint(path, expected_backend="clip")
    with pytest.raises(ValueError, match="--backend dinov2"):
        load_estimator(path, backend="clip")


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unknown_version_and_foreign_file(tmp_path, saved):
    _, path = saved
    ck = torch.load(path, weights_only=True)
    ck["version"] = 99
    torch.save(ck, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a vfm_pose_ros checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "garbage.pt")


def test_dataset_hash_tracks_annotations(tmp_path):
    split = tmp_path / "train" / "000000"
    split.mkdir(parents=True)
    (split / "scene_gt.json").write_text(json.dumps({"0": []}))
    h1 = dataset_hash(tmp_path, "train")
    assert h1 == dataset_hash(tmp_path, "train")
    (split / "scene_gt.json").write_text(json.dumps({"0": [{"obj_id": 1}]}))
    assert dataset_hash(tmp_path, "train") != h1
