"""Procedural default objects, made by code so the package needs no external data.

* ``driller_like``: an asymmetric cordless drill about the size of the LM-O
  driller (motor body, chuck and bit, tilted handle, trigger, battery pack, a
  logo on one side only), each part its own colour.
* ``can_like``: a drinks can (bottom bevel, side wall with a band, neck, lid rim).
  Geometry and colours are surfaces of revolution about the object z axis, so
  its continuous symmetry is real (up to the ``sections`` facets).

Every part is a separate vertex set, so the renderer's smooth shading keeps the
creases between parts sharp. :func:`write_default_objects` (re)writes the PLY
meshes (metres, vertex colours) and the catalogue YAML entries deterministically::

    python -m vfm_pose_ros.data.procedural [--out config/objects] [--faces 10000]
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.transforms import matrix_to_quat

DEFAULT_SECTIONS = 48
OBJECT_NAMES = ("driller_like", "can_like")


@dataclass
class ProceduralObject:
    """A generated mesh with what its catalogue entry needs (metres, object frame centred on the bounding box)."""

    name: str
    class_id: int
    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray  # Nx3 uint8
    symmetry: dict
    grasp_frames: dict  # name -> {xyz, quat, description, aliases}
    description: str
    aliases: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------ building blocks
class _Builder:
    """Accumulates coloured parts, each with its own vertices (sharp creases between parts)."""

    def __init__(self):
        self.v, self.f, self.c = [], [], []
        self.n = 0

    def add(self, vertices, faces, colors):
        vertices = np.asarray(vertices, dtype=np.float64)
        colors = np.asarray(colors, dtype=np.uint8)
        if colors.ndim == 1:
            colors = np.tile(colors[:3], (len(vertices), 1))
        self.v.append(vertices)
        self.f.append(np.asarray(faces, dtype=np.int64) + self.n)
        self.c.append(colors)
        self.n += len(vertices)

    def result(self):
        return np.vstack(self.v), np.vstack(self.f), np.vstack(self.c)


def _revolve(profile, sections: int):
    """Surface of revolution of an (r, z) polyline about z (trimesh). Outward faces when the polyline runs
    counter-clockwise in the (r, z) half-plane (bottom centre -> rim -> up -> top centre)."""
    import trimesh

    mesh = trimesh.creation.revolve(np.asarray(profile, dtype=np.float64), sections=sections)
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def _box(size, center, rotation=None):
    """Box with one vertex set per face (flat shading stays flat), outward faces (trimesh)."""
    import trimesh

    mesh = trimesh.creation.box(extents=size)
    mesh.unmerge_vertices()
    v = np.asarray(mesh.vertices)
    if rotation is not None:
        v = v @ np.asarray(rotation).T
    return v + np.asarray(center, dtype=np.float64), np.asarray(mesh.faces)


def _rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


_Z_TO_X = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # maps the revolve axis (z) onto +x


def _x_cylinder_parts(profiles, sections, center):
    """Revolved pieces whose axis is the object x axis through ``center``."""
    for prof in profiles:
        v, f = _revolve(prof, sections)
        yield v @ _Z_TO_X.T + np.asarray(center, dtype=np.float64), f


def _centre(vertices, frames):
    """Shift so the bounding-box centre is the origin (as BOP models are), grasp frames too."""
    c = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    for g in frames.values():
        g["xyz"] = [round(float(x), 5) for x in np.asarray(g["xyz"]) - c]
    return vertices - c


# ----------------------------------------------------------------------- objects
def driller_like(sections: int = DEFAULT_SECTIONS) -> ProceduralObject:
    """A cordless drill, about 20.5 x 7 x 17.5 cm (diameter about 24 cm); x points to the chuck, z up."""
    b = _Builder()
    body_c, body_r = (0.0, 0.0, 0.05), 0.034
    # motor body along x from -0.08 to 0.06: rear cap, wall, front taper, front cap (local z = object x)
    body = [
        [(0.0, -0.08), (body_r, -0.08)],
        [(body_r, -0.08), (body_r, 0.045)],
        [(body_r, 0.045), (0.027, 0.06)],
        [(0.027, 0.06), (0.0, 0.06)],
    ]
    for v, f in _x_cylinder_parts(body, sections, body_c):
        b.add(v, f, (30, 130, 100))
    chuck = [[(0.0, 0.06), (0.017, 0.06)], [(0.017, 0.06), (0.017, 0.095)], [(0.017, 0.095), (0.011, 0.105)],
             [(0.011, 0.105), (0.0, 0.105)]]
    for v, f in _x_cylinder_parts(chuck, sections, body_c):
        b.add(v, f, (55, 55, 60))
    bit = [[(0.004, 0.105), (0.004, 0.12)], [(0.004, 0.12), (0.0, 0.125)]]
    for v, f in _x_cylinder_parts(bit, max(8, sections // 3), body_c):
        b.add(v, f, (190, 190, 200))
    handle_c, tilt = (-0.025, 0.0, -0.005), 12.0
    b.add(*_box((0.036, 0.03, 0.11), handle_c, _rot_y(-tilt)), (220, 110, 30))
    b.add(*_box((0.012, 0.014, 0.022), (0.004, 0.0, 0.012)), (200, 30, 30))  # trigger
    b.add(*_box((0.085, 0.065, 0.035), (-0.035, 0.0, -0.0725)), (40, 55, 140))  # battery pack
    b.add(*_box((0.04, 0.003, 0.016), (-0.03, body_r, 0.05)), (240, 210, 40))  # logo, +y side only
    v, f, c = b.result()
    frames = {
        "handle": {"xyz": list(handle_c), "quat": matrix_to_quat(_rot_y(-tilt)).round(6).tolist(),
                   "description": "the orange pistol-grip handle with the red trigger, where a hand holds the drill",
                   "aliases": ["handle", "grip", "pistol grip", "trigger", "handgrip"]},
        "body": {"xyz": [-0.01, 0.0, 0.05], "quat": [0.0, 0.0, 0.0, 1.0],
                 "description": "the green motor body, the round barrel along the top of the drill",
                 "aliases": ["body", "motor", "housing", "barrel", "top of the drill"]},
        "chuck": {"xyz": [0.0825, 0.0, 0.05], "quat": [0.0, 0.0, 0.0, 1.0],
                  "description": "the grey chuck at the front, which clamps the drill bit",
                  "aliases": ["chuck", "front", "nose", "bit holder", "tip", "drill bit"]},
    }
    v = _centre(v, frames)
    return ProceduralObject(
        "driller_like", 1, v, f, c, {"type": "none"}, frames,
        "a cordless drill with a green body, an orange handle and a blue battery pack: a hand-held power tool "
        "for drilling holes and driving screws, L-shaped, about 20 cm long",
        ["drill", "driller", "cordless drill", "power drill", "electric drill", "battery drill", "drill driver",
         "screw gun", "power tool"],
    )


def can_like(sections: int = 64) -> ProceduralObject:
    """A drinks can, radius 3.3 cm, height 12.25 cm, axis z; colours depend only on height (symmetric)."""
    r, silver, red, white = 0.033, (185, 185, 192), (200, 30, 40), (235, 235, 235)
    pieces = [
        ([(0.0, -0.057), (0.024, -0.0605), (0.029, -0.061)], silver),  # domed bottom
        ([(0.029, -0.061), (r, -0.054)], silver),  # bottom bevel
        ([(r, -0.054), (r, -0.012)], red),
        ([(r, -0.012), (r, 0.014)], white),  # band
        ([(r, 0.014), (r, 0.048)], red),
        ([(r, 0.048), (0.0285, 0.0585)], silver),  # neck
        ([(0.0285, 0.0585), (0.0292, 0.0605), (0.0285, 0.0615), (0.0275, 0.0605), (0.027, 0.0575)], silver),  # rim
        ([(0.027, 0.0575), (0.0, 0.0575)], (160, 160, 168)),  # lid
    ]
    b = _Builder()
    for prof, col in pieces:
        v, f = _revolve(prof, sections)
        b.add(v, f, col)
    v, f, c = b.result()
    frames = {
        "body": {"xyz": [0.0, 0.0, 0.0], "quat": [0.0, 0.0, 0.0, 1.0],
                 "description": "the side of the can, the red wall with the white band",
                 "aliases": ["side", "body", "wall", "middle", "label"]},
        "top": {"xyz": [0.0, 0.0, 0.0575], "quat": [0.0, 0.0, 0.0, 1.0],
                "description": "the silver lid on top, with the rim and the ring pull",
                "aliases": ["lid", "top", "rim", "ring pull", "opening"]},
    }
    v = _centre(v, frames)
    offset = [0.0, 0.0, 0.0]  # the axis passes through the origin after centring (x, y are symmetric)
    return ProceduralObject(
        "can_like", 2, v, f, c, {"type": "continuous", "axis": [0.0, 0.0, 1.0], "offset": offset}, frames,
        "a red drinks can with a white band: a shiny metal cylinder about 12 cm tall with a silver top, "
        "holding a soft drink such as cola or soda",
        ["can", "drinks can", "soda can", "cola can", "coke can", "tin can", "beverage can", "soft drink",
         "aluminium can"],
    )


_MAKERS = {"driller_like": driller_like, "can_like": can_like}


def make_object(name: str, faces: int | None = None) -> ProceduralObject:
    """The named procedural object; with ``faces``, round sections chosen so the mesh has about that many faces."""
    if name not in _MAKERS:
        raise KeyError(f"unknown procedural object {name!r}; choose from: {', '.join(_MAKERS)}")
    make = _MAKERS[name]
    if faces is None:
        return make()
    # face count is affine in the number of sections: fit it from two builds
    f8, f16 = len(make(8).faces), len(make(16).faces)
    slope = (f16 - f8) / 8.0
    sections = max(8, int(round(8 + (faces - f8) / slope)))
    return make(sections)


def to_object_model(obj: ProceduralObject):
    """An in-memory catalogue ObjectModel (no files)."""
    from ..core.catalogue import ObjectModel, _grasp_frames
    from ..core.symmetry import symmetry_from_spec

    return ObjectModel(
        name=obj.name, class_id=obj.class_id, vertices=obj.vertices, faces=obj.faces,
        vertex_colors=obj.vertex_colors, symmetry=symmetry_from_spec(obj.symmetry), keypoint_spec="box",
        grasp_frames=_grasp_frames(obj.grasp_frames), description=obj.description, aliases=list(obj.aliases),
    )


def write_mesh_ply(path, vertices, faces, colors) -> Path:
    """Binary PLY with per-vertex colours (trimesh's exporter)."""
    import trimesh

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=colors, process=False)
    path.write_bytes(mesh.export(file_type="ply", encoding="binary"))
    return path


def write_object(obj: ProceduralObject, out_dir, mesh_name: str | None = None) -> Path:
    """Write ``meshes/<name>.ply`` and ``<name>.yaml`` (catalogue schema of core/catalogue.py) under out_dir."""
    import yaml

    out_dir = Path(out_dir)
    mesh_rel = f"meshes/{mesh_name or obj.name}.ply"
    write_mesh_ply(out_dir / mesh_rel, obj.vertices, obj.faces, obj.vertex_colors)
    entry = {
        "name": obj.name,
        "class_id": obj.class_id,
        "mesh": mesh_rel,
        "unit": "m",
        "diameter": None,
        "symmetry": obj.symmetry,
        "keypoints": "box",
        "grasp_frames": obj.grasp_frames,
        "description": obj.description,
        "aliases": list(obj.aliases),
    }
    yaml_path = out_dir / f"{obj.name}.yaml"
    header = "# Generated by vfm_pose_ros.data.procedural (python -m vfm_pose_ros.data.procedural); do not edit.\n"
    yaml_path.write_text(header + yaml.safe_dump(entry, sort_keys=False, default_flow_style=None))
    return yaml_path


def write_default_objects(out_dir=None, names=OBJECT_NAMES, faces: int | None = None) -> list[Path]:
    """(Re)generate the default objects deterministically into out_dir (default: the package's config/objects)."""
    if out_dir is None:
        from ..paths import default_catalogue_dir

        out_dir = default_catalogue_dir()
    return [write_object(make_object(n, faces), out_dir) for n in names]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write the procedural default objects (PLY + catalogue YAML).")
    parser.add_argument("--out", default=None, help="catalogue directory (default: the package's config/objects)")
    parser.add_argument("--objects", default=",".join(OBJECT_NAMES), help="comma-separated names")
    parser.add_argument("--faces", type=int, default=None, help="approximate face count (e.g. 10000 for benchmarks)")
    args = parser.parse_args(argv)
    for p in write_default_objects(args.out, [n for n in args.objects.split(",") if n], args.faces):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
