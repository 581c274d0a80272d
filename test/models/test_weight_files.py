"""The pretrained weight files users have load through the config's 'weights' key, and wrong ones fail in one line.

Stand-ins with random values are written in each real file's layout (models/weight_files.py: key names,
shapes, dtypes, container format), with fewer blocks than ViT-B except in the full-size test; every loaded
tensor is then compared with the file's, through the key mapping each format needs (Meta's DINOv2:
``mask_token`` dropped, ``register_tokens`` -> ``reg_token`` with the class position folded into
``cls_token``; OpenAI's archive: float16 matrices back to float32), so a broken mapping fails here.
"""
from __future__ import annotations

import copy
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.models import clip, dinov2
from vfm_pose_ros.models import weight_files as wf
from vfm_pose_ros.models.backbones import WeightsUnavailable
from vfm_pose_ros.paths import default_catalogue_dir

DEPTH = 2  # blocks in the stand-ins (and the configs that load them); names and per-block shapes are ViT-B's


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


def dinov2_config(backbone: str, weights, depth: int | None = DEPTH) -> dict:
    cfg = {"backbone": backbone, "weights": str(weights), "img_size": 56, "head_channels": 16,
           "detail_channels": [8, 16]}
    if depth is not None:
        cfg["arch_overrides"] = {"depth": depth}
    return cfg


def clip_config(weights, quick_gelu: bool) -> dict:
    cfg = copy.deepcopy(clip.SMALL_CONFIG)
    cfg["clip_arch"] = {"embed_dim": 512,
                        "vision_cfg": {"layers": DEPTH, "width": 768, "patch_size": 32, "image_size": 224,
                                       "head_width": 64},
                        "text_cfg": {"layers": 1, "width": 512, "heads": 8, "context_length": 77,
                                     "vocab_size": 49408}}
    cfg.update(weights=str(weights), quick_gelu=quick_gelu, freeze_vision=True, freeze_text=True)
    return cfg


def expected_timm_state(layout: str, file_state: dict) -> dict:
    """What timm must hold after loading a file of ``layout`` (pos_embed aside: it is resampled to 56 px)."""
    sd = dict(file_state)
    if layout == "meta":
        sd.pop("mask_token")
        if "register_tokens" in sd:
            sd["reg_token"] = sd.pop("register_tokens")
            sd["cls_token"] = sd["cls_token"] + sd["pos_embed"][:, 0]
    sd.pop("pos_embed")
    return sd


DINOV2_FILES = [  # (layout, registers, timm backbone, the user's file name)
    ("timm", 0, "vit_base_patch14_dinov2", "model.safetensors"),
    ("timm", 4, "vit_base_patch14_reg4_dinov2", "model.safetensors"),
    ("meta", 0, "vit_base_patch14_dinov2", "dinov2_vitb14_pretrain.pth"),
    ("meta", 4, "vit_base_patch14_reg4_dinov2", "dinov2_vitb14_reg4_pretrain.pth"),
]


@pytest.mark.parametrize("layout,registers,backbone,filename", DINOV2_FILES)
def test_dinov2_files_load_with_their_key_mapping(tmp_path, catalogue, layout, registers, backbone, filename):
    path = wf.write_dinov2(tmp_path / filename, layout, depth=DEPTH, registers=registers, seed=1)
    file_state = load_file(str(path)) if layout == "timm" else torch.load(path, weights_only=True)
    net = dinov2.build_net(dinov2_config(backbone, path), catalogue)
    loaded = net.backbone.state_dict()
    expected = expected_timm_state(layout, file_state)
    assert set(expected) <= set(loaded), f"not loaded: {sorted(set(expected) - set(loaded))[:5]}"
    for k, v in expected.items():
        torch.testing.assert_close(loaded[k], v, msg=lambda m, k=k: f"{k}: {m}")
    grid = 56 // 14
    assert loaded["pos_embed"].shape == (1, grid * grid + (0 if registers else 1), 768)
    with torch.no_grad():
        feats = net.features(torch.randn(1, 3, 56, 56))
    assert feats.shape == (1, 768, grid, grid) and torch.isfinite(feats).all()


@pytest.mark.parametrize("kind", ["open_clip", "openai"])
def test_clip_files_load(tmp_path, catalogue, kind):
    if kind == "open_clip":
        path = wf.write_open_clip(tmp_path / "open_clip_model.safetensors", seed=2, vision_layers=DEPTH, text_layers=1)
        file_state = load_file(str(path))
    else:
        path = wf.write_openai_clip(tmp_path / "ViT-B-32.pt", seed=2, vision_layers=DEPTH, text_layers=1)
        archive = torch.jit.load(str(path))
        file_state = {k: v for k, v in archive.state_dict().items()
                      if k not in ("input_resolution", "context_length", "vocab_size")}
        assert file_state["visual.proj"].dtype == torch.float16  # the archive's own dtypes, as OpenAI ships them
    net = clip.build_net(clip_config(path, quick_gelu=kind == "openai"), catalogue)
    loaded = net.clip.state_dict()
    assert set(file_state) == set(loaded), sorted(set(file_state) ^ set(loaded))[:5]
    for k, v in file_state.items():
        assert loaded[k].dtype == torch.float32, k
        torch.testing.assert_close(loaded[k], v.float(), msg=lambda m, k=k: f"{k}: {m}")
    assert net.pretrained and net.grid == (7, 7)


def _one_line_error(call) -> str:
    with pytest.raises(WeightsUnavailable) as err:
        call()
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_wrong_dinov2_files_fail_in_one_line(tmp_path, catalogue):
    good = wf.write_dinov2(tmp_path / "model.safetensors", "timm", depth=DEPTH)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    small = wf.write_dinov2(tmp_path / "dinov2_vits14_pretrain.pth", "meta", dim=384, depth=DEPTH)
    clip_file = wf.write_open_clip(tmp_path / "open_clip_model.safetensors", vision_layers=1, text_layers=1)
    for path in (truncated, small, clip_file):
        msg = _one_line_error(lambda p=path: dinov2.build_net(dinov2_config("vit_base_patch14_dinov2", p), catalogue))
        assert msg.startswith("'weights':") and str(path) in msg, msg
        assert "dinov2_vitb14_pretrain.pth" in msg and "timm/vit_base_patch14_dinov2.lvd142m" in msg, msg


def test_wrong_clip_files_fail_in_one_line(tmp_path, catalogue):
    good = wf.write_openai_clip(tmp_path / "ViT-B-32.pt", vision_layers=DEPTH, text_layers=1)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other_arch = wf.write_open_clip(tmp_path / "b16.safetensors", patch=16, vision_layers=DEPTH, text_layers=1)
    dino_file = wf.write_dinov2(tmp_path / "model.safetensors", "timm", depth=DEPTH)
    for path in (truncated, other_arch, dino_file):
        msg = _one_line_error(lambda p=path: clip.build_net(clip_config(p, quick_gelu=True), catalogue))
        assert msg.startswith("'weights':") and str(path) in msg, msg
        assert "open_clip_model.safetensors" in msg and "ViT-B-32.pt" in msg, msg


@pytest.mark.slow  # a subprocess that imports torch, timm and renders a frame: ~20 s idle, ~60 s under load
def test_cli_names_a_wrong_file_in_one_line(tmp_path):
    """Through `vfm-pose train`: status 2 and one line on stderr, no traceback."""
    weights = tmp_path / "dinov2_vitb14_pretrain.pth"
    weights.write_bytes(b"not a checkpoint")
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"backend: dinov2\nbase: default\nweights: {weights}\nimg_size: 56\n")
    from vfm_pose_ros.data.scenes import LMO_K, SceneConfig, SceneGenerator, write_split

    catalogue = Catalogue.from_dir(default_catalogue_dir())
    K = LMO_K.copy()
    K[:2] *= 0.25
    gen = SceneGenerator(list(catalogue), SceneConfig(width=160, height=120, K=K, distractors=0), seed=1)
    write_split(gen, tmp_path / "data", "train", 1, 0, progress=False)
    proc = subprocess.run([sys.executable, "-m", "vfm_pose_ros.cli", "train", "--backend", "dinov2", "--config",
                           str(cfg), "--dataset", str(tmp_path / "data"), "--out", str(tmp_path / "out.pt")],
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(err) == 1 and "'weights'" in err[0] and str(weights) in err[0], proc.stderr[-2000:]


def test_full_size_meta_dinov2_file(tmp_path, catalogue):
    """Meta's dinov2_vitb14_pretrain.pth with every key and shape of ViT-B/14 (12 blocks, 518 px position table,
    ~350 MB) through the default DINOv2 config: timm's conversion and the 518 -> 224 resampling at real size."""
    t0 = time.perf_counter()
    path = wf.write_dinov2(tmp_path / "dinov2_vitb14_pretrain.pth", "meta", seed=3)
    state = torch.load(path, weights_only=True)
    assert len(state) == 5 + 12 * 14 + 2 and state["pos_embed"].shape == (1, 1370, 768)
    net = dinov2.build_net({"weights": str(path)}, catalogue)  # DEFAULT_CONFIG: vit_base_patch14_dinov2 at 224
    loaded = net.backbone.state_dict()
    for k, v in expected_timm_state("meta", state).items():
        torch.testing.assert_close(loaded[k], v, msg=lambda m, k=k: f"{k}: {m}")
    assert loaded["pos_embed"].shape == (1, 16 * 16 + 1, 768)
    assert net.backbone_frozen and not any(k.startswith("backbone.") for k in net.checkpoint_state_dict())
    print(f"full-size Meta DINOv2 file: {path.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - t0:.1f} s")
