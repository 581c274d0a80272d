"""Checkpoints: weights plus everything needed to run them without the training files.

A checkpoint is one ``torch.save`` dict (loaded with ``weights_only=True``: only
tensors and plain Python values, no pickled code) holding the backend name, the
full config, the object catalogue (names, class ids, keypoints, diameters,
symmetries, grasp frames, and surface points with normals for ICP and metrics),
a hash of the training data, the epoch, validation metrics and the weights.
fp32 weights are stored in fp16 by default to keep shipped checkpoints
small; they are restored to fp32 on load.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..core.catalogue import Catalogue, GraspFrame, ObjectModel, Symmetry, surface_samples

FORMAT = "vfm_pose_ros-checkpoint"
VERSION = 1
SUPPORTED_VERSIONS = (1,)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, not ours, of another backend, or an unknown version."""


def catalogue_to_dict(catalogue: Catalogue, keypoints: dict[str, np.ndarray] | None = None,
                      n_points: int = 2000) -> dict:
    """Plain-value form of a catalogue (tensors for arrays) with the keypoints the network was trained on."""
    out = []
    for obj in catalogue:
        pts, normals = getattr(obj, "surface_normals", None) or surface_samples(obj, n_points)
        kp = keypoints[obj.name] if keypoints and obj.name in keypoints else obj.keypoints
        sym = obj.symmetry
        out.append({
            "name": obj.name,
            "class_id": int(obj.class_id),
            "points": torch.as_tensor(np.asarray(pts), dtype=torch.float32),
            "normals": torch.as_tensor(np.asarray(normals), dtype=torch.float32),
            "diameter": float(obj.diameter),
            "bbox_min": [float(x) for x in obj.bbox_min],
            "bbox_max": [float(x) for x in obj.bbox_max],
            "keypoints": torch.as_tensor(np.asarray(kp), dtype=torch.float64),
            "symmetry": {
                "kind": sym.kind,
                "transforms": [np.asarray(T, dtype=float).tolist() for T in sym.transforms],
                "axis": None if sym.axis is None else [float(x) for x in sym.axis],
                "offset": None if sym.offset is None else [float(x) for x in sym.offset],
            },
            "grasp_frames": {g.name: {"T": np.asarray(g.T, dtype=float).tolist(), "description": g.description,
                                      "aliases": list(g.aliases)}
                             for g in obj.grasp_frames.values()},
            "description": obj.description,
            "aliases": list(obj.aliases),
        })
    return {"objects": out}


def catalogue_from_dict(d: dict) -> Catalogue:
    """Inverse of :func:`catalogue_to_dict`. Vertices are the stored surface samples (no faces).

    Each object gets a ``surface_normals`` attribute (points, normals) for ICP.
    """
    objects = []
    for o in d["objects"]:
        s = o["symmetry"]
        pts = o["points"].double().numpy()
        obj = ObjectModel(
            name=o["name"],
            class_id=int(o["class_id"]),
            vertices=pts,
            diameter=float(o["diameter"]),
            symmetry=Symmetry(
                kind=s["kind"],
                transforms=[np.asarray(T, dtype=float) for T in s["transforms"]],
                axis=None if s["axis"] is None else np.asarray(s["axis"], dtype=float),
                offset=None if s["offset"] is None else np.asarray(s["offset"], dtype=float),
            ),
            keypoint_spec=o["keypoints"].numpy().tolist(),
            grasp_frames={n: GraspFrame(n, np.asarray(g["T"], dtype=float), g["description"], g.get("aliases", []))
                          for n, g in o["grasp_frames"].items()},
            description=o.get("description", ""),
            aliases=o.get("aliases", []),
        )
        obj.surface_normals = (pts, o["normals"].double().numpy())
        objects.append(obj)
    return Catalogue(objects)


def dataset_hash(root, split: str | None = None) -> str:
    """Short sha256 over a BOP split's annotation files and its image file names and sizes.

    Detects a changed or different training set without reading every image.
    """
    root = Path(root)
    base = root / split if split else root
    if not base.exists():
        return "missing:" + str(base)
    h = hashlib.sha256()
    for p in sorted(base.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if p.suffix == ".json":
            h.update(rel.encode() + b"\0" + p.read_bytes())
        else:
            h.update(f"{rel}\0{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def save_checkpoint(path, net: torch.nn.Module, *, backend: str, config: dict, catalogue: Catalogue | dict,
                    data_hash: str, epoch: int, optimizer=None, metrics: dict | None = None, half: bool = True,
                    keypoints: dict[str, np.ndarray] | None = None, extra: dict | None = None) -> Path:
    """Write a checkpoint atomically (temp file + rename, so a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(net, "module", net)  # unwrap DistributedDataParallel
    state = {}
    # A net may leave out weights it can rebuild (e.g. a frozen pretrained backbone loaded from its own file).
    full_state = getattr(module, "checkpoint_state_dict", module.state_dict)()
    for k, v in full_state.items():
        v = v.detach().cpu()
        # fp32 -> fp16 halves the file; fp64 buffers (keypoints, geometry) stay exact
        state[k] = v.half() if half and v.dtype == torch.float32 else v
    if keypoints is None:
        keypoints = net_keypoints(module)
    cat = catalogue if isinstance(catalogue, dict) else catalogue_to_dict(catalogue, keypoints)
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "backend": backend,
        "config": json.loads(json.dumps(config)),  # plain values only
        "catalogue": cat,
        "data_hash": data_hash,
        "epoch": int(epoch),
        "metrics": json.loads(json.dumps(metrics or {})),
        "state_dict": state,
        "package_version": __version__,
        "torch_version": str(torch.__version__),
        "created_unix": time.time(),
    }
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if extra:
        ckpt["extra"] = extra
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return path


def net_keypoints(net) -> dict[str, np.ndarray] | None:
    """Per-object keypoints a keypoint net was trained on (``keypoints_3d`` + ``object_names``), if it has them."""
    kp = getattr(net, "keypoints_3d", None)
    names = getattr(net, "object_names", None)
    if kp is None or names is None:
        return None
    return {n: kp[i].detach().cpu().double().numpy() for i, n in enumerate(names)}


def load_checkpoint(path, expected_backend: str | None = None, map_location="cpu", as_stored: bool = False) -> dict:
    """Read and check a checkpoint; weights come back as fp32 (``as_stored``: as stored, often fp16, for
    ``load_state_dict``, which casts into the network's own tensors). Raises CheckpointError with the fix.

    The file is memory-mapped: tensors are read when used, so checking a checkpoint's header costs
    nothing and loading a ViT-B network does not hold a second full copy of its weights in memory."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (train one with `vfm-pose train ... --out {path}`)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{path} is not a readable vfm_pose_ros checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vfm_pose_ros checkpoint (no '{FORMAT}' header)")
    if ckpt.get("version") not in SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"{path} has checkpoint format version {ckpt.get('version')!r}; this vfm_pose_ros "
            f"({__version__}) reads versions {SUPPORTED_VERSIONS}: upgrade the package or retrain"
        )
    if expected_backend is not None and ckpt.get("backend") != expected_backend:
        raise CheckpointError(
            f"{path} is a {ckpt.get('backend')!r} checkpoint, not {expected_backend!r}: "
            f"pass --backend {ckpt.get('backend')} or a {expected_backend} checkpoint"
        )
    if not as_stored:
        ckpt["state_dict"] = {k: v.float() if v.dtype == torch.float16 else v for k, v in ckpt["state_dict"].items()}
    return ckpt


def release_memory() -> None:
    """Hand freed heap back to the OS after loading a network (glibc keeps it otherwise, and the node's
    resident size would count a checkpoint that is no longer used). Hand-written: no library wraps
    malloc_trim; a no-op where glibc is absent."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peek_backend(path) -> str:
    """The backend a checkpoint was trained for (validates the file on the way)."""
    return load_checkpoint(path, as_stored=True)["backend"]
