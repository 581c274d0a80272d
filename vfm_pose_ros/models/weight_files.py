"""The pretrained weight files users have, by name and layout, and random stand-ins written in those layouts.

No pretrained weights can be downloaded where this package is tested, so the loaders are tested (and
benchmarked at real size) on stand-ins: random tensors under exactly the key names and shapes of

* timm's hub ``model.safetensors`` (``timm/vit_base_patch14_dinov2.lvd142m``, ``..._reg4_dinov2.lvd142m``):
  timm's own VisionTransformer state dict at 518 px; the register variant is ``no_embed_class`` (its
  ``pos_embed`` has no class position) and holds ``reg_token``;
* Meta's torch.hub files ``dinov2_vitb14_pretrain.pth`` / ``dinov2_vitb14_reg4_pretrain.pth``: a plain
  state dict with ``mask_token``, ``pos_embed`` for 518 px *with* the class position, ``register_tokens``
  in the register variant, LayerScale ``blocks.N.ls1.gamma`` / ``ls2.gamma`` (timm converts these);
* open_clip's ``open_clip_model.safetensors`` of ViT-B-32 (the ``open_clip.CLIP`` state dict);
* OpenAI's ``ViT-B-32.pt``: a TorchScript archive whose state dict has the same CLIP names plus
  ``input_resolution``, ``context_length`` and ``vocab_size``, with the matrices in float16 (OpenAI's
  ``convert_weights``), read by open_clip's OpenAI loader.

The writers take the architecture's sizes, so a test may write fewer blocks; the names and the shapes
per block stay the real ones.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import torch
from torch import nn

DINOV2_SIZES = {"small": ("s", 384, 6), "base": ("b", 768, 12), "large": ("l", 1024, 16), "giant": ("g", 1536, 24)}


def expected_dinov2_files(backbone: str) -> str:
    """The files a timm DINOv2 backbone name loads, for error messages and the README."""
    m = re.match(r"vit_(small|base|large|giant)_patch14_(reg4_)?dinov2", backbone)
    if not m:
        return f"a {backbone} state dict (.safetensors/.pth)"
    letter = DINOV2_SIZES[m.group(1)][0]
    reg = "_reg4" if m.group(2) else ""
    return (f"timm's model.safetensors (hub timm/{m.group(0)}.lvd142m) or Meta's "
            f"dinov2_vit{letter}14{reg}_pretrain.pth")


def expected_clip_files(clip_model: str) -> str:
    """The files an open_clip model name loads, for error messages and the README."""
    return (f"open_clip's open_clip_model.safetensors of {clip_model} (e.g. hub "
            f"timm/vit_base_patch32_clip_224.openai or laion/CLIP-ViT-B-32-laion2B-s34B-b79K) or OpenAI's "
            f"{clip_model}.pt")


def one_line(exc: BaseException, limit: int = 240) -> str:
    """The first line of an exception's message, shortened: torch's key-mismatch errors run to pages."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_torchscript_archive(path) -> bool:
    """A TorchScript zip (OpenAI's CLIP files): it holds code/ and constants.pkl beside the data."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


# -- DINOv2 ---------------------------------------------------------------------------------------

def _vit_blocks(prefix: str, dim: int, depth: int, mlp: int, qkv: str, layerscale: bool) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}
    for i in range(depth):
        b = f"{prefix}{i}."
        shapes.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                       b + f"attn.{qkv}.weight": (3 * dim, dim), b + f"attn.{qkv}.bias": (3 * dim,),
                       b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                       b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                       b + "mlp.fc1.weight": (mlp, dim), b + "mlp.fc1.bias": (mlp,),
                       b + "mlp.fc2.weight": (dim, mlp), b + "mlp.fc2.bias": (dim,)})
        if layerscale:
            shapes.update({b + "ls1.gamma": (dim,), b + "ls2.gamma": (dim,)})
    return shapes


def dinov2_shapes(layout: str, dim: int = 768, depth: int = 12, registers: int = 0, img_size: int = 518,
                  patch: int = 14) -> dict[str, tuple]:
    """Key -> shape of a DINOv2 file: layout 'meta' (torch.hub .pth) or 'timm' (hub model.safetensors)."""
    grid = (img_size // patch) ** 2
    shapes: dict[str, tuple] = {"cls_token": (1, 1, dim), "patch_embed.proj.weight": (dim, 3, patch, patch),
                                "patch_embed.proj.bias": (dim,)}
    if layout == "meta":
        shapes.update({"pos_embed": (1, grid + 1, dim), "mask_token": (1, dim)})
        if registers:
            shapes["register_tokens"] = (1, registers, dim)
    elif layout == "timm":
        # timm's register variant is no_embed_class: no position for the class token
        shapes["pos_embed"] = (1, grid + (0 if registers else 1), dim)
        if registers:
            shapes["reg_token"] = (1, registers, dim)
    else:
        raise ValueError(f"layout must be 'meta' or 'timm', got {layout!r}")
    shapes.update(_vit_blocks("blocks.", dim, depth, 4 * dim, "qkv", layerscale=True))
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return shapes


def random_state(shapes: dict[str, tuple], seed: int = 0, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Random tensors of the given shapes: norms and LayerScale near their trained scale, the rest small."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        if re.search(r"(norm\d?|ln_\w+|ln_final|ln_pre|ln_post)\.weight$", k):
            t = torch.ones(shape)
        elif k.endswith("gamma"):
            t = torch.full(shape, 0.1)
        elif k == "logit_scale":
            t = torch.tensor(4.6052)
        else:
            t = torch.randn(shape, generator=g) * 0.02
        out[k] = t.to(dtype)
    return out


def write_dinov2(path, layout: str, *, dim: int = 768, depth: int = 12, registers: int = 0, seed: int = 0) -> Path:
    """A DINOv2 stand-in: 'timm' -> safetensors (timm's hub file), 'meta' -> torch.save'd dict (Meta's .pth)."""
    path = Path(path)
    state = random_state(dinov2_shapes(layout, dim, depth, registers), seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "timm":
        from safetensors.torch import save_file

        save_file(state, str(path), metadata={"format": "pt"})
    else:
        torch.save(state, path)
    return path


# -- CLIP -----------------------------------------------------------------------------------------

def _clip_blocks(prefix: str, width: int, layers: int) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}
    for i in range(layers):
        b = f"{prefix}{i}."
        shapes.update({b + "ln_1.weight": (width,), b + "ln_1.bias": (width,),
                       b + "attn.in_proj_weight": (3 * width, width), b + "attn.in_proj_bias": (3 * width,),
                       b + "attn.out_proj.weight": (width, width), b + "attn.out_proj.bias": (width,),
                       b + "ln_2.weight": (width,), b + "ln_2.bias": (width,),
                       b + "mlp.c_fc.weight": (4 * width, width), b + "mlp.c_fc.bias": (4 * width,),
                       b + "mlp.c_proj.weight": (width, 4 * width), b + "mlp.c_proj.bias": (width,)})
    return shapes


def clip_shapes(embed_dim: int = 512, vision_width: int = 768, vision_layers: int = 12, patch: int = 32,
                image_size: int = 224, text_width: int = 512, text_layers: int = 12, context_length: int = 77,
                vocab_size: int = 49408) -> dict[str, tuple]:
    """Key -> shape of a CLIP ViT state dict (open_clip's names, which are OpenAI's)."""
    grid = (image_size // patch) ** 2
    shapes: dict[str, tuple] = {
        "positional_embedding": (context_length, text_width), "text_projection": (text_width, embed_dim),
        "logit_scale": (), "visual.class_embedding": (vision_width,),
        "visual.positional_embedding": (grid + 1, vision_width), "visual.proj": (vision_width, embed_dim),
        "visual.conv1.weight": (vision_width, 3, patch, patch), "visual.ln_pre.weight": (vision_width,),
        "visual.ln_pre.bias": (vision_width,)}
    shapes.update(_clip_blocks("visual.transformer.resblocks.", vision_width, vision_layers))
    shapes.update({"visual.ln_post.weight": (vision_width,), "visual.ln_post.bias": (vision_width,),
                   "token_embedding.weight": (vocab_size, text_width)})
    shapes.update(_clip_blocks("transformer.resblocks.", text_width, text_layers))
    shapes.update({"ln_final.weight": (text_width,), "ln_final.bias": (text_width,)})
    return shapes


def write_open_clip(path, seed: int = 0, **sizes) -> Path:
    """open_clip's open_clip_model.safetensors layout."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(random_state(clip_shapes(**sizes), seed), str(path))
    return path


def _openai_half(key: str) -> bool:
    """What OpenAI's convert_weights made float16: conv and linear weights and biases, attention in-projections,
    the two projection matrices. Norms, embeddings and logit_scale stay float32."""
    if key in ("text_projection", "visual.proj") or "in_proj_" in key or key == "visual.conv1.weight":
        return True
    return bool(re.search(r"(out_proj|c_fc|c_proj)\.(weight|bias)$", key))


class _Holder(nn.Module):
    """A module tree with the given parameter names, for a TorchScript archive of a state dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write_openai_clip(path, seed: int = 0, **sizes) -> Path:
    """OpenAI's ViT-B-32.pt layout: a TorchScript archive (torch.jit.save) of the CLIP module."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = random_state(clip_shapes(**sizes), seed)
    root = _Holder()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        mod = root
        for name in parents:
            if not hasattr(mod, name):
                mod.add_module(name, _Holder())
            mod = getattr(mod, name)
        mod.register_parameter(leaf, nn.Parameter(value.half() if _openai_half(key) else value, requires_grad=False))
    image = sizes.get("image_size", 224)
    root.register_buffer("input_resolution", torch.tensor(image))
    root.register_buffer("context_length", torch.tensor(sizes.get("context_length", 77)))
    root.register_buffer("vocab_size", torch.tensor(sizes.get("vocab_size", 49408)))
    torch.jit.save(torch.jit.script(root), str(path))
    return path
