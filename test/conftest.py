"""Shared pytest set-up: offline model hub, a private ROS 2 domain per session, the package's Fast DDS profile.

The environment is set at import time, before any test module imports rclpy or huggingface_hub, and
subprocesses started with the ``spawn_python`` fixture inherit it.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from vfm_pose_ros.ros.env import FASTDDS_PROFILE, configure_ros_env, find_package_file

# Without this a hub lookup hangs about 46 s before failing (no model hub is reachable here).
os.environ["HF_HUB_OFFLINE"] = "1"
# DDS traffic must stay on this host; tests force it whatever the user's shell says.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(find_package_file(FASTDDS_PROFILE))
# A domain of its own per test session (1..101: the ids whose ports are safe on Linux; 0 is everyone's default),
# so concurrent sessions on the same machine do not see each other's topics. Under pytest-xdist (`make test` runs
# with -n) each worker gets its own: consecutive ids from the controlling process's pid, so they never collide.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... or "" without xdist
if _XDIST_WORKER.startswith("gw"):
    TEST_DOMAIN_ID = 1 + (os.getppid() + int(_XDIST_WORKER[2:])) % 101
else:
    TEST_DOMAIN_ID = 1 + os.getpid() % 101
configure_ros_env(domain_id=TEST_DOMAIN_ID)


def pytest_report_header(config):
    return (
        f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE={os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']} "
        f"RMW_IMPLEMENTATION={os.environ.get('RMW_IMPLEMENTATION')} "
        f"FASTDDS_DEFAULT_PROFILES_FILE={os.environ['FASTDDS_DEFAULT_PROFILES_FILE']}"
    )


def pytest_collection_modifyitems(config, items):
    """Tests marked `ros` need rclpy: skip them where it is absent, unless VFM_REQUIRE_ROS=1 (make test, CI),
    where a missing rclpy is an error rather than a quiet skip."""
    if importlib.util.find_spec("rclpy") is not None:
        return
    if os.environ.get("VFM_REQUIRE_ROS") == "1":
        raise pytest.UsageError("rclpy is not importable but VFM_REQUIRE_ROS=1: run `make setup` (ROS 2 wheels)")
    skip = pytest.mark.skip(reason="rclpy not importable (run `make setup`, or source a ROS 2 install)")
    for item in items:
        if "ros" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """The environment test subprocesses run with (this session's domain, loopback discovery, DDS profile)."""
    return dict(os.environ)


@pytest.fixture
def spawn_python(ros_env):
    """Factory starting ``python ARGV...`` (this interpreter) with the test environment.

    ``spawn_python("-c", code)`` or ``spawn_python(script, arg, ...)``; extra keyword ``env`` entries are
    added to the environment. Returns a text-mode Popen with stdin/stdout/stderr pipes; every process still
    running when the test ends is killed.
    """
    procs: list[subprocess.Popen] = []

    def _spawn(*argv: str, env: dict[str, str] | None = None, **popen_kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            env={**ros_env, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **popen_kwargs,
        )
        procs.append(proc)
        return proc

    yield _spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory):
    """A CLIP checkpoint of SMALL_CONFIG's family shrunk to 64 px input and 2 layers (fast random inference),
    for tests of the ROS nodes' behaviour (not of accuracy)."""
    import copy

    import torch

    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.models import backend_module
    from vfm_pose_ros.models.checkpoint import save_checkpoint
    from vfm_pose_ros.paths import default_catalogue_dir

    torch.manual_seed(0)
    clip = backend_module("clip")
    cfg = copy.deepcopy(clip.SMALL_CONFIG)
    cfg["clip_arch"]["embed_dim"] = 64
    cfg["clip_arch"]["vision_cfg"].update(image_size=64, patch_size=16, width=64, layers=2, head_width=32)
    cfg["clip_arch"]["text_cfg"].update(width=64, heads=2, layers=1)
    cfg.update(fusion_dim=64, fusion_heads=2, head_hidden=64, use_depth=False, icp_starts=1)
    catalogue = Catalogue.from_dir(default_catalogue_dir())
    path = tmp_path_factory.mktemp("ckpt") / "tiny_clip.pt"
    save_checkpoint(path, clip.build_net(cfg, catalogue), backend="clip", config=cfg, catalogue=catalogue,
                    data_hash="random", epoch=0)
    return path


def _assert_reports_close(a, b, rel: float, abs_: float, path: str = "report") -> None:
    """Two nested report dicts/lists equal: same keys and lengths, floats within tolerance (None and NaN
    equal only themselves), everything else exactly."""
    import math

    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys differ: {set(a) ^ set(b)}"
        for k in a:
            _assert_reports_close(a[k], b[k], rel, abs_, f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_reports_close(x, y, rel, abs_, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        assert both_nan or (a is not None and b is not None and math.isclose(a, b, rel_tol=rel, abs_tol=abs_)), (
            f"{path}: {a} != {b}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture
def assert_reports_close():
    """``assert_reports_close(a, b, rel=1e-9, abs=1e-9)``: compare two metric reports field by field."""
    return lambda a, b, rel=1e-9, abs=1e-9: _assert_reports_close(a, b, rel, abs)


@pytest.fixture
def run_launcher():
    """``run_launcher(cmd, env, timeout)``: run `vfm-pose launch ...`; on timeout send it SIGINT first (it
    forwards it to the nodes it started in their own sessions, which a plain kill would orphan), then fail."""
    import signal

    def run(cmd, env, timeout):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            pytest.fail(f"`vfm-pose launch` ran over {timeout} s:\n{out}\n{err}")
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    return run


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory):
    """A CLIP checkpoint of the small configuration with random weights: the real file format, no training."""
    torch = pytest.importorskip("torch")
    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.models import backend_module
    from vfm_pose_ros.models.checkpoint import save_checkpoint
    from vfm_pose_ros.paths import default_catalogue_dir

    torch.manual_seed(0)
    clip = backend_module("clip")
    catalogue = Catalogue.from_dir(default_catalogue_dir())
    path = tmp_path_factory.mktemp("ckpt") / "clip_small.pt"
    save_checkpoint(path, clip.build_net(clip.SMALL_CONFIG, catalogue), backend="clip", config=clip.SMALL_CONFIG,
                    catalogue=catalogue, data_hash="random", epoch=0)
    return path
