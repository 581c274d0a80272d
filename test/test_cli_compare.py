"""`vfm-pose compare --dataset` end to end with real (tiny, randomly initialised) CLIP and DINOv2 estimators.

A reduced run (2 frames at 160x120) through the CLI: the report's files and keys, and the table's
numbers equal to `vfm-pose eval` on the written results. The bag mode test lives with the ROS graph.
"""
from __future__ import annotations

import csv
import json

import pytest

from vfm_pose_ros.cli import main
from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.paths import default_catalogue_dir

pytest.importorskip("torch")
pytest.importorskip("open_clip")
pytest.importorskip("timm")
pytest.importorskip("cv2")

# Smaller than SMALL_CONFIG (same architectures) so that the test takes seconds.
TINY = {
    "clip": {"clip_arch": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 1, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 64, "heads": 2, "layers": 1}},
             "fusion_dim": 64, "fusion_heads": 2, "head_hidden": 64, "fusion_decoder_layers": 1},
    "dinov2": {"arch_overrides": {"embed_dim": 48, "depth": 1, "num_heads": 2, "init_values": None},
               "img_size": 56, "head_channels": 16},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vfm_pose_ros.data.bop import write_models_info
    from vfm_pose_ros.data.scenes import LMO_K, SceneConfig, SceneGenerator, write_split
    from vfm_pose_ros.models import backend_module
    from vfm_pose_ros.models.checkpoint import save_checkpoint

    cat = Catalogue.from_dir(default_catalogue_dir())
    root = tmp_path_factory.mktemp("bop")
    K = LMO_K.copy()
    K[:2] *= 0.25
    gen = SceneGenerator(list(cat), SceneConfig(width=160, height=120, K=K, distance=(0.6, 0.9), distractors=0), seed=5)
    write_split(gen, root, "test", frames=3, stream=1, progress=False)
    write_models_info(root / "models", cat)
    ckpts = {}
    for b, over in TINY.items():
        mod = backend_module(b)
        cfg = mod.merged_config(over, small=True)
        ckpts[b] = save_checkpoint(root / f"{b}.pt", mod.build_net(cfg, cat), backend=b, config=cfg, catalogue=cat,
                                   data_hash="test", epoch=0)
    return root, ckpts


def test_cli_compare_dataset(setup, tmp_path, capsys):
    root, ckpts = setup
    out = tmp_path / "report"
    rc = main(["compare", "--dataset", str(root), "--backends", "clip,dinov2",
               "--checkpoint-clip", str(ckpts["clip"]), "--checkpoint-dinov2", str(ckpts["dinov2"]),
               "--max-frames", "2", "--device", "cpu", "--renderer", "matplotlib", "--figure-frames", "2",
               "--prompt", "the driller", "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "ADD mm" in printed and "report:" in printed and str(out / "report.md") in printed
    for name in ("results.json", "table.csv", "report.md", "report.html", "targets.json",
                 "results_clip.csv", "results_dinov2.csv", "fig_errors.png", "fig_panel_clip.png",
                 "fig_panel_dinov2.png", "fig_multi_object.png", "fig_pointcloud.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["n_frames"] == 2 and doc["settings"]["prompt"] == "the driller"
    for b in ("clip", "dinov2"):
        entry = doc["backends"][b]
        assert entry["settings"]["checkpoint"] == str(ckpts[b])
        assert entry["latency"]["n_frames"] == 2 and entry["latency"]["latency_mean_ms"] > 0
        rep = entry["report"]
        assert rep["n_frames"] == 2 and set(rep["objects"]) <= {"driller_like", "can_like"}
        assert rep["overall"]["n_gt"] == 4  # both objects in both frames
        for key in ("add_mean_mm", "adds_mean_mm", "rot_err_mean_deg", "trans_err_mean_mm", "add_s_01d_acc",
                    "acc_5cm5deg", "auc_add", "auc_adds"):
            assert key in rep["overall"]
        # the numbers equal `vfm-pose eval` on the same predictions
        rc = main(["eval", "--dataset", str(root), "--results", str(out / f"results_{b}.csv"),
                   "--targets", str(out / "targets.json"), "--out", str(tmp_path / f"eval_{b}.json"), "--quiet"])
        assert rc == 0
        ev = json.loads((tmp_path / f"eval_{b}.json").read_text())
        assert rep["overall"] == ev["overall"] and rep["objects"] == ev["objects"]
        assert rep["overall"]["bop19_average_recall"] is not None  # the synthetic frames have depth: BOP AR
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["backend"] for r in rows} == {"clip", "dinov2"}
    assert "latency_p95_ms" in rows[0] and "add_mean_mm" in rows[0]
    md = (out / "report.md").read_text()
    assert all(f"]({f})" in md for f in doc["figures"].values())
    assert "| BOP AR |" in md and "BOP AR" in printed and "bop19_average_recall" in rows[0]


def test_cli_compare_errors(tmp_path, capsys):
    rc = main(["compare", "--dataset", str(tmp_path / "nope"), "--backends", "clip",
               "--checkpoint-clip", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    assert rc == 1 and "--checkpoint-clip" in capsys.readouterr().err
    rc = main(["compare", "--dataset", str(tmp_path), "--backends", "clip,bogus", "--out", str(tmp_path / "o")])
    assert rc == 1 and "unknown backend" in capsys.readouterr().err


@pytest.mark.ros
@pytest.mark.slow
def test_cli_compare_bag_through_ros_graph(setup, tmp_path, capsys):
    """Bag mode: per backend the benchmark graph (player in lockstep -> pose node -> evaluator) in processes."""
    root, ckpts = setup
    bag = tmp_path / "bag"
    assert main(["make-bag", "--dataset", str(root), "--out", str(bag), "--quiet"]) == 0
    out = tmp_path / "report"
    rc = main(["compare", "--bag", str(bag), "--backends", "clip,dinov2",
               "--checkpoint-clip", str(ckpts["clip"]), "--checkpoint-dinov2", str(ckpts["dinov2"]),
               "--max-frames", "2", "--device", "cpu", "--renderer", "matplotlib", "--figure-frames", "1",
               "--prompt", "the driller", "--score-threshold", "0", "--timeout", "280", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err + (out / "ros.log").read_text()[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["settings"]["mode"].startswith("bag") and doc["settings"]["n_frames"] == 2
    for b in ("clip", "dinov2"):
        entry = doc["backends"][b]
        ros_report = json.loads((out / f"ros_{b}" / "report.json").read_text())
        assert entry["report"]["overall"] == ros_report["overall"]  # the evaluator node's numbers, unchanged
        assert ros_report["n_frames"] == 2 and ros_report["overall"]["n_gt"] == 4
        assert ros_report["ros"]["n_gaps"] == 0  # every frame was answered and scored
        lat = entry["latency"]
        assert lat["n_frames"] == 2 and lat["latency_mean_ms"] > 0 and lat["throughput_fps"] > 0
    assert {"panel_clip", "panel_dinov2", "multi_object", "pointcloud", "errors"} <= set(doc["figures"])
