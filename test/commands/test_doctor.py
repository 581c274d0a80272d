"""`vfm-pose doctor` tells the truth about this environment and fails only for required pieces."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vfm_pose_ros.commands import doctor

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.ros
def test_doctor_reports_this_environment(ros_env):
    """In the set-up environment: rclpy really starts, messages load with upstream hashes, profile is found."""
    out = subprocess.run([sys.executable, "-m", "vfm_pose_ros.cli", "doctor", "--json"], env=ros_env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    for name in ("python", "numpy", "rclpy", "rmw", "vision_msgs", "tf2_msgs", "fastdds profile"):
        assert checks[name]["status"] == "OK", checks[name]
    assert "init, node, shutdown work" in checks["rclpy"]["detail"]
    assert "matches upstream" in checks["vision_msgs"]["detail"]
    assert checks["fastdds profile"]["detail"].startswith(ros_env["FASTDDS_DEFAULT_PROFILES_FILE"])
    assert checks["torch"]["status"] in ("OK", "WARN")  # WARN: no CUDA device
    import torch

    assert ("CUDA available" in checks["torch"]["detail"]) == torch.cuda.is_available()


def test_doctor_fails_only_for_required_pieces(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "_import", lambda module: (None, f"ModuleNotFoundError: no {module}"))
    args = argparse.Namespace(json=False, no_ros_init=True)
    assert doctor.run(args) == 1
    text = capsys.readouterr().out
    assert "required pieces missing: numpy, rclpy, vision_msgs, tf2_msgs" in text
    assert "MISSING  torch" in text and "fix: make setup" in text

    # Only optional pieces missing: exit 0.
    monkeypatch.undo()
    optional = {"torch", "open_clip", "timm", "open3d", "cv2", "rosbags", "tf2_ros", "cv_bridge", "launch_ros"}
    original = doctor._import
    monkeypatch.setattr(doctor, "_import", lambda m: (None, "gone") if m in optional else original(m))
    assert doctor.run(argparse.Namespace(json=False, no_ros_init=True)) == 0


def test_doctor_says_whether_the_depth_stage_is_deterministic(monkeypatch):
    """Open3D before 0.20 cannot be held to one thread, and then the same frame can give another pose."""
    o3d = pytest.importorskip("open3d")
    check = doctor.check_open3d("fix")
    assert check.status == doctor.OK and "deterministic" in check.detail, check
    monkeypatch.delattr(o3d.utility, "set_max_threads")
    check = doctor.check_open3d("fix")
    assert check.status == doctor.WARN and "open3d>=0.20" in check.fix, check
