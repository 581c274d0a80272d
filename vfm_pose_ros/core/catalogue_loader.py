"""One catalogue loader for every command and node: whatever the user points at, the same objects come back.

Accepted sources (:func:`catalogue_source` says which one a path is):

* a YAML catalogue directory (``config/objects``; entries as in core/catalogue.py), or one entry's ``.yaml``;
* a BOP ``models/`` or ``models_eval/`` folder (``models_info.json`` + ``obj_XXXXXX.ply`` in mm; names as
  in core/bop_models.py);
* a BOP dataset root, e.g. one ``vfm-pose synth`` wrote (its own ``models/``, else ``models_eval/``);
* a single mesh file (PLY, OBJ, STL, OFF, GLB/GLTF): one object named after the file, in the ``unit``
  given, else guessed from its size.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..paths import default_catalogue_dir
from .catalogue import Catalogue, ObjectModel, load_mesh

MESH_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb", ".gltf")
UNITS = ("m", "mm")
# an object over this size in the file's numbers is taken for millimetres when no unit is given (no
# graspable object is 5 m long; few are under 5 mm)
MM_GUESS_ABOVE = 5.0


def guess_unit(extent: float) -> tuple[str, str]:
    """(unit, why) for a mesh whose largest bounding-box side is ``extent`` in the file's own numbers."""
    if extent > MM_GUESS_ABOVE:
        return "mm", f"its largest side is {extent:.4g} in file units: too big for metres, so millimetres"
    return "m", f"its largest side is {extent:.4g} in file units: metres (pass --unit mm if it is millimetres)"


def object_name_from_file(path) -> str:
    """A catalogue name from a file name: lower case, words joined by '_' ('Power Drill.ply' -> 'power_drill')."""
    name = re.sub(r"[^a-z0-9]+", "_", Path(path).stem.lower()).strip("_")
    return name if name and not name[0].isdigit() else f"obj_{name}"


def _bop_models_folder(path: Path, prefer_eval: bool) -> Path | None:
    if (path / "models_info.json").is_file():
        return path
    order = ("models_eval", "models") if prefer_eval else ("models", "models_eval")
    for sub in order:
        if (path / sub / "models_info.json").is_file():
            return path / sub
    return None


def catalogue_source(path, prefer_eval: bool = False) -> tuple[str, Path]:
    """(kind, path to read) for a catalogue source: kind is yaml-dir, yaml-file, bop-models or mesh.

    Raises FileNotFoundError / ValueError with one line that says what was expected.
    """
    path = Path(path).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            return "yaml-file", path
        if suffix in MESH_SUFFIXES:
            return "mesh", path
        if path.name == "models_info.json":
            return "bop-models", path.parent
        raise ValueError(f"{path} is not a catalogue: give a YAML catalogue folder, a BOP models folder, a dataset "
                         f"root or a mesh file ({', '.join(MESH_SUFFIXES)})")
    if not path.is_dir():
        raise FileNotFoundError(f"catalogue not found: {path} (give a YAML catalogue folder such as config/objects, "
                                "a BOP models folder, a dataset root or a mesh file)")
    models = _bop_models_folder(path, prefer_eval)
    if models is not None:
        return "bop-models", models
    if any(path.glob("*.yaml")):
        return "yaml-dir", path
    if any(path.glob("obj_*.ply")):
        raise FileNotFoundError(f"{path} holds obj_*.ply meshes but no models_info.json: a BOP models folder needs "
                                "one (diameters and symmetries in mm; see the BOP format), or add each mesh with "
                                "vfm-pose add-object")
    raise FileNotFoundError(f"no catalogue in {path}: expected *.yaml object entries (vfm-pose add-object writes "
                            "them), a BOP models folder (models_info.json) or a dataset root holding models/")


def load_mesh_object(path, unit: str | None = None, name: str | None = None, class_id: int = 1) -> ObjectModel:
    """One object from a mesh file; without ``unit`` it is guessed from the mesh's size (:func:`guess_unit`)."""
    if unit is not None and unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}; got {unit!r}")
    vertices, faces, colors = load_mesh(path, "m")
    if unit is None:
        unit, _ = guess_unit(float(np.ptp(vertices, axis=0).max()))
    scale = 1e-3 if unit == "mm" else 1.0
    return ObjectModel(name=name or object_name_from_file(path), class_id=int(class_id), vertices=vertices * scale,
                       faces=faces, vertex_colors=colors, mesh_path=Path(path))


def load_catalogue(source=None, names=None, unit: str | None = None, id_names: dict | None = None,
                   prefer_eval: bool = False) -> Catalogue:
    """The catalogue at ``source`` (None: the package's config/objects), optionally only ``names``.

    ``unit`` is the unit of a single mesh file (YAML entries state theirs; BOP models are millimetres, and
    another unit for them is refused). ``id_names`` (obj_id -> name) renames BOP objects, e.g. as a
    dataset's ground truth names them. ``prefer_eval`` picks a dataset root's ``models_eval/`` first.
    """
    from .catalogue import load_object_yaml

    if unit is not None and unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}; got {unit!r}")
    names = [names] if isinstance(names, str) else (list(names) if names else None)
    kind, path = catalogue_source(default_catalogue_dir() if source is None else source, prefer_eval)
    if kind == "bop-models":
        if unit not in (None, "mm"):
            raise ValueError(f"{path} is a BOP models folder, whose meshes are millimetres by definition; drop "
                             f"--unit {unit}")
        return Catalogue.from_bop_models(path, names=names, id_names=id_names)
    if kind == "yaml-dir":
        return Catalogue.from_dir(path, names=names)
    catalogue = Catalogue([load_object_yaml(path) if kind == "yaml-file" else load_mesh_object(path, unit)])
    return catalogue.subset(names) if names else catalogue


def parse_object_names(text: str | None) -> list[str] | None:
    """``--objects a,b`` as a list (None when not given or empty)."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None
