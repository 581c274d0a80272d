"""The object catalogue: what the package knows about each object it can pose.

One :class:`ObjectModel` per object: its mesh (in metres), diameter, symmetry,
keypoints and named grasp frames. Catalogues come from YAML files in
``config/objects/`` (schema below) or from a BOP ``models/`` folder
(``models_info.json``; see :func:`load_bop_models`).

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
      transforms: []              # discrete: list of 4x4 (row-major, metres)
    keypoints: box                # box = 8 corners + centre; fps:N = N surface points; or a list of [x, y, z]
    grasp_frames:                 # named frames in the object frame
      handle: {xyz: [0, 0, -0.05], quat: [0, 0, 0, 1], description: "the handle"}
    description: "a cordless drill" # optional, for prompts
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .transforms import make_T, quat_to_matrix


@dataclass
class GraspFrame:
    name: str
    T: np.ndarray  # 4x4, object frame -> grasp frame, metres
    description: str = ""


@dataclass
class Symmetry:
    kind: str = "none"  # none | discrete | continuous
    transforms: list[np.ndarray] = field(default_factory=list)  # discrete 4x4, metres
    axis: np.ndarray | None = None  # continuous
    offset: np.ndarray | None = None

    @property
    def is_symmetric(self) -> bool:
        return self.kind != "none"


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
    description: str = ""

    def __post_init__(self):
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


def box_corners(bmin, bmax) -> np.ndarray:
    bmin = np.asarray(bmin, dtype=float)
    bmax = np.asarray(bmax, dtype=float)
    return np.array(
        [[x, y, z] for x in (bmin[0], bmax[0]) for y in (bmin[1], bmax[1]) for z in (bmin[2], bmax[2])]
    )


def compute_diameter(vertices) -> float:
    """Largest distance between two model points (over the convex hull, so it is exact and fast)."""
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist

    v = np.asarray(vertices, dtype=float)
    if len(v) < 2:
        return 0.0
    try:
        v = v[ConvexHull(v).vertices]
    except Exception:  # degenerate (flat) point sets: fall back to all points
        pass
    return float(pdist(v).max())


def farthest_point_sampling(points, n: int, seed: int = 0) -> np.ndarray:
    """n points spread over the surface, greedy farthest-point order (hand-written: scipy has none)."""
    pts = np.asarray(points, dtype=float)
    n = min(n, len(pts))
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(pts)))]
    dist = np.linalg.norm(pts - pts[chosen[0]], axis=1)
    for _ in range(1, n):
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
    try:
        mesh = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise ValueError(f"cannot read mesh {path}: {exc}") from exc
    if len(mesh.vertices) == 0:
        raise ValueError(f"mesh {path} has no vertices")
    scale = {"m": 1.0, "mm": 1e-3}.get(unit)
    if scale is None:
        raise ValueError(f"unit must be 'm' or 'mm', got {unit!r}")
    colors = None
    visual = getattr(mesh, "visual", None)
    if visual is not None and getattr(visual, "kind", None) == "vertex":
        colors = np.asarray(visual.vertex_colors)[:, :3].astype(np.uint8)
    elif visual is not None and getattr(visual, "kind", None) == "texture":
        colors = np.asarray(visual.to_color().vertex_colors)[:, :3].astype(np.uint8)
    return np.asarray(mesh.vertices, dtype=np.float64) * scale, np.asarray(mesh.faces, dtype=np.int64), colors


def _grasp_frames(spec: dict | None) -> dict[str, GraspFrame]:
    frames = {}
    for name, g in (spec or {}).items():
        R = quat_to_matrix(g.get("quat", [0, 0, 0, 1]))
        frames[name] = GraspFrame(name, make_T(R, g.get("xyz", [0, 0, 0])), g.get("description", name))
    return frames


def _symmetry(spec: dict | None) -> Symmetry:
    spec = spec or {}
    kind = spec.get("type", "none")
    if kind not in ("none", "discrete", "continuous"):
        raise ValueError(f"symmetry type must be none, discrete or continuous; got {kind!r}")
    return Symmetry(
        kind=kind,
        transforms=[np.asarray(T, dtype=float).reshape(4, 4) for T in spec.get("transforms", [])],
        axis=np.asarray(spec["axis"], dtype=float) if "axis" in spec else None,
        offset=np.asarray(spec.get("offset", [0, 0, 0]), dtype=float),
    )


def load_object_yaml(path) -> ObjectModel:
    import yaml

    path = Path(path)
    with open(path) as f:
        d = yaml.safe_load(f)
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
        symmetry=_symmetry(d.get("symmetry")),
        keypoint_spec=d.get("keypoints", "box"),
        grasp_frames=_grasp_frames(d.get("grasp_frames")),
        description=d.get("description", ""),
    )


class Catalogue:
    """Objects by name (and by class id). Unknown names raise a KeyError that lists the known ones."""

    def __init__(self, objects: list[ObjectModel]):
        self.objects = {o.name: o for o in objects}
        self.by_id = {o.class_id: o for o in objects}

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

    def subset(self, names) -> "Catalogue":
        return Catalogue([self[n] for n in names])

    @classmethod
    def from_dir(cls, directory, names=None) -> "Catalogue":
        """All ``*.yaml`` entries of a directory (optionally only the given names)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"catalogue directory not found: {directory}")
        objects = [load_object_yaml(p) for p in sorted(directory.glob("*.yaml"))]
        cat = cls(objects)
        return cat.subset(names) if names else cat


def default_catalogue_dir() -> Path:
    """config/objects of this package: the source tree, or the installed share directory."""
    here = Path(__file__).resolve().parents[2] / "config" / "objects"
    if here.is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("vfm_pose_ros")) / "config" / "objects"
    except Exception:
        return here
