"""Torch models: backbones (timm, open_clip), heads, estimators, checkpoints and training.

Backends are modules listed in :data:`BACKENDS`; each exposes ``DEFAULT_CONFIG``,
``SMALL_CONFIG``, ``build_net``, ``make_dataset`` and an ``Estimator`` class (see
models/estimator.py). :func:`load_estimator` opens a checkpoint and dispatches on
the backend recorded in it.
"""
from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = {"dinov2": "vfm_pose_ros.models.dinov2", "clip": "vfm_pose_ros.models.clip",
            "hybrid": "vfm_pose_ros.models.hybrid"}


def backend_module(name: str) -> ModuleType:
    """The module implementing a backend (imported on first use, so unused backends cost nothing)."""
    try:
        path = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose from: {', '.join(BACKENDS)}") from None
    return importlib.import_module(path)


def load_estimator(checkpoint=None, device: str = "auto", backend: str | None = None, **kw):
    """An Estimator from a checkpoint; ``backend`` (when given) must match the checkpoint's.

    Hybrid checkpoints may also be YAML/JSON files referencing a clip and a dinov2 checkpoint; with no
    checkpoint, ``backend="hybrid"`` combines the shipped models/clip_small.pt and models/dinov2_small.pt.
    """
    from pathlib import Path

    from .checkpoint import peek_backend

    if checkpoint is None:
        if backend != "hybrid":
            raise ValueError(f"no checkpoint given for backend {backend!r}: pass one from `vfm-pose train` "
                             "(only the hybrid backend has defaults: the shipped clip and dinov2 checkpoints)")
        return backend_module("hybrid").Estimator.from_checkpoint(None, device=device, **kw)
    if Path(checkpoint).suffix.lower() in (".yaml", ".yml", ".json"):  # a hybrid spec file
        found = "hybrid"
    else:
        found = peek_backend(checkpoint)
    if backend is not None and backend != found:
        raise ValueError(f"checkpoint {checkpoint} is a {found!r} checkpoint, not {backend!r}; "
                         f"use --backend {found} or a {backend} checkpoint")
    est = backend_module(found).Estimator.from_checkpoint(checkpoint, device=device, **kw)
    est.score_calibration = _calibration(est, checkpoint, kw)
    return est


def _calibration(est, checkpoint, overrides: dict):
    """The score calibration beside the checkpoint (core.score_calibration), when it fits these weights."""
    import logging

    from ..core.score_calibration import load_calibration, sidecar_path

    if not sidecar_path(checkpoint).is_file():
        return None
    if any(k == "weights" or k.endswith("_weights") for k in overrides):
        logging.getLogger(__name__).warning(
            "%s is not applied: it was fitted for the checkpoint's own backbone weights, not %s; scores stay raw",
            sidecar_path(checkpoint), {k: v for k, v in overrides.items() if k.endswith("weights")})
        return None
    return load_calibration(checkpoint, getattr(est, "source_files", [checkpoint]))
