"""The object catalogue: what the package knows about each object it can pose.

One :class:`ObjectModel` per object: its mesh (in metres), diameter, symmetry,
keypoints, named grasp frames, and the words people use for it (aliases and a
description, read by the prompt resolver). Catalogues come from YAML files in
``config/objects/`` (schema below), from a BOP ``models/`` folder (core/bop_models.py),
or from a single mesh; :func:`vfm_pose_ros.core.catalogue_loader.load_catalogue` takes any of them.

YAML schema (one file per object)::

    name: driller_like            # unique name; also the ROS class_id and TF child frame
    class_id: 1                   # integer id (BOP obj_id)
    mesh: meshes/driller_like.ply # relative to the YAML file, or absolute
    unit: m                       # unit of the mesh file: m or mm
    diameter: null                # metres; computed from the mesh when absent
    symmetry:                     # none | discrete | continuous
      type: none
      axis: [0, 0, 1]             # continuous: axis in the object frame
      offset: [0, 0, 0]           # continuous: a point on the axis, metres
      transforms: []              # discrete: list of 4x4 (row-major, metres), identity excluded (as BOP);
                                  # a continuous symmetry may list some too (combined as BOP does)
    keypoints: box                # box = 8 corners + centre; fps:N = N farthest-point surface points
                                  # (seeded at the box centre) + centre; or a list of [x, y, z]
    grasp_frames:                 # named frames in the object frame
      handle: {xyz: [0, 0, -0.05], quat: [0, 0, 0, 1], description: "the handle", aliases: [grip]}
    description: "a cordless drill" # optional, for prompts: what it is, its colours, shape and use
    aliases: [drill, power drill]  # optional, for prompts: other names people call it by
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .symmetry import Symmetry, symmetry_from_spec
from .transforms import make_T, quat_to_matrix


@dataclass
class GraspFrame:
    name: str
    T: np.ndarray  # 4x4, object frame -> grasp frame, metres
    description: str = ""  # a noun phrase that reads after "grasp it by": "the orange pistol-grip handle"
    aliases: list[str] = field(default_factory=list)  # other words for the part: "grip", "trigger"


@dataclass
class ObjectModel:
    """Everything about one object, in metres, in the object frame."""

    name: str
    class_id: int
    vertices: np.ndarray  # Nx3 metres
    faces: np.ndarray | None = None  # Mx3 int
    vertex_colors: np.ndarray | None = None  # Nx3 uint8
    mesh_path: Path | None = None
    diameter: float = 0.0  # metres
    symmetry: Symmetry = field(default_factory=Symmetry)
    keypoint_spec: object = "box"
    grasp_frames: dict[str, GraspFrame] = field(default_factory=dict)
    description: str = ""  # what it is, colours, shape, use: "a cordless drill with a green body ..."
    aliases: list[str] = field(default_factory=list)  # other names people call it by: "drill", "power drill"

    def __post_init__(self):
        self.aliases = list(self.aliases or [])
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        if not self.diameter:
            self.diameter = compute_diameter(self.vertices)
        self._keypoints: np.ndarray | None = None

    @property
    def symmetric(self) -> bool:
        return self.symmetry.is_symmetric

    @property
    def bbox_min(self) -> np.ndarray:
        return self.vertices.min(axis=0)

    @property
    def bbox_max(self) -> np.ndarray:
        return self.vertices.max(axis=0)

    @property
    def bbox_center(self) -> np.ndarray:
        return 0.5 * (self.bbox_min + self.bbox_max)

    @property
    def bbox_size(self) -> np.ndarray:
        return self.bbox_max - self.bbox_min

    def box_corners(self) -> np.ndarray:
        """The 8 corners of the axis-aligned box in the object frame (8x3)."""
        return box_corners(self.bbox_min, self.bbox_max)

    @property
    def keypoints(self) -> np.ndarray:
        """The object's 3D keypoints (Kx3): the one definition used by heads, PnP and drawings."""
        if self._keypoints is None:
            self._keypoints = make_keypoints(self.vertices, self.keypoint_spec)
        return self._keypoints

    def eval_points(self, max_points: int = 2000, seed: int = 0) -> np.ndarray:
        """Model points for ADD/ADD-S: the vertices, subsampled deterministically when many."""
        v = self.vertices
        if len(v) <= max_points:
            return v
        idx = np.random.default_rng(seed).choice(len(v), max_points, replace=False)
        return v[np.sort(idx)]


def surface_samples(obj: ObjectModel, n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spread surface points (metres) with outward normals: what ICP and metrics need of a mesh."""
    if obj.faces is not None and len(obj.faces):
        import trimesh

        mesh = trimesh.Trimesh(obj.vertices, obj.faces, process=False)
        pts, fidx = trimesh.sample.sample_surface_even(mesh, n, seed=seed)
        if len(pts) < n // 2:  # sample_surface_even rejects points; top up uniformly when it was too strict
            pts, fidx = trimesh.sample.sample_surface(mesh, n, seed=seed)
        return np.asarray(pts), np.asarray(mesh.face_normals[fidx])
    from .icp import estimate_normals

    pts = obj.eval_points(n, seed)
    return pts, estimate_normals(pts)


def box_corners(bmin, bmax) -> np.ndarray:
    bmin = np.asarray(bmin, dtype=float)
    bmax = np.asarray(bmax, dtype=float)
    return np.array(
        [[x, y, z] for x in (bmin[0], bmax[0]) for y in (bmin[1], bmax[1]) for z in (bmin[2], bmax[2])]
    )


def compute_diameter(vertices) -> float:
    """Largest distance between two model points (over the convex hull, so it is exact and fast)."""
    from scipy.spatial import ConvexHull, QhullError
    from scipy.spatial.distance import pdist

    v = np.asarray(vertices, dtype=float)
    if len(v) < 2:
        return 0.0
    if len(v) > 4:
        try:
            v = v[ConvexHull(v).vertices]
        except QhullError:  # degenerate (flat or collinear) point sets: all points, still exact
            pass
    return float(pdist(v).max())


def farthest_point_sampling(points, n: int, seed: int = 0, start: str = "centre") -> np.ndarray:
    """n points spread over the surface, greedy farthest-point order (hand-written: scipy has none).

    ``start="centre"`` (default) seeds the greedy search with the bounding-box centre, which is not
    itself returned (PVNet's keypoint choice): the result is deterministic and begins at the
    extremities. ``start="random"`` seeds with a random point (``seed``), which is returned.
    """
    pts = np.asarray(points, dtype=float)
    n = min(n, len(pts))
    if n <= 0:
        return pts[:0]
    if start == "centre":
        centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
        chosen: list[int] = []
        dist = np.linalg.norm(pts - centre, axis=1)
    elif start == "random":
        chosen = [int(np.random.default_rng(seed).integers(len(pts)))]
        dist = np.linalg.norm(pts - pts[chosen[0]], axis=1)
    else:
        raise ValueError(f"start must be 'centre' or 'random', got {start!r}")
    while len(chosen) < n:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[i], axis=1))
    return pts[chosen]


def make_keypoints(vertices, spec) -> np.ndarray:
    """Keypoints from a spec: 'box' (8 corners + box centre), 'fps:N', or an explicit Kx3 list (metres)."""
    v = np.asarray(vertices, dtype=float)
    if spec is None or spec == "box":
        bmin, bmax = v.min(axis=0), v.max(axis=0)
        return np.vstack([box_corners(bmin, bmax), 0.5 * (bmin + bmax)])
    if isinstance(spec, str) and spec.startswith("fps:"):
        n = int(spec.split(":", 1)[1])
        centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
        return np.vstack([farthest_point_sampling(v, n), centre])
    arr = np.asarray(spec, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"keypoints must be 'box', 'fps:N' or a list of [x, y, z]; got {spec!r}")
    return arr


def load_mesh(path, unit: str = "m"):
    """Read a PLY/OBJ mesh with trimesh; returns (vertices in metres, faces, vertex colours or None)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path} (check the catalogue's 'mesh' path)")
    scale = {"m": 1.0, "mm": 1e-3}.get(unit)
    if scale is None:
        raise ValueError(f"unit must be 'm' or 'mm', got {unit!r}")
    try:
        mesh = trimesh.load(path, process=False)
        if isinstance(mesh, trimesh.Scene):
            mesh = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise ValueError(f"cannot read mesh {path}: {exc} (corrupt or not a mesh: re-export it as PLY, OBJ or STL)") \
            from exc
    if len(mesh.vertices) == 0:
        raise ValueError(f"mesh {path} has no vertices (an empty export: re-export the object's mesh)")
    if isinstance(mesh, trimesh.PointCloud):  # a PLY without faces: keep the points (metrics need only vertices)
        colors = np.asarray(mesh.colors)[:, :3].astype(np.uint8) if len(mesh.colors) else None
        return np.asarray(mesh.vertices, dtype=np.float64) * scale, None, colors
    colors = None
    visual = getattr(mesh, "visual", None)
    try:
        if visual is not None and getattr(visual, "kind", None) == "vertex":
            colors = np.asarray(visual.vertex_colors)[:, :3].astype(np.uint8)
        elif visual is not None and getattr(visual, "kind", None) == "texture":
            colors = np.asarray(visual.to_color().vertex_colors)[:, :3].astype(np.uint8)
    except (ValueError, AttributeError, TypeError, IndexError):  # a texture trimesh cannot sample: no colours
        colors = None
    return np.asarray(mesh.vertices, dtype=np.float64) * scale, np.asarray(mesh.faces, dtype=np.int64), colors


def read_aliases(entry: dict, where: str = "") -> list[str]:
    """An entry's ``aliases`` as a clean list of strings; a bare string is one alias. Raises on other types."""
    raw = entry.get("aliases") or []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(a, str) for a in raw):
        raise ValueError(f"{where}'aliases' must be a list of strings, e.g. aliases: [drill, power drill]; got {raw!r}")
    entry["aliases"] = [" ".join(a.split()) for a in raw if a.strip()]
    return entry["aliases"]


def grasp_frames_from_spec(spec: dict | None, where: str = "") -> dict[str, GraspFrame]:
    """Grasp frames from a ``grasp_frames:`` mapping (name -> xyz, quat, description, aliases)."""
    frames = {}
    if spec is not None and not isinstance(spec, dict):
        raise ValueError(f"{where}'grasp_frames' must map frame names to {{xyz, quat, description}}; got {spec!r}")
    for name, g in (spec or {}).items():
        g = dict(g or {})
        R = quat_to_matrix(g.get("quat", [0, 0, 0, 1]))
        frames[name] = GraspFrame(name, make_T(R, g.get("xyz", [0, 0, 0])), g.get("description", name),
                                  read_aliases(g, f"{where}grasp frame {name!r}: "))
    return frames


_grasp_frames = grasp_frames_from_spec  # the name data.procedural imports


def load_object_yaml(path) -> ObjectModel:
    import yaml

    path = Path(path)
    with open(path) as f:
        d = yaml.safe_load(f)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a catalogue entry must be a mapping (name, class_id, mesh, ...)")
    for key in ("name", "class_id", "mesh"):
        if key not in d:
            raise ValueError(f"{path}: catalogue entry is missing '{key}'")
    mesh_path = Path(d["mesh"])
    if not mesh_path.is_absolute():
        mesh_path = path.parent / mesh_path
    unit = d.get("unit", "m")
    vertices, faces, colors = load_mesh(mesh_path, unit)
    return ObjectModel(
        name=d["name"],
        class_id=int(d["class_id"]),
        vertices=vertices,
        faces=faces,
        vertex_colors=colors,
        mesh_path=mesh_path,
        diameter=float(d.get("diameter") or 0.0),
        symmetry=symmetry_from_spec(d.get("symmetry"), f"{path}: "),
        keypoint_spec=d.get("keypoints", "box"),
        grasp_frames=grasp_frames_from_spec(d.get("grasp_frames"), f"{path}: "),
        description=d.get("description") or "",
        aliases=read_aliases(d, f"{path}: "),
    )


class Catalogue:
    """Objects by name (and by class id). Unknown names raise a KeyError that lists the known ones."""

    def __init__(self, objects: list[ObjectModel]):
        self.objects: dict[str, ObjectModel] = {}
        self.by_id: dict[int, ObjectModel] = {}
        for o in objects:
            if o.name in self.objects:
                raise ValueError(f"two catalogue objects are named {o.name!r}: names must be unique")
            if o.class_id in self.by_id:
                other = self.by_id[o.class_id].name
                raise ValueError(f"objects {other!r} and {o.name!r} share class_id {o.class_id}: ids must be unique")
            self.objects[o.name] = o
            self.by_id[o.class_id] = o

    def __getitem__(self, name: str) -> ObjectModel:
        try:
            return self.objects[name]
        except KeyError:
            raise KeyError(f"unknown object {name!r}; the catalogue has: {', '.join(sorted(self.objects))}") from None

    def __contains__(self, name) -> bool:
        return name in self.objects

    def __iter__(self):
        return iter(self.objects.values())

    def __len__(self) -> int:
        return len(self.objects)

    @property
    def names(self) -> list[str]:
        return list(self.objects)

    def get_by_id(self, class_id: int) -> ObjectModel:
        try:
            return self.by_id[int(class_id)]
        except KeyError:
            raise KeyError(f"no object with class_id {class_id}; the catalogue has ids {sorted(self.by_id)}") from None

    def subset(self, names) -> Catalogue:
        return Catalogue([self[n] for n in names])

    @classmethod
    def from_dir(cls, directory, names=None) -> Catalogue:
        """All ``*.yaml`` entries of a directory (optionally only the given names)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"catalogue directory not found: {directory} (give a folder of object YAML "
                                    "entries, e.g. the package's config/objects)")
        paths = sorted(directory.glob("*.yaml"))
        if not paths:
            raise FileNotFoundError(f"no *.yaml object entries in {directory} (see the schema in core/catalogue.py)")
        cat = cls([load_object_yaml(p) for p in paths])
        return cat.subset(names) if names else cat

    @classmethod
    def from_bop_models(cls, models_dir, names=None, id_names: dict | None = None, obj_ids=None) -> Catalogue:
        """A catalogue from a BOP ``models/`` folder (see :func:`vfm_pose_ros.core.bop_models.load_bop_models`)."""
        from .bop_models import load_bop_models

        return cls(load_bop_models(models_dir, names=names, id_names=id_names, obj_ids=obj_ids))

    @classmethod
    def load(cls, path, names=None, unit: str | None = None) -> Catalogue:
        """Any catalogue source: see :func:`vfm_pose_ros.core.catalogue_loader.load_catalogue`."""
        from .catalogue_loader import load_catalogue

        return load_catalogue(path, names=names, unit=unit)


_MOVED_TO_BOP_MODELS = ("LINEMOD_NAMES", "CATALOGUE_JSON", "bop_object_name", "object_metadata", "looks_like_linemod",
                        "find_models_info", "read_name_mapping", "load_bop_models")


def __getattr__(name: str):
    """The BOP-folder names that live in core/bop_models.py, still importable from here."""
    if name in _MOVED_TO_BOP_MODELS:
        from . import bop_models

        return getattr(bop_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
