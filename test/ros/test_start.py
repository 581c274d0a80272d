"""Nodes started through ``vfm_pose_ros.ros.start`` (as ``vfm-pose launch`` and the console scripts do) take a
SIGINT that arrives while they are still importing as a stop request: no KeyboardInterrupt traceback, and the
evaluator still writes its report. The signal is sent before the node module is imported, so the case the
launcher hits on a loaded machine (a node dies at once, the graph is stopped) is reproduced every time."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros

_EARLY_SIGINT = """
import os, signal, sys
from vfm_pose_ros.ros import spin, start
spin.install_handlers()
os.kill(os.getpid(), signal.SIGINT)   # as if the launcher stopped the graph now, before the node's imports
start.main(["start", *sys.argv[1:]])
"""


def _run(spawn_python, *argv: str) -> tuple[int, str]:
    proc = spawn_python("-c", _EARLY_SIGINT, *argv)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the node did not stop after a SIGINT received while starting: " + "".join(proc.communicate()))
    return proc.returncode, out + err


def test_evaluator_interrupted_while_importing_writes_its_report(spawn_python, tmp_path):
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (interfaces/)")
    out = tmp_path / "eval"
    code, log = _run(spawn_python, "vfm_pose_ros.ros.evaluator_node", "--ros-args", "-p", f"output_dir:={out}")
    assert code == 0 and "Traceback" not in log, log
    assert "report (sigint)" in log, log
    assert json.loads((out / "report.json").read_text())["n_frames"] == 0


def test_player_interrupted_while_importing_plays_nothing(spawn_python, tmp_path):
    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.data import rosbag as rb
    from vfm_pose_ros.paths import default_catalogue_dir

    bag = tmp_path / "bag"
    rb.write_frames([], bag, Catalogue.from_dir(default_catalogue_dir()), progress=False)
    code, log = _run(spawn_python, "vfm_pose_ros.ros.player", str(bag))
    assert code == 130 and "Traceback" not in log and "interrupted" in log, log


def test_usage_without_a_module():
    proc = subprocess.run([sys.executable, "-m", "vfm_pose_ros.ros.start"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "usage: python -m vfm_pose_ros.ros.start MODULE" in proc.stderr
