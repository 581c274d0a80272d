"""scripts/gpu_check.sh runs end to end in its CPU smoke mode (what a first run on a CUDA machine goes through,
at tiny sizes) and writes bench/gpu.json with every step's status and the benchmark table's figures."""
import json
import os
import subprocess
import sys
from pathlib import Path

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
        assert {"fp16/b1/rgb/eager", "fp16/b2/rgbd/eager", "fp32/b1/rgb/eager"} <= set(keys), sorted(keys)
        assert all(isinstance(v, dict) and v["fps"] > 0 and v["stages_ms_per_call"] for v in keys.values()), keys
    assert "fp16/b1/rgb/compiled" in runs["dinov2"]["runs"]
    assert data["precision_agreement"]["results"]
    assert "GPU check on cpu" in proc.stdout


def test_gpu_check_refuses_without_cuda_unless_smoke():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh")], env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--cpu-smoke" in proc.stderr
