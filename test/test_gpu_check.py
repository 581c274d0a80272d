"""scripts/gpu_check.sh runs end to end in its CPU smoke mode (what a first run on a CUDA machine goes through,
at tiny sizes) and writes bench/gpu.json with every step's status and the benchmark table's figures."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_gpu_check_cpu_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=590)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {k: v["exit"] for k, v in data["steps"].items()} == {"doctor": 0, "learnability": 0, "precision": 0,
                                                                "bench": 0}
    runs = data["bench"]["backends"]
    for backend in ("dinov2", "clip"):
        keys = runs[backend]["runs"]
        assert {"fp16/b1/rgb/eager", "fp16/b2/rgbd/eager", "fp32/b1/rgb/eager",
                "fp16/b1/rgbd/eager/open3d-threads"} <= set(keys), sorted(keys)
        assert all(isinstance(v, dict) and v["fps"] > 0 and v["stages_ms_per_call"] for v in keys.values()), keys
    assert "fp16/b1/rgb/compiled" in runs["dinov2"]["runs"]
    assert data["precision_agreement"]["results"]
    for per_input in data["precision_agreement"]["results"].values():
        assert {"bf16", "fp16", "fp32 ±1 grey"} <= set(per_input["rgbd"]), per_input
    assert "GPU check on cpu" in proc.stdout


def test_gpu_check_refuses_without_cuda_unless_smoke():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh")], env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--cpu-smoke" in proc.stderr


def _precision_agreement():
    spec = importlib.util.spec_from_file_location("precision_agreement", ROOT / "scripts/precision_agreement.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_noise_reference_moves_each_colour_value_by_one_grey_level_at_most():
    grey_noise = _precision_agreement().grey_noise
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3)).astype(np.uint8)
    rgb[0, :8] = 0
    rgb[1, :8] = 255
    noisy = grey_noise(rgb, 7)
    assert noisy.dtype == np.uint8 and noisy.shape == rgb.shape
    step = noisy.astype(int) - rgb
    assert set(np.unique(step)) == {-1, 0, 1}
    assert 0.2 < (step == 0).mean() < 0.5  # a third of the values stay
    assert (grey_noise(rgb, 7) == noisy).all() and (grey_noise(rgb, 8) != noisy).any()


def test_agreement_counts_the_same_poses_and_those_right_anyway():
    agreement = _precision_agreement()._agreement
    rows = [(0, "can_like", 0.2, 0.1, True), (1, "can_like", 3.0, 179.9, True), (2, "driller_like", 0.9, 0.6, True),
            (3, "driller_like", float("inf"), float("inf"), False)]
    a = agreement(rows)
    assert (a["within_1mm_0.5deg"], a["of"], a["still_right"]) == (1, 4, 3)
    assert [m[:2] + m[4:] for m in a["misses"]] == [[1, "can_like", True], [2, "driller_like", True],
                                                    [3, "driller_like", False]]
    assert a["max_mm"] == "inf"
