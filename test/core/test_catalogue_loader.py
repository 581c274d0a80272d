"""One catalogue loader for every source: YAML folder or entry, BOP models folder, dataset root, mesh file;
names from the sidecar, catalogue.json, the known datasets' tables or obj_<id>; aliases and descriptions
as typed fields; one-line errors that say what was expected."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vfm_pose_ros.cli import main
from vfm_pose_ros.core.bop_models import YCBV_NAMES, known_dataset_names
from vfm_pose_ros.core.catalogue_loader import catalogue_source, guess_unit, load_catalogue
from vfm_pose_ros.paths import default_catalogue_dir


def write_bop_models(d: Path, size_mm=(90.0, 50.0, 40.0), ids=(1,)) -> Path:
    """A BOP models folder: one box mesh in millimetres per obj_id, and models_info.json."""
    import trimesh

    d.mkdir(parents=True, exist_ok=True)
    infos = {}
    for obj_id in ids:
        mesh = trimesh.creation.box(extents=size_mm)
        mesh.export(d / f"obj_{obj_id:06d}.ply")
        infos[str(obj_id)] = {"diameter": float(np.linalg.norm(size_mm))}
    (d / "models_info.json").write_text(json.dumps(infos))
    return d


def test_every_source_gives_the_same_object(tmp_path):
    models = write_bop_models(tmp_path / "widgets" / "models")
    from_folder = load_catalogue(models)
    from_root = load_catalogue(tmp_path / "widgets")
    mesh_mm = load_catalogue(models / "obj_000001.ply", unit="mm")
    mesh_guessed = load_catalogue(models / "obj_000001.ply")  # 90 "units" across: millimetres
    assert from_folder.names == from_root.names == ["obj_000001"]
    assert mesh_mm.names == ["obj_000001"]
    for cat in (from_root, mesh_mm, mesh_guessed):
        obj = next(iter(cat))
        np.testing.assert_allclose(obj.bbox_size, [0.09, 0.05, 0.04], atol=1e-9)
    assert load_catalogue(models / "obj_000001.ply", unit="m")["obj_000001"].bbox_size.max() == pytest.approx(90.0)
    default = load_catalogue(None)
    assert default.names == load_catalogue(default_catalogue_dir()).names
    assert load_catalogue(default_catalogue_dir() / "can_like.yaml").names == ["can_like"]
    assert catalogue_source(tmp_path / "widgets")[0] == "bop-models"
    assert guess_unit(0.3)[0] == "m" and guess_unit(300.0)[0] == "mm"


def test_bad_sources_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="catalogue not found"):
        load_catalogue(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no catalogue in"):
        load_catalogue(tmp_path)
    models = write_bop_models(tmp_path / "m")
    (models / "models_info.json").unlink()
    with pytest.raises(FileNotFoundError, match="no models_info.json"):
        load_catalogue(models)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a catalogue"):
        load_catalogue(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="millimetres by definition"):
        load_catalogue(write_bop_models(tmp_path / "b"), unit="m")
    with pytest.raises(KeyError, match="unknown object"):
        load_catalogue(None, names=["driller"])


def test_sidecar_names_aliases_and_grasp_frames(tmp_path):
    models = write_bop_models(tmp_path / "models", ids=(1, 2))
    (models / "vfm_catalogue.yaml").write_text(
        "objects:\n"
        "  2:\n"
        "    name: widget\n"
        "    aliases: [gizmo, the blue box]\n"
        "    description: a blue box with an orange knob\n"
        "    grasp_frames:\n"
        "      knob: {xyz: [0.03, 0, 0.04], description: the orange knob on top, aliases: [handle]}\n")
    cat = load_catalogue(models)
    assert cat.names == ["obj_000001", "widget"]
    w = cat["widget"]
    assert w.aliases == ["gizmo", "the blue box"] and w.description == "a blue box with an orange knob"
    assert w.grasp_frames["knob"].aliases == ["handle"]
    np.testing.assert_allclose(w.grasp_frames["knob"].T[:3, 3], [0.03, 0, 0.04])
    assert cat["obj_000001"].aliases == [] and cat["obj_000001"].description == ""
    (models / "vfm_catalogue.yaml").write_text("objects:\n  2: {aliases: 7}\n")
    with pytest.raises(ValueError, match="'aliases' must be a list of strings"):
        load_catalogue(models)


def test_known_bop_datasets_are_named(tmp_path):
    ycbv = write_bop_models(tmp_path / "ycbv" / "models", ids=(15, 21))
    assert load_catalogue(ycbv).names == [YCBV_NAMES[15], YCBV_NAMES[21]] == ["power_drill", "foam_brick"]
    assert known_dataset_names(tmp_path / "tless_models", [1, 30])[30] == "tless_30"
    assert known_dataset_names(tmp_path / "lmo" / "models", [8])[8] == "driller"
    assert known_dataset_names(tmp_path / "ycbv" / "models", [99]) == {}  # an id the table lacks: obj_ names
    assert known_dataset_names(tmp_path / "mine" / "models", [1]) == {}


def test_add_object_writes_an_entry_every_command_reads(tmp_path, capsys):
    models = write_bop_models(tmp_path / "bop")
    cat_dir = tmp_path / "objects"
    rc = main(["add-object", str(models / "obj_000001.ply"), "--name", "widget", "--catalogue", str(cat_dir),
               "--alias", "gizmo", "--description", "a blue box", "--symmetry", "discrete:z:2",
               "--grasp", "side:45,0,0:the long side"])
    out = capsys.readouterr().out
    assert rc == 0 and "unit mm" in out and "watertight" in out and "vfm-pose onboard" in out
    obj = load_catalogue(cat_dir)["widget"]
    assert obj.aliases == ["gizmo"] and obj.description == "a blue box" and obj.class_id == 1
    np.testing.assert_allclose(obj.bbox_size, [0.09, 0.05, 0.04], atol=1e-9)
    np.testing.assert_allclose(obj.grasp_frames["side"].T[:3, 3], [0.045, 0, 0])  # mm -> m
    np.testing.assert_allclose(obj.symmetry.transforms[0][:3, :3], np.diag([-1.0, -1.0, 1.0]), atol=1e-9)
    # a second object gets the next id; a bad option writes nothing and ends with one line
    assert main(["add-object", str(models / "obj_000001.ply"), "--name", "other", "--catalogue", str(cat_dir),
                 "--unit", "mm"]) == 0
    assert load_catalogue(cat_dir)["other"].class_id == 2
    assert main(["add-object", str(models / "obj_000001.ply"), "--name", "third", "--catalogue", str(cat_dir),
                 "--symmetry", "spiral"]) == 2
    assert "--symmetry must be" in capsys.readouterr().err and not (cat_dir / "third.yaml").exists()
    assert main(["add-object", str(models / "obj_000001.ply"), "--name", "widget", "--catalogue",
                 str(cat_dir)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
