"""add one object to a YAML catalogue from its mesh: checks the mesh, writes the entry, says what to do next

Example (the LM-O driller, a BOP mesh in millimetres)::

    vfm-pose add-object ../shared/data/lmo_models/models/obj_000008.ply --name driller --unit mm \\
        --catalogue my_objects --alias drill --alias "power drill" \\
        --description "a green and black cordless drill" --grasp "handle:-30,0,-60:the black pistol-grip handle"

Grasp frame positions are in the mesh's unit (as read off the CAD model), written in metres.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")  # also a TF frame name and a ROS class_id
AXES = {"x": [1.0, 0.0, 0.0], "y": [0.0, 1.0, 0.0], "z": [0.0, 0.0, 1.0]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mesh", type=Path, help="the object's mesh (PLY, OBJ, STL, OFF, GLB)")
    p.add_argument("--name", required=True, help="catalogue name: lower case, digits and _ (also its TF frame)")
    p.add_argument("--catalogue", type=Path, default=Path("objects"),
                   help="YAML catalogue folder to write to (created; default: ./objects)")
    p.add_argument("--unit", choices=("m", "mm"), default=None, help="the mesh's unit (default: guessed from its size)")
    p.add_argument("--class-id", type=int, default=None, help="integer id (default: one above the folder's largest)")
    p.add_argument("--symmetry", default="none",
                   help="none | continuous:AXIS (a body of revolution) | discrete:AXIS:N (N-fold about AXIS); "
                        "AXIS is x, y, z or ax,ay,az in the object frame")
    p.add_argument("--grasp", action="append", default=[], metavar="NAME:X,Y,Z:DESCRIPTION",
                   help="a named grasp frame (position in the mesh's unit; repeatable)")
    p.add_argument("--alias", action="append", default=[], help="another name people use for it (repeatable)")
    p.add_argument("--description", default="", help="what it is, its colours, shape and use (for prompts)")
    p.add_argument("--keypoints", default="box", help="box (default) or fps:N")
    p.add_argument("--link", action="store_true", help="refer to the mesh where it is instead of copying it")
    p.add_argument("--overwrite", action="store_true", help="replace an entry of the same name")


def parse_axis(text: str) -> list[float]:
    if text in AXES:
        return AXES[text]
    try:
        axis = np.asarray([float(v) for v in text.split(",")], dtype=float)
    except ValueError:
        axis = np.zeros(0)
    if axis.shape != (3,) or not np.linalg.norm(axis) > 0:
        raise ValueError(f"symmetry axis must be x, y, z or three numbers ax,ay,az; got {text!r}")
    return [float(v) for v in axis / np.linalg.norm(axis)]


def parse_symmetry(text: str) -> dict:
    """The YAML ``symmetry:`` entry for none | continuous:AXIS | discrete:AXIS:N."""
    from ..core.transforms import axis_angle_to_matrix

    kind, _, rest = text.partition(":")
    if kind == "none" and not rest:
        return {"type": "none"}
    if kind == "continuous" and rest:
        return {"type": "continuous", "axis": parse_axis(rest), "offset": [0.0, 0.0, 0.0]}
    if kind == "discrete" and rest.count(":") == 1:
        axis_text, n_text = rest.split(":")
        axis = np.asarray(parse_axis(axis_text))
        if not n_text.isdigit() or int(n_text) < 2:
            raise ValueError(f"discrete symmetry needs N >= 2 rotations (discrete:z:2 is a half-turn); got {text!r}")
        n = int(n_text)
        transforms = []
        for k in range(1, n):
            T = np.eye(4)
            T[:3, :3] = axis_angle_to_matrix(axis * 2.0 * np.pi * k / n)
            transforms.append([[round(float(v), 9) for v in row] for row in T])
        return {"type": "discrete", "transforms": transforms}
    raise ValueError(f"--symmetry must be none, continuous:AXIS or discrete:AXIS:N (e.g. continuous:z); got {text!r}")


def parse_grasp(text: str, scale: float) -> tuple[str, dict]:
    """NAME:X,Y,Z:DESCRIPTION -> (name, {xyz in metres, quat, description})."""
    parts = text.split(":", 2)
    try:
        xyz = [float(v) * scale for v in parts[1].split(",")] if len(parts) >= 2 else []
    except ValueError:
        xyz = []
    if len(parts) < 2 or not NAME_PATTERN.match(parts[0]) or len(xyz) != 3:
        raise ValueError(f"--grasp must be NAME:X,Y,Z:DESCRIPTION (e.g. handle:0,0,-50:the handle); got {text!r}")
    description = parts[2].strip() if len(parts) == 3 and parts[2].strip() else f"the {parts[0].replace('_', ' ')}"
    return parts[0], {"xyz": [round(v, 6) for v in xyz], "quat": [0.0, 0.0, 0.0, 1.0], "description": description}


def next_class_id(catalogue_dir: Path, name: str) -> int:
    import yaml

    ids = []
    for path in catalogue_dir.glob("*.yaml"):
        entry = yaml.safe_load(path.read_text()) or {}
        if isinstance(entry, dict) and entry.get("name") != name and "class_id" in entry:
            ids.append(int(entry["class_id"]))
    return max(ids, default=0) + 1


def mesh_findings(vertices, faces, unit: str, unit_reason: str) -> list[str]:
    """What a user should know about the mesh (metres): size, units, faces, watertightness, where its origin is."""
    import trimesh

    size = np.ptp(vertices, axis=0)
    notes = [f"{len(vertices)} vertices, {0 if faces is None else len(faces)} faces; unit {unit} ({unit_reason})",
             f"size {size[0] * 100:.1f} x {size[1] * 100:.1f} x {size[2] * 100:.1f} cm"]
    if not 0.005 <= size.max() <= 2.0:
        notes.append(f"WARNING: {size.max():.4g} m across is implausible for a graspable object: check --unit")
    if faces is None or not len(faces):
        notes.append("WARNING: no faces (a point cloud): it cannot be rendered, so synth/train cannot use it; "
                     "re-export the mesh with faces")
    else:
        watertight = trimesh.Trimesh(vertices, faces, process=True).is_watertight
        notes.append("watertight" if watertight else "not watertight (fine for rendering and metrics; holes show "
                                                      "as missing depth)")
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    if np.linalg.norm(centre) > 0.25 * size.max():
        notes.append(f"note: the origin is {np.linalg.norm(centre) * 100:.1f} cm from the box centre; poses are of "
                     "this origin (BOP meshes are centred)")
    return notes


def build_entry(args, mesh_ref: str, unit: str, class_id: int) -> dict:
    from ..core.catalogue import read_aliases

    scale = 1e-3 if unit == "mm" else 1.0
    grasps = dict(parse_grasp(g, scale) for g in args.grasp)
    entry = {"name": args.name, "class_id": class_id, "mesh": mesh_ref, "unit": unit, "diameter": None,
             "symmetry": parse_symmetry(args.symmetry), "keypoints": args.keypoints, "grasp_frames": grasps,
             "description": " ".join(args.description.split()), "aliases": list(args.alias)}
    read_aliases(entry, "--alias: ")
    return entry


def run(args) -> int:
    import yaml

    from ..core.catalogue import load_mesh, load_object_yaml
    from ..core.catalogue_loader import MESH_SUFFIXES, guess_unit

    if not NAME_PATTERN.match(args.name):
        raise ValueError(f"--name must be lower case letters, digits and _ starting with a letter; got {args.name!r}")
    if args.mesh.suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"{args.mesh}: not a mesh file; give one of {', '.join(MESH_SUFFIXES)}")
    raw, faces, _ = load_mesh(args.mesh, "m")
    unit, why = (args.unit, "given") if args.unit else guess_unit(float(np.ptp(raw, axis=0).max()))
    vertices = raw * (1e-3 if unit == "mm" else 1.0)
    cat_dir = args.catalogue
    yaml_path = cat_dir / f"{args.name}.yaml"
    if yaml_path.exists() and not args.overwrite:
        raise FileExistsError(f"{yaml_path} exists: pass --overwrite to replace it, or choose another --name")
    class_id = args.class_id if args.class_id is not None else next_class_id(cat_dir, args.name)
    mesh_ref = str(args.mesh.resolve()) if args.link else f"meshes/{args.name}{args.mesh.suffix.lower()}"
    entry = build_entry(args, mesh_ref, unit, class_id)  # bad options end here, before anything is written
    cat_dir.mkdir(parents=True, exist_ok=True)
    if not args.link:
        (cat_dir / "meshes").mkdir(exist_ok=True)
        shutil.copyfile(args.mesh, cat_dir / mesh_ref)
    yaml_path.write_text("# Written by vfm-pose add-object; edit freely (schema: vfm_pose_ros/core/catalogue.py)\n"
                         + yaml.safe_dump(entry, sort_keys=False, default_flow_style=None))
    obj = load_object_yaml(yaml_path)  # what every command will read back
    print(f"added {obj.name} (class_id {obj.class_id}) to {cat_dir}: {yaml_path}")
    for note in mesh_findings(vertices, faces, unit, why):
        print(f"  {note}")
    print(f"  diameter {obj.diameter * 100:.1f} cm, symmetry {obj.symmetry.kind}, grasp frames: "
          f"{', '.join(obj.grasp_frames) or 'none'}, aliases: {', '.join(obj.aliases) or 'none'}")
    print("next:\n"
          f"  vfm-pose onboard --objects-dir {cat_dir} --objects {obj.name} --out runs/{obj.name}   # all steps\n"
          f"  vfm-pose synth --objects-dir {cat_dir} --objects {obj.name} --out data/{obj.name}        # or one by one")
    return 0
