"""`vfm-pose bench` smoke tests: tiny configs, one repeat; the JSON has its keys and positive numbers.

No timing is asserted (the figures depend on the machine and its load); what is checked is that each
section measures what it says, records it, and that a failing section does not abort the run.
"""
from __future__ import annotations

import json

import pytest

from vfm_pose_ros.bench import BenchOptions, run_bench

pytest.importorskip("torch", reason="torch is not installed (requirements/ml.txt)")

# Same architecture families as the backends' SMALL_CONFIGs, shrunk so a forward pass takes milliseconds.
TINY = {
    "dinov2": {"arch_overrides": {"embed_dim": 48, "depth": 1, "num_heads": 2, "init_values": None}, "img_size": 56,
               "head_channels": 16, "detail_channels": [8, 16], "icp_starts": 1},
    "clip": {"clip_arch": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 1, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 512, "width": 64, "heads": 2, "layers": 1}},
             "fusion_dim": 64, "fusion_heads": 2, "head_hidden": 64, "icp_starts": 1},
}


def _positive(d: dict, *path):
    for k in path:
        d = d[k]
    assert isinstance(d, (int, float)) and d > 0, f"{'.'.join(path)} = {d!r}"
    return d


def test_bench_pipeline_evaluator_renderer_without_ros(tmp_path):
    out = tmp_path / "results.json"
    opt = BenchOptions(real_size=False, repeats=1, warmup=0, sections=("pipeline", "evaluator", "renderer"),
                       ros=False, evaluator_frames=3, evaluator_objects=("driller_like",), renderer_frames=1,
                       frame_size=(160, 120), overrides=TINY, out=out, progress=False)
    res = run_bench(opt, log=lambda *a, **k: None)
    saved = json.loads(out.read_text())
    assert saved["sections"] == res["sections"]
    assert {k: v["status"] for k, v in saved["sections"].items()} == {
        "frames": "ok", "pipeline/dinov2/small": "ok", "pipeline/clip/small": "ok", "evaluator": "ok", "renderer": "ok"}
    m = saved["machine"]
    assert m["cpu_count"] >= 1 and m["torch_threads"] >= 1
    assert len(m["load_average"]) == 3 and len(m["load_average_after"]) == 3
    for key in ("dinov2/small", "clip/small"):
        v = saved["pipeline"][key]
        assert v["params_backbone_m"] > 0 and set(v["precision"]) == {"fp32", "bf16"}
        for p in v["precision"].values():
            for stage in ("preprocess", "backbone", "head"):
                _positive(p, "stages_ms", stage)
            _positive(p, "e2e_inproc_ms", "median")
            _positive(p, "backbone_alone_ms", "median")
            _positive(p, "ratio_e2e_inproc_to_backbone")
            assert p["backbone_alone_ms"]["interleaved"] and p["backbone_alone_ms"]["n"] == 1
            assert p["backbone_images_per_frame"] >= 1  # the patch-embedding hook saw the backbone run
            assert "convert" not in p["stages_ms"]  # no ROS: message stages are not invented
        _positive(v["precision"]["fp32"], "external_box", "e2e_inproc_ms", "median")
        for n in ("1", "4"):  # several cameras in one predict_batch call
            _positive(v["precision"]["fp32"], "batch", n, "ms_per_frame")
            assert v["precision"]["fp32"]["batch"][n]["ms_per_call"]["n"] >= 1
    _positive(saved, "evaluator", "driller_like", "frames_per_s")
    _positive(saved, "renderer", "frames_per_s")
    names = [t["target"] for t in saved["targets"]]
    assert any(n.startswith("evaluator frames/s") for n in names)


def test_failing_section_is_recorded_and_the_run_goes_on(tmp_path):
    opt = BenchOptions(real_size=False, backends=("dinov2",), repeats=1, warmup=0,
                       sections=("pipeline", "renderer"), ros=False, renderer_frames=1, frame_size=(160, 120),
                       overrides={"dinov2": {"img_size": 57}}, out=tmp_path / "r.json", progress=False)
    res = run_bench(opt, log=lambda *a, **k: None)
    assert res["sections"]["pipeline/dinov2/small"]["status"] == "failed"
    assert "multiple of 28" in res["sections"]["pipeline/dinov2/small"]["error"]
    assert res["sections"]["renderer"]["status"] == "ok"


def test_cli_options_and_errors(tmp_path, capsys):
    from vfm_pose_ros.cli import main

    assert main(["bench", "--backends", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert "unknown backend" in capsys.readouterr().err
    assert main(["bench", "--only", "pipeline,bogus"]) == 2
    assert "unknown section" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert main(["bench", "--only", "renderer", "--quick", "--no-progress", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["options"]["real_size"] is False and res["options"]["sections"] == ["renderer"]
    _positive(res, "renderer", "frames_per_s")


@pytest.mark.ros
def test_transport_through_dds(tmp_path):
    pytest.importorskip("sensor_msgs.msg", reason="ROS 2 messages not installed")
    opt = BenchOptions(sections=("transport",), transport_frames=8, out=tmp_path / "t.json", progress=False)
    res = run_bench(opt, log=lambda *a, **k: None)
    assert res["sections"]["transport"]["status"] == "ok", res["sections"]["transport"]
    rel = res["transport"]["reliable"]
    assert rel["frames_received"] == 8 and rel["lost"] == 0
    _positive(rel, "latency_ms", "p50")
    _positive(rel, "publisher", "numpy_to_image_ms", "median")
    assert any(t["target"].startswith("VGA convert") for t in res["targets"])


@pytest.mark.ros
def test_pose_node_latency_against_its_own_backbone_time(tmp_path, tiny_clip_checkpoint):
    """The ROS section's numbers come from a real pose node: latency per frame, and the node's own medians over
    the same frames (inference, backbone time inside it) from /diagnostics; tracking mode runs the crop pass only."""
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built")
    from vfm_pose_ros.bench.common import default_catalogue, synthetic_frames
    from vfm_pose_ros.bench.rosgraph import measure_pose_node

    frames = synthetic_frames(default_catalogue(), 1, width=160, height=120)
    r = measure_pose_node(tiny_clip_checkpoint, "clip", frames, tmp_path / "plain", n_frames=4, warmup=1,
                          progress=False)
    assert r["lost"] == 0 and r["latency_ms"]["n"] == 4
    node = r["node"]
    assert 0 < node["backbone_median_ms"] <= node["inference_median_ms"] <= node["latency_p50_ms"]
    stages = node["stages_ms"]  # the CLIP estimator's stages, each a part of its whole call
    assert {"preprocess", "text", "backbone", "head", "total"} <= set(stages)
    assert stages["backbone"] + stages["head"] <= stages["total"] <= node["inference_median_ms"]
    assert r["ratio_latency_to_node_backbone"] >= 1.0
    t = measure_pose_node(tiny_clip_checkpoint, "clip", frames, tmp_path / "tracking", n_frames=4, warmup=1,
                          progress=False, extra={"tracking_enabled": "true", "use_depth": "false"})
    assert t["lost"] == 0 and t["node"]["frames_roi"] >= 3  # every frame after the first uses the track's box
