"""Backbone weights and construction shared by the backends.

Weights come from a local file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) or,
when the Hugging Face hub is reachable, from a hub/pretrained tag. With
``HF_HUB_OFFLINE=1`` (or no route to the hub) and no local file, loading fails at
once with :class:`WeightsUnavailable` instead of timm/huggingface_hub's ~46 s
network timeout. CLIP builds its model in models/clip.py with open_clip but uses
the same :func:`resolve_weights` rules and error type.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
RANDOM_SPECS = (None, "", "none", "random", "scratch")
HUB_HOST = "huggingface.co"


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be had (no local file, hub offline or unreachable)."""


@dataclass(frozen=True)
class WeightsSpec:
    """Where a backbone's weights come from: 'random', 'file' (path) or 'hub' (tag)."""

    kind: str
    path: Path | None = None
    tag: str | None = None


def hub_offline() -> bool:
    """True when the user told the Hugging Face libraries to stay offline."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def hub_reachable(host: str = HUB_HOST, port: int = 443, timeout: float = 3.0) -> bool:
    """A quick TCP connect to the hub, so a closed network costs seconds, not a 46 s library timeout."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_path(spec: str) -> bool:
    return spec.lower().endswith(WEIGHT_SUFFIXES) or os.sep in spec or spec.startswith((".", "~"))


def resolve_weights(spec, *, model: str = "", config_key: str = "weights", check_network: bool = True) -> WeightsSpec:
    """Decide where weights come from, failing fast with a message that says how to supply them.

    spec: None/'none'/'random' -> random init; an existing file -> that file; 'hub' or
    'pretrained' (or any other tag, e.g. 'lvd142m', 'openai') -> download by tag, which needs
    the hub. ``model`` and ``config_key`` only make the error message precise.
    """
    if isinstance(spec, str):
        spec = spec.strip()
    if spec in RANDOM_SPECS or (isinstance(spec, str) and spec.lower() in RANDOM_SPECS):
        return WeightsSpec("random")
    if isinstance(spec, Path) or _looks_like_path(str(spec)):
        path = Path(spec).expanduser()
        if path.is_file():
            return WeightsSpec("file", path=path)
        raise WeightsUnavailable(
            f"weights file for {model or 'the backbone'} not found: {path}. "
            f"Set '{config_key}' to an existing {'/'.join(WEIGHT_SUFFIXES)} file, or to 'random' to train from scratch."
        )
    tag = str(spec)
    why = None
    if hub_offline():
        why = "HF_HUB_OFFLINE=1 is set"
    elif check_network and not hub_reachable():
        why = f"{HUB_HOST} cannot be reached"
    if why:
        raise WeightsUnavailable(
            f"pretrained weights '{tag}' for {model or 'the backbone'} need the Hugging Face hub, but {why}. "
            f"Download the weights elsewhere (e.g. timm/{model}: model.safetensors, or open_clip's "
            f"open_clip_model.safetensors) and set '{config_key}: /path/to/file.safetensors' in the config "
            f"(CLI: --config FILE.yaml), or use 'random' / the small config (--small) to train from scratch."
        )
    return WeightsSpec("hub", tag=tag)


def create_timm_model(name: str, weights, *, config_key: str = "weights", **kwargs):
    """timm.create_model with weights from :func:`resolve_weights` (local file, hub tag or random init).

    A local file goes through timm's own pretrained loading (``pretrained_cfg_overlay=dict(file=...)``),
    so timm's checkpoint filters resize position embeddings for other image sizes.
    """
    import timm

    ws = resolve_weights(weights, model=name, config_key=config_key)
    if ws.kind == "random":
        return timm.create_model(name, pretrained=False, **kwargs)
    if ws.kind == "file":
        from .weight_files import expected_dinov2_files, one_line

        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(ws.path)), **kwargs)
        except Exception as exc:  # noqa: BLE001  any failure reading a user's file (keys, shapes, truncation)
            raise WeightsUnavailable(
                f"'{config_key}': {ws.path} does not load into {name} (expected {expected_dinov2_files(name)}): "
                f"{one_line(exc)}"
            ) from exc
    full = name if ws.tag in ("hub", "pretrained", "default") else f"{name}.{ws.tag}"
    return timm.create_model(full, pretrained=True, **kwargs)
