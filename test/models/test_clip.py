"""CLIP backend: weight loading, fail-fast offline, network shapes, pose geometry, dataset and predict.

Everything runs on tiny randomly initialised open_clip configurations of the real
architecture (no weights can be downloaded here).
"""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vfm_pose_ros.core.affine import window_affine
from vfm_pose_ros.core.catalogue import Catalogue, GraspFrame, ObjectModel, Symmetry, box_corners
from vfm_pose_ros.core.transforms import axis_angle_to_matrix, is_rotation, make_T, project
from vfm_pose_ros.core.types import Frame, GroundTruthPose, ObjectPose
from vfm_pose_ros.models import clip
from vfm_pose_ros.models.backbones import WeightsUnavailable
from vfm_pose_ros.models.clip_data import decode_pose, encode_pose, ray_rotation
from vfm_pose_ros.models.clip_net import create_clip

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_ARCH = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 1024, "width": 64, "heads": 2, "layers": 2},
}
TINY = clip.merged_config({"clip_arch": TINY_ARCH, "fusion_dim": 64, "fusion_heads": 4, "head_hidden": 96},
                          small=True)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks run fastest on one thread (and do not fight other processes for the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def toy_catalogue() -> Catalogue:
    cube = box_corners([-0.03, -0.03, -0.03], [0.03, 0.03, 0.03])
    can = box_corners([-0.02, -0.02, -0.05], [0.02, 0.02, 0.05])
    g = lambda n, z, d: GraspFrame(n, make_T(np.eye(3), [0, 0, z]), d)  # noqa: E731
    return Catalogue([
        ObjectModel("driller_like", 1, cube, grasp_frames={"handle": g("handle", -0.02, "the handle"),
                                                           "body": g("body", 0.02, "the body")},
                    description="a cordless drill"),
        ObjectModel("can_like", 2, can, symmetry=Symmetry("continuous", axis=np.array([0, 0, 1.0])),
                    grasp_frames={"body": g("body", 0.0, "the side of the can"), "top": g("top", 0.05, "the lid")},
                    description="a drinks can"),
    ])


def random_batch(net, n: int = 3) -> dict:
    S, g = net.image_size, net.grid
    rot = torch.tensor(axis_angle_to_matrix(np.random.default_rng(0).normal(size=(n, 3))), dtype=torch.float32)
    tok = clip.get_tokenizer(net.config)(["the driller", "grasp the can by the lid", "the can"][:n])
    return {
        "image": torch.randint(0, 256, (n, 3, S, S), dtype=torch.uint8), "tokens": tok,
        "present": torch.tensor([1.0, 1.0, 0.0][:n]), "heat": torch.rand(n, *g),
        "box": torch.tensor([[0.2, 0.2, 0.6, 0.7]] * n), "uv": torch.rand(n, 2), "logz": torch.rand(n),
        "rot": rot, "obj": torch.tensor([0, 1, 1][:n]), "grasp": torch.tensor([0, 2, 0][:n]),
    }


# -- weights ------------------------------------------------------------------------------------
def test_weights_from_local_file_load_through_real_path(tmp_path):
    """A random small open_clip model saved as .safetensors loads through create_clip/build_net, frozen."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model, pretrained = create_clip({**TINY, "weights": "random"})
    assert not pretrained
    path = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))

    cfg = {**TINY, "weights": str(path), "freeze_vision": True, "freeze_text": True}
    net = clip.build_net(cfg, toy_catalogue())
    assert net.pretrained
    for k, v in model.state_dict().items():
        assert torch.equal(net.clip.state_dict()[k], v), k
    assert not any(p.requires_grad for p in net.clip.parameters())
    assert any(p.requires_grad for p in net.pose_head.parameters())
    # frozen pretrained towers are left out of the state (a checkpoint reloads them from 'weights')
    sd = net.state_dict()
    assert not any(k.startswith("clip.") for k in sd) and "pose_head.3.weight" in sd
    net2 = clip.build_net(cfg, toy_catalogue())
    net2.load_state_dict(sd)


def test_checkpoint_round_trip_reloads_frozen_towers(tmp_path):
    from safetensors.torch import save_file

    from vfm_pose_ros.models.checkpoint import save_checkpoint

    torch.manual_seed(1)
    model, _ = create_clip({**TINY, "weights": "random"})
    wpath = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(wpath))
    cfg = {**TINY, "weights": str(wpath), "freeze_vision": True, "freeze_text": True}
    cat = toy_catalogue()
    net = clip.build_net(cfg, cat)
    ck = save_checkpoint(tmp_path / "c.pt", net, backend="clip", config=cfg, catalogue=cat, data_hash="x", epoch=0)
    est = clip.Estimator.from_checkpoint(ck, device="cpu")
    torch.testing.assert_close(est.net.clip.visual.conv1.weight, model.visual.conv1.weight)
    torch.testing.assert_close(est.net.pose_head[3].bias, net.pose_head[3].bias, atol=1e-3, rtol=1e-3)  # fp16 store
    wpath.unlink()  # without the weights file the checkpoint cannot rebuild its towers: a clear error
    with pytest.raises(WeightsUnavailable, match="weights"):
        clip.Estimator.from_checkpoint(ck, device="cpu")


def test_fail_fast_offline_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as err:
        clip.build_net(clip.DEFAULT_CONFIG, toy_catalogue())
    assert time.perf_counter() - t0 < 5.0
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "weights" in msg and ".safetensors" in msg


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(WeightsUnavailable, match="not found"):
        clip.build_net({**TINY, "weights": str(tmp_path / "nope.safetensors")}, toy_catalogue())


# -- network ------------------------------------------------------------------------------------
def test_forward_backward_shapes_and_text_matters():
    torch.manual_seed(0)
    net = clip.build_net(TINY, toy_catalogue())
    batch = random_batch(net)
    out = net(batch)
    n = 3
    assert out["heat"].shape == (n, 4, 4) and out["box"].shape == (n, 4) and out["present"].shape == (n,)
    assert out["R"].shape == (n, 3, 3) and out["uv"].shape == (n, 2) and out["logz"].shape == (n,)
    assert out["obj_logits"].shape == (n, 2) and out["grasp_logits"].shape == (n, 3)
    assert np.allclose(out["R"][0].detach().numpy() @ out["R"][0].detach().numpy().T, np.eye(3), atol=1e-5)
    loss, logs = net.loss(batch)
    loss.backward()
    assert np.isfinite(float(loss.detach())) and {"rot", "uv", "logz", "box", "grasp", "obj"} <= set(logs)
    # end to end: both towers get gradients in the small config
    assert net.clip.visual.conv1.weight.grad is not None and net.clip.visual.conv1.weight.grad.abs().sum() > 0
    assert net.clip.token_embedding.weight.grad.abs().sum() > 0
    # the prompt changes the fused output for the same image
    with torch.no_grad():
        img = net.encode_image(batch["image"][:1].repeat(2, 1, 1, 1))
        emb = net.encode_text(batch["tokens"][:2])
        fused = net.head(img, emb)
    assert not torch.allclose(fused["box"][0], fused["box"][1])
    assert not torch.allclose(fused["heat"][0], fused["heat"][1])


def test_symmetry_aware_rotation_loss():
    net = clip.build_net(TINY, toy_catalogue())
    rng = np.random.default_rng(3)
    R_gt = torch.tensor(axis_angle_to_matrix(rng.normal(size=(4, 3))), dtype=torch.float32)
    spin = torch.tensor(axis_angle_to_matrix([0, 0, 1.3]), dtype=torch.float32)  # about the can's axis
    R_spun = R_gt @ spin
    can, driller = torch.tensor([1] * 4), torch.tensor([0] * 4)
    assert float(net.rotation_loss(R_spun, R_gt, can).max()) < 1e-5  # continuous symmetry: no penalty
    assert float(net.rotation_loss(R_spun, R_gt, driller).min()) > 0.1  # asymmetric object: penalised
    tilt = torch.tensor(axis_angle_to_matrix([0.5, 0, 0]), dtype=torch.float32)
    assert float(net.rotation_loss(R_gt @ tilt, R_gt, can).min()) > 0.05  # tilting the axis is penalised


def test_discrete_symmetry_loss_takes_the_minimum():
    cat = toy_catalogue()
    flip = make_T(axis_angle_to_matrix([0, 0, np.pi]), [0, 0, 0])
    cat.objects["driller_like"].symmetry = Symmetry("discrete", transforms=[flip])
    net = clip.build_net(TINY, cat)
    R_gt = torch.tensor(axis_angle_to_matrix([[0.3, -0.2, 0.9]]), dtype=torch.float32)
    R_flip = R_gt @ torch.tensor(flip[:3, :3], dtype=torch.float32)
    assert float(net.rotation_loss(R_flip, R_gt, torch.tensor([0]))) < 1e-6


# -- geometry -----------------------------------------------------------------------------------
def test_pose_encoding_round_trip_and_allocentric_rays():
    rng = np.random.default_rng(0)
    K = np.array([[572.4, 0, 325.3], [0, 573.6, 242.0], [0, 0, 1.0]])
    for _ in range(20):
        R = axis_angle_to_matrix(rng.normal(size=3))
        t = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-0.15, 0.15), rng.uniform(0.4, 1.2)])
        uv = project(K, t[None])[0]
        c, side = uv + rng.uniform(-20, 20, 2), rng.uniform(80, 300)
        A = window_affine(c, side, 160)
        enc = encode_pose(R, t, K, A, side, 160, diameter=0.2)
        assert is_rotation(enc["rot"])
        R2, t2 = decode_pose(enc["uv"], enc["logz"], enc["rot"], K, A, side, 160, diameter=0.2)
        np.testing.assert_allclose(R2, R, atol=1e-9)
        np.testing.assert_allclose(t2, t, atol=1e-9)
        ray = ray_rotation(K, uv[None])[0] @ np.array([0, 0, 1.0])
        np.testing.assert_allclose(ray, t / np.linalg.norm(t), atol=1e-9)
    # the same object seen through windows of another size and focal length keeps its depth code
    A1, A2 = window_affine([320, 240], 200, 160), window_affine([320, 240], 400, 160)
    K2 = K.copy()
    K2[:2, :2] *= 2
    e1 = encode_pose(np.eye(3), [0, 0, 0.5], K, A1, 200, 160, 0.2)
    e2 = encode_pose(np.eye(3), [0, 0, 0.5], K2, A2, 400, 160, 0.2)
    assert abs(e1["logz"] - e2["logz"]) < 1e-9


# -- dataset and estimator ------------------------------------------------------------------------
def toy_frames(cat: Catalogue, n: int, seed: int, size: int = 96):
    """Frames with both toy objects (filled projected hulls), one left and one right, with masks."""
    import cv2

    rng = np.random.default_rng(seed)
    K = np.array([[90.0, 0, size / 2], [0, 90.0, size / 2], [0, 0, 1]])
    colours = {"driller_like": (230, 40, 40), "can_like": (40, 60, 230)}
    frames = []
    for _ in range(n):
        rgb = np.full((size, size, 3), 128, np.uint8)
        sides = rng.permutation([-1, 1])
        gts = []
        for (name, obj), sx in zip(cat.objects.items(), sides):
            z = rng.uniform(0.45, 0.6)
            t = np.array([sx * rng.uniform(0.06, 0.1) * z / 0.5, rng.uniform(-0.05, 0.05), z])
            R = axis_angle_to_matrix(rng.normal(size=3) * 0.5)
            uv = project(K, obj.vertices @ R.T + t)
            mask = np.zeros((size, size), np.uint8)
            cv2.fillConvexPoly(mask, cv2.convexHull(uv.astype(np.int32)), 1)
            rgb[mask > 0] = colours[name]
            gts.append(GroundTruthPose(obj.class_id, name, R, t, 1.0, mask.astype(bool)))
        frames.append(SimpleNamespace(rgb=rgb, K=K, gts=gts, depth=None))
    return frames


def test_dataset_samples_one_prompted_object():
    cat = toy_catalogue()
    frames = toy_frames(cat, 4, seed=0)
    ds = clip.make_dataset(frames, cat, TINY, train=True)
    assert len(ds) == 8  # one sample per (frame, visible object)
    s = ds[0]
    assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.uint8
    assert s["tokens"].shape == (16,) and s["heat"].shape == (4, 4)
    assert is_rotation(s["rot"].double().numpy(), tol=1e-5)
    val = clip.make_dataset(frames, cat, TINY, train=False)
    a, b = val[1], val[1]
    assert torch.equal(a["image"], b["image"]) and int(a["obj"]) == cat.names.index(frames[0].gts[1].name)


def test_context_windows_hold_the_target_or_centre_on_a_distractor():
    from vfm_pose_ros.models.clip_data import box_window, context_window

    rng = np.random.default_rng(0)
    box, other = np.array([100.0, 120.0, 160.0, 200.0]), np.array([400.0, 300.0, 440.0, 330.0])
    crop_side, full_side = box_window(box, 1.4)[1], 640.0
    sides, on_other = [], 0
    for _ in range(400):
        c, side = context_window(box, 1.4, full_side, rng, [other])
        if np.linalg.norm(c - [420.0, 315.0]) < 0.25 * side:
            on_other += 1  # a distractor crop: around the other object, however much of the target it shows
            continue
        sides.append(side)
        assert crop_side - 1e-9 <= side <= full_side + 1e-9
        lo, hi = c - side / 2, c + side / 2
        assert np.all(box[:2] >= lo - 1e-9) and np.all(box[2:] <= hi + 1e-9), (c, side)
    assert 120 < on_other < 280  # about half
    assert min(sides) < 1.5 * crop_side and max(sides) > 0.7 * full_side  # the whole range of scales
    # alone in the frame: never a distractor crop
    assert all(context_window(box, 1.4, full_side, rng)[1] >= crop_side - 1e-9 for _ in range(50))


def test_predict_returns_object_pose_with_grasp_frame():
    torch.manual_seed(0)
    cat = toy_catalogue()
    net = clip.build_net(TINY, cat)
    with torch.no_grad():  # make the learned grasp head choose class 1 (the first grasp frame)
        net.grasp_head[-1].weight.zero_()
        net.grasp_head[-1].bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    est = clip.Estimator(net, cat, device="cpu", config={"grasp_select": "head", "prompt_resolver": "network"})
    frame = toy_frames(cat, 1, seed=5)[0]
    poses = est.predict(Frame(rgb=frame.rgb, K=frame.K, prompt="grasp the driller by the handle"))
    assert len(poses) == 1
    p = poses[0]
    assert isinstance(p, ObjectPose) and p.name in cat.names and is_rotation(p.R) and p.t.shape == (3,)
    assert p.grasp_frame == list(cat[p.name].grasp_frames)[0]
    assert p.box_2d is not None and 0.0 <= p.score <= 1.0
    assert {"preprocess", "text", "backbone", "head", "total"} <= set(p.timings_ms)
    # an external box (a detector) skips the localisation pass and is passed through
    box = np.array([10.0, 20.0, 50.0, 70.0])
    poses = est.predict(Frame(rgb=frame.rgb, K=frame.K, prompt=None, boxes_2d={"can_like": box}))
    assert [q.name for q in poses] == ["can_like"]
    np.testing.assert_allclose(poses[0].box_2d, box)
    # without a prompt or boxes: every catalogue object whose presence score passes min_score
    every = clip.Estimator(net, cat, device="cpu",
                           config={"grasp_select": "head", "prompt_resolver": "network", "min_score": 0.0})
    assert {q.name for q in every.predict(Frame(rgb=frame.rgb, K=frame.K))} == set(cat.names)
    batch = est.predict_batch([Frame(rgb=frame.rgb, K=frame.K, prompt="the can")] * 2)
    assert len(batch) == 2 and all(len(b) == 1 for b in batch)


def test_soft_argmax_window_reads_the_peak_not_the_middle():
    """Two blobs (the prompted object strong, a look-alike weaker): the global expectation falls between them,
    the peak window on the stronger one; window 0 is the plain soft-argmax used in training."""
    from vfm_pose_ros.models.clip_net import soft_argmax

    g = (torch.arange(10) + 0.5) / 10
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    centres = torch.stack([gx, gy], -1).view(1, -1, 2)
    logits = torch.full((1, 100), -10.0)
    logits[0, 2 * 10 + 2] = 3.0  # patch (x 0.25, y 0.25)
    logits[0, 7 * 10 + 7] = 2.5  # patch (x 0.75, y 0.75)
    plain = soft_argmax(logits, centres)[0]
    peak = soft_argmax(logits, centres, window=0.25)[0]
    assert 0.35 < plain[0] < 0.5 and 0.35 < plain[1] < 0.5
    assert torch.allclose(peak, torch.tensor([0.25, 0.25]), atol=1e-3)
