"""The half-precision path CUDA takes, run on the CPU: float16 (and bfloat16) autocast through inference
(predict, predict_batch, tracking) and training steps of both backends, with every stage boundary checked.

CPU autocast runs float16 like CUDA's does, so a half tensor reaching the geometric stages (voting, PnP,
the depth stage, tracking ICP), or a network that silently stayed in float32, shows up here without a GPU.
The :class:`StageGuard` wraps each boundary function and asserts what crosses it: torch float32 on the CPU
into the voting, float64/float32 numpy (never float16, never a tensor) into PnP, pose decoding and ICP.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from vfm_pose_ros.core import icp as icp_mod
from vfm_pose_ros.core import tracking as tracking_mod
from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.types import Frame, ObjectPose
from vfm_pose_ros.models import clip, dinov2, training
from vfm_pose_ros.models.dinov2 import estimator as dinov2_estimator
from vfm_pose_ros.models.training import fit
from vfm_pose_ros.paths import default_catalogue_dir

HALF = ["fp16", "bf16"]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

TINY_DINOV2 = {
    **dinov2.SMALL_CONFIG,
    "arch_overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "init_values": None},
    "img_size": 56, "head_channels": 16, "detail_channels": [8, 16], "vote_hypotheses": 32, "icp_starts": 1,
    "icp_global_rotations": 20, "icp_global_starts": 1, "min_mask_pixels": 1,
}


def tiny_clip_config() -> dict:
    cfg = copy.deepcopy(clip.SMALL_CONFIG)
    cfg["clip_arch"]["embed_dim"] = 64
    cfg["clip_arch"]["vision_cfg"].update(image_size=64, patch_size=16, width=64, layers=2, head_width=32)
    cfg["clip_arch"]["text_cfg"].update(width=64, heads=2, layers=1)
    cfg.update(fusion_dim=64, fusion_heads=2, head_hidden=64, icp_starts=1, icp_global_rotations=20,
               icp_global_starts=1)
    return cfg


def _numpy_float(name: str, a, allow_none: bool = False) -> None:
    if a is None and allow_none:
        return
    assert isinstance(a, np.ndarray), f"{name}: {type(a).__name__} crossed into the geometric stage, not numpy"
    assert a.dtype in (np.float32, np.float64), f"{name}: {a.dtype} crossed into the geometric stage"


def _cpu_float32(name: str, t) -> None:
    assert torch.is_tensor(t), f"{name}: {type(t).__name__}, expected a tensor"
    assert t.device.type == "cpu" and t.dtype == torch.float32, f"{name}: {t.dtype} on {t.device}"


class StageGuard:
    """Wraps the stage boundaries (network -> voting -> PnP / pose decoding -> ICP, tracking ICP), asserts
    the dtype and device of what crosses each, and counts the crossings (a test that never reached a stage
    must not pass)."""

    def __init__(self, monkeypatch):
        self.calls: dict[str, int] = {}
        self.net_dtypes: set[torch.dtype] = set()
        self._wrap(monkeypatch, dinov2_estimator, "ransac_vote", self._vote)
        self._wrap(monkeypatch, dinov2_estimator, "solve_pnp", self._pnp)
        self._wrap(monkeypatch, clip, "decode_pose", self._decode)
        self._wrap(monkeypatch, icp_mod, "refine_with_depth", self._icp)
        self._wrap(monkeypatch, tracking_mod, "warm_start_icp", self._track)

    def _wrap(self, monkeypatch, module, name: str, check) -> None:
        real = getattr(module, name)

        def wrapped(*args, **kwargs):
            check(*args, **kwargs)
            self.calls[name] = self.calls.get(name, 0) + 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    @staticmethod
    def _vote(coords, vecs, *args, **kwargs):
        _cpu_float32("voting coords", coords)
        _cpu_float32("voting vectors", vecs)

    @staticmethod
    def _pnp(pts_3d, pts_2d, K, conf, **kwargs):
        for name, a in (("PnP 3D keypoints", pts_3d), ("PnP 2D keypoints", pts_2d), ("PnP K", K),
                        ("PnP confidences", conf)):
            _numpy_float(name, np.asarray(a) if name == "PnP K" else a)

    @staticmethod
    def _decode(uv, logz, R_allo, K, *args):
        _numpy_float("decoded centre", uv)
        _numpy_float("decoded rotation", R_allo)
        assert isinstance(logz, float), f"log depth: {type(logz).__name__}"

    @staticmethod
    def _icp(R, t, observed, model, *args, **kwargs):
        _numpy_float("ICP start R", R)
        _numpy_float("ICP start t", t)
        _numpy_float("ICP depth cloud", observed)
        _numpy_float("ICP model points", model.points)
        _numpy_float("ICP model normals", model.normals)

    @staticmethod
    def _track(R, t, pts, normals, diameter, depth, K, **kwargs):
        for name, a in (("tracking R", R), ("tracking t", t), ("tracking model points", pts),
                        ("tracking depth", depth)):
            _numpy_float(name, a)

    def watch_network(self, tower: torch.nn.Module) -> None:
        """Record the dtypes the tower's linear layers compute in (autocast must really be on; the residual
        stream and norms stay float32 under autocast, the matrix products do not)."""
        watch_linears(tower, self.net_dtypes)


def watch_linears(tower: torch.nn.Module, seen: set) -> None:
    for m in tower.modules():
        if isinstance(m, torch.nn.Linear):
            m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))


def assert_poses_clean(poses: list[ObjectPose]) -> None:
    """What leaves the estimator: float64 numpy poses, finite; bool masks."""
    for p in poses:
        for name, a in (("R", p.R), ("t", p.t)):
            assert isinstance(a, np.ndarray) and a.dtype == np.float64, f"{p.name}.{name}: {type(a)} {a.dtype}"
            assert np.isfinite(a).all(), f"{p.name}.{name} not finite"
        assert isinstance(p.score, float) and np.isfinite(p.score)
        assert p.mask is None or p.mask.dtype == bool


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


def gt_boxes(scene) -> dict[str, np.ndarray]:
    """Each ground-truth object's box (x0, y0, x1, y1) from its mask: the frame's 2D boxes for the estimators."""
    out = {}
    for g in scene.gts:
        ys, xs = np.nonzero(g.mask)
        out[g.name] = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)
    return out


@pytest.mark.parametrize("precision", HALF)
def test_dinov2_inference_and_tracking_in_half_precision(monkeypatch, catalogue, scene, precision):
    torch.manual_seed(0)
    guard = StageGuard(monkeypatch)
    est = dinov2.Estimator(dinov2.build_net(TINY_DINOV2, catalogue), catalogue, device="cpu", precision=precision)
    assert est.amp_dtype == DTYPES[precision]
    guard.watch_network(est.net.backbone)
    frames = [Frame(rgb=scene.rgb, K=scene.K, depth=scene.depth, boxes_2d=gt_boxes(scene)),
              Frame(rgb=scene.rgb, K=scene.K, depth=None, boxes_2d=gt_boxes(scene)),
              Frame(rgb=scene.rgb, K=scene.K, depth=scene.depth)]  # its own detection
    batch = est.predict_batch(frames)
    single = est.predict(frames[0])
    assert len(batch) == 3
    for poses in [*batch, single]:
        assert_poses_clean(poses)
    assert guard.net_dtypes == {DTYPES[precision]}, f"the backbone computed in {guard.net_dtypes}"
    assert guard.calls.get("ransac_vote", 0) >= 4 and guard.calls.get("solve_pnp", 0) >= 4
    assert guard.calls.get("refine_with_depth", 0) >= 2
    previous = [ObjectPose(name=g.name, R=np.asarray(g.R, float), t=np.asarray(g.t, float)) for g in scene.gts]
    tracked = est.track(Frame(rgb=scene.rgb, K=scene.K, depth=scene.depth), previous, min_fitness=0.0)
    assert tracked is not None and guard.calls.get("warm_start_icp", 0) == len(previous)
    assert_poses_clean(tracked)


@pytest.mark.parametrize("precision", HALF)
def test_clip_inference_in_half_precision(monkeypatch, catalogue, scene, precision):
    torch.manual_seed(0)
    guard = StageGuard(monkeypatch)
    net = clip.build_net(tiny_clip_config(), catalogue)
    est = clip.Estimator.from_net(net, catalogue, device="cpu", precision=precision)
    assert est.amp_dtype == DTYPES[precision]
    guard.watch_network(est.net.clip.visual)
    boxes = gt_boxes(scene)
    frames = [Frame(rgb=scene.rgb, K=scene.K, depth=scene.depth, boxes_2d=boxes),
              Frame(rgb=scene.rgb, K=scene.K, depth=None, prompt="the can"),
              Frame(rgb=scene.rgb, K=scene.K, depth=scene.depth, boxes_2d={"driller_like": boxes["driller_like"]})]
    batch = est.predict_batch(frames)
    single = est.predict(frames[0])
    for poses in [*batch, single]:
        assert_poses_clean(poses)
    assert [len(p) for p in batch] == [2, 1, 1] and len(single) == 2
    assert guard.net_dtypes == {DTYPES[precision]}, f"the vision tower computed in {guard.net_dtypes}"
    assert guard.calls.get("decode_pose", 0) >= 6 and guard.calls.get("refine_with_depth", 0) >= 5
    emb = est.text_embeddings(["the can"])
    assert emb.dtype == torch.float32  # the cache holds float32 whatever the autocast type


def test_fp16_means_float16_on_every_device():
    from vfm_pose_ros.models.estimator import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp16", cpu) == torch.float16
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("auto", cpu) is None and resolve_precision("fp32", cpu) is None
    ctx, scaler = training.training_precision("fp16", cpu)
    assert isinstance(scaler, torch.amp.GradScaler) and ctx.fast_dtype == torch.float16
    assert training.training_precision("bf16", cpu)[1] is None
    assert training.training_precision("auto", cpu)[1] is None


@pytest.fixture(scope="module")
def tiny_bop(tmp_path_factory, catalogue):
    from vfm_pose_ros.data.bop import BopDataset
    from vfm_pose_ros.data.scenes import LMO_K, SceneConfig, SceneGenerator, write_split

    root = tmp_path_factory.mktemp("half_bop")
    K = LMO_K.copy()
    K[:2] *= 0.25
    gen = SceneGenerator(list(catalogue), SceneConfig(width=160, height=120, K=K, distance=(0.5, 0.8),
                                                      distractors=0, min_visib_pixels=20), seed=1)
    write_split(gen, root, "train", 4, 0, progress=False)
    return BopDataset(root, "train", catalogue=catalogue, load_masks=True, load_depth=False)


@pytest.mark.parametrize("backend,config", [("dinov2", TINY_DINOV2), ("clip", None)])
def test_training_steps_in_fp16(monkeypatch, tmp_path, catalogue, tiny_bop, backend, config):
    """A few optimiser steps under float16 autocast with the GradScaler: the forward really runs in float16,
    the loss stays finite, the weights stay float32 and move, and the checkpoint predicts."""
    mod = dinov2 if backend == "dinov2" else clip
    config = {**(config or tiny_clip_config()), "precision": "fp16"}
    built, seen = [], set()
    real_build = mod.build_net

    def build_and_watch(cfg, cat):
        net = real_build(cfg, cat)
        watch_linears(net.backbone if backend == "dinov2" else net.clip.visual, seen)
        built.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        return net

    monkeypatch.setattr(mod, "build_net", build_and_watch)
    out = tmp_path / f"{backend}.pt"
    summary = fit(backend, config, tiny_bop, None, catalogue, out, epochs=1, lr=1e-3, batch_size=2,
                  max_steps=3, device="cpu", progress=False)
    assert summary["steps"] == 3
    assert seen == {torch.float16}, f"training forward ran in {seen}"
    net = summary["net"]
    params = dict(net.named_parameters())
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params.values())
    moved = [k for k, p in params.items() if p.requires_grad and not torch.equal(p.detach(), built[0][k])]
    assert moved, "no weight changed in 3 float16 steps (every step skipped by the GradScaler?)"
    monkeypatch.undo()
    est = mod.Estimator.from_checkpoint(out, device="cpu")
    assert est.precision == "fp16" and est.amp_dtype == torch.float16
