"""Catalogues read from a BOP ``models/`` folder: ``obj_XXXXXX.ply`` (mm) and ``models_info.json``.

BOP's files hold meshes, diameters and symmetries but no names or words. Those come, first
match wins, from: names the caller gives, the optional sidecar ``vfm_catalogue.yaml`` beside
``models_info.json`` (names, aliases, descriptions, keypoints, grasp frames; schema below), our
``catalogue.json`` (written by ``vfm-pose synth``), the name table of a known BOP dataset
(LM, LM-O, YCB-V, T-LESS; recognised by the folder name), else ``obj_XXXXXX``.

Sidecar schema (``vfm_catalogue.yaml``; every field optional)::

    objects:
      8:                              # BOP obj_id
        name: driller
        aliases: [drill, power drill]
        description: a green and black cordless drill with a black handle
        keypoints: fps:8              # as in the YAML catalogue entries (core/catalogue.py)
        grasp_frames:                 # metres, object frame
          handle: {xyz: [0, 0, -0.05], description: "the black pistol-grip handle", aliases: [grip]}
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .catalogue import ObjectModel, Symmetry, grasp_frames_from_spec, load_mesh, read_aliases

# LineMOD / LM-O object names by BOP obj_id (Hinterstoisser et al. 2012; BOP "lm" and "lmo").
LINEMOD_NAMES = {
    1: "ape", 2: "benchvise", 3: "bowl", 4: "camera", 5: "can", 6: "cat", 7: "cup", 8: "driller",
    9: "duck", 10: "eggbox", 11: "glue", 12: "holepuncher", 13: "iron", 14: "lamp", 15: "phone",
}
# YCB-Video (Xiang et al. 2018; BOP "ycbv"): the YCB model names without their numeric prefix.
YCBV_NAMES = {
    1: "master_chef_can", 2: "cracker_box", 3: "sugar_box", 4: "tomato_soup_can", 5: "mustard_bottle",
    6: "tuna_fish_can", 7: "pudding_box", 8: "gelatin_box", 9: "potted_meat_can", 10: "banana",
    11: "pitcher_base", 12: "bleach_cleanser", 13: "bowl", 14: "mug", 15: "power_drill", 16: "wood_block",
    17: "scissors", 18: "large_marker", 19: "large_clamp", 20: "extra_large_clamp", 21: "foam_brick",
}
# T-LESS (Hodan et al. 2017; BOP "tless"): 30 unnamed industrial parts, numbered as in the paper.
TLESS_NAMES = {i: f"tless_{i:02d}" for i in range(1, 31)}

# folder-name pattern -> name table; the last three parts of a models folder's path are matched
KNOWN_BOP_DATASETS = (
    (re.compile(r"^(lm|lmo|lm-o|linemod|occlusion)([-_].*)?$", re.IGNORECASE), LINEMOD_NAMES),
    (re.compile(r"^(ycbv|ycb-v|ycb_video|ycbvideo)([-_].*)?$", re.IGNORECASE), YCBV_NAMES),
    (re.compile(r"^(tless|t-less)([-_].*)?$", re.IGNORECASE), TLESS_NAMES),
)
CATALOGUE_JSON = "catalogue.json"  # beside models_info.json: obj_id -> name (+ description, keypoints, grasp frames)
SIDECAR_YAML = "vfm_catalogue.yaml"  # beside models_info.json: written by hand (schema above)


def bop_object_name(obj_id: int) -> str:
    """The fallback name of a BOP object without a known name."""
    return f"obj_{int(obj_id):06d}"


def known_dataset_names(path, obj_ids=None) -> dict[int, str]:
    """The name table of the known BOP dataset a folder belongs to (``lmo/models``, ``ycbv_models``...), or {}.

    A table is used only when every obj_id is in it, so a folder merely named like a dataset keeps obj_ names.
    """
    parts = Path(path).resolve().parts[-3:]
    for pattern, table in KNOWN_BOP_DATASETS:
        if any(pattern.match(part) for part in parts):
            if obj_ids is not None and (not len(obj_ids) or any(int(i) not in table for i in obj_ids)):
                return {}
            return dict(table)
    return {}


def looks_like_linemod(path, obj_ids=None) -> bool:
    """LM/LM-O folders (``lm/models``, ``lmo``, ``lmo_models``, ...) with ids 1..15: named like the papers do."""
    return known_dataset_names(path, obj_ids) == LINEMOD_NAMES


def object_metadata(obj: ObjectModel) -> dict:
    """What a BOP ``models_info.json`` cannot hold about an object, for ``catalogue.json``."""
    from .transforms import matrix_to_quat

    spec = obj.keypoint_spec
    if isinstance(spec, np.ndarray) or (isinstance(spec, (list, tuple)) and spec and not isinstance(spec, str)):
        spec = np.asarray(spec, dtype=float).tolist()
    grasps = {}
    for name, g in obj.grasp_frames.items():
        grasps[name] = {
            "xyz": [float(v) for v in g.T[:3, 3]],
            "quat": [float(v) for v in matrix_to_quat(g.T[:3, :3])],
            "description": g.description,
            "aliases": list(g.aliases),
        }
    return {"name": obj.name, "aliases": list(obj.aliases), "description": obj.description, "keypoints": spec,
            "grasp_frames": grasps}


def find_models_info(models_dir) -> Path:
    """``models_info.json`` in a BOP ``models/`` folder, or in ``<dataset>/models`` when given a dataset root."""
    models_dir = Path(models_dir)
    for cand in (models_dir / "models_info.json", models_dir / "models" / "models_info.json"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"no models_info.json in {models_dir} (nor in {models_dir / 'models'}): pass a BOP models folder "
        "(obj_XXXXXX.ply in millimetres plus models_info.json), e.g. <dataset>/models or <dataset>/models_eval"
    )


def _read_sidecar(path: Path) -> dict[int, dict]:
    import yaml

    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    objects = d.get("objects", d) if isinstance(d, dict) else None
    if not isinstance(objects, dict):
        raise ValueError(f"{path}: expected 'objects:' mapping BOP obj_ids to entries (see core/bop_models.py)")
    out = {}
    for k, v in objects.items():
        try:
            obj_id = int(k)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: object keys must be BOP obj_ids (integers), got {k!r}") from None
        entry = {"name": v} if isinstance(v, str) else dict(v or {})
        read_aliases(entry, f"{path}: object {obj_id}: ")
        out[obj_id] = entry
    return out


def read_name_mapping(models_dir) -> dict[int, dict]:
    """Per obj_id, what ``catalogue.json`` and the sidecar ``vfm_catalogue.yaml`` say (the sidecar wins per field).

    Values are dicts that may hold ``name``, ``aliases``, ``description``, ``keypoints``, ``grasp_frames``;
    a bare ``{"1": "ape"}`` mapping is accepted too. Empty when neither file exists.
    """
    models_dir = Path(models_dir)
    out: dict[int, dict] = {}
    path = models_dir / CATALOGUE_JSON
    if path.is_file():
        with open(path) as f:
            d = json.load(f)
        for k, v in d.get("objects", d).items():
            out[int(k)] = {"name": v} if isinstance(v, str) else dict(v)
    sidecar = models_dir / SIDECAR_YAML
    if sidecar.is_file():
        for obj_id, entry in _read_sidecar(sidecar).items():
            out.setdefault(obj_id, {}).update(entry)
    return out


def load_bop_models(models_dir, names=None, id_names: dict | None = None, obj_ids=None) -> list[ObjectModel]:
    """Objects of a BOP ``models/`` folder: ``obj_XXXXXX.ply`` (mm) and ``models_info.json``.

    Diameters come from ``models_info.json`` (mm -> m) when given, symmetries from its
    ``symmetries_discrete`` / ``symmetries_continuous`` fields; names and words as the module
    docstring says. ``names`` / ``obj_ids`` select objects before any mesh is read.
    """
    info_path = find_models_info(models_dir)
    models_dir = info_path.parent
    with open(info_path) as f:
        infos = {int(k): v for k, v in json.load(f).items()}
    meta = read_name_mapping(models_dir)
    table = known_dataset_names(models_dir, list(infos))
    id_names = {int(k): v for k, v in (id_names or {}).items()}

    def name_of(obj_id: int) -> str:
        if obj_id in id_names:
            return id_names[obj_id]
        if meta.get(obj_id, {}).get("name"):
            return meta[obj_id]["name"]
        return table.get(obj_id) or bop_object_name(obj_id)

    selected = _select(infos, info_path, name_of, names, obj_ids)
    objects = []
    for obj_id in selected:
        info = infos[obj_id]
        mesh_path = models_dir / f"obj_{obj_id:06d}.ply"
        if not mesh_path.is_file():
            raise FileNotFoundError(f"{info_path} lists object {obj_id} but its mesh {mesh_path} is missing")
        vertices, faces, colors = load_mesh(mesh_path, unit="mm")
        m = meta.get(obj_id, {})
        objects.append(
            ObjectModel(
                name=name_of(obj_id),
                class_id=obj_id,
                vertices=vertices,
                faces=faces,
                vertex_colors=colors,
                mesh_path=mesh_path,
                diameter=float(info.get("diameter") or 0.0) / 1000.0,
                symmetry=Symmetry.from_bop(info),
                keypoint_spec=m.get("keypoints") or "box",
                grasp_frames=grasp_frames_from_spec(m.get("grasp_frames"), f"{models_dir}: object {obj_id}: "),
                description=m.get("description") or "",
                aliases=list(m.get("aliases") or []),
            )
        )
    return objects


def _select(infos: dict, info_path: Path, name_of, names, obj_ids) -> list[int]:
    """The obj_ids to load, in order: all, those of ``obj_ids``, then those named by ``names``."""
    selected = sorted(infos)
    if obj_ids is not None:
        wanted = {int(i) for i in obj_ids}
        missing = wanted - set(infos)
        if missing:
            raise KeyError(f"obj_ids {sorted(missing)} not in {info_path} (it has {selected})")
        selected = [i for i in selected if i in wanted]
    if names:
        by_name = {name_of(i): i for i in selected}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"unknown object(s) {missing} in {info_path.parent}; it has: {', '.join(by_name)}")
        selected = [by_name[n] for n in names]
    return selected
