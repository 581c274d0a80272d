"""The launch files start exactly the graph of vfm_pose_ros.ros.graph (which `vfm-pose launch` also starts).

launch_ros has no wheel here, so where it is absent the launch files run against small recording
stand-ins for the few launch classes they use; the check itself (arguments declared, Node actions
built from graph_nodes, shutdown when the benchmark's player ends) is the same either way.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from vfm_pose_ros.commands.launch import parse_assignments
from vfm_pose_ros.ros.graph import NodeSpec, graph_nodes, launch_arguments, load_pose_defaults

ROOT = Path(__file__).resolve().parents[1]
HAVE_LAUNCH_ROS = importlib.util.find_spec("launch_ros") is not None


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _stand_ins() -> dict[str, types.ModuleType]:
    """Recording stand-ins for launch / launch_ros (only what graph.launch_description uses)."""
    mods = {n: types.ModuleType(n) for n in ("launch", "launch.actions", "launch.event_handlers", "launch.events",
                                             "launch_ros", "launch_ros.actions")}

    class LaunchDescription(_Recorded):
        @property
        def entities(self):
            return self.args[0]

    mods["launch"].LaunchDescription = LaunchDescription
    for name in ("DeclareLaunchArgument", "EmitEvent", "OpaqueFunction", "RegisterEventHandler",
                 "SetEnvironmentVariable"):
        setattr(mods["launch.actions"], name, type(name, (_Recorded,), {}))
    mods["launch.event_handlers"].OnProcessExit = type("OnProcessExit", (_Recorded,), {})
    mods["launch.events"].Shutdown = type("Shutdown", (_Recorded,), {})
    mods["launch_ros.actions"].Node = type("Node", (_Recorded,), {})
    return mods


@pytest.fixture
def launch_modules(monkeypatch):
    if HAVE_LAUNCH_ROS:
        return None
    for name, mod in _stand_ins().items():
        monkeypatch.setitem(sys.modules, name, mod)
    return sys.modules


def _load_launch_file(name: str):
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), ROOT / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(launch_file: str, overrides: dict[str, str]):
    """generate_launch_description(), then its OpaqueFunction with the declared defaults + overrides."""
    ld = _load_launch_file(launch_file).generate_launch_description()
    declared = {e.args[0]: e.kwargs["default_value"] for e in ld.entities
                if type(e).__name__ == "DeclareLaunchArgument"}
    opaque = [e for e in ld.entities if type(e).__name__ == "OpaqueFunction"]
    assert len(opaque) == 1
    context = types.SimpleNamespace(launch_configurations={**declared, **overrides})
    return declared, opaque[0].kwargs["function"](context)


@pytest.mark.skipif(HAVE_LAUNCH_ROS, reason="launch_ros installed: covered by test_with_real_launch_ros")
@pytest.mark.parametrize("launch_file, graph, overrides", [
    ("pose.launch.py", "pose", {}),
    ("pose.launch.py", "pose", {"prompt": "the driller by the handle", "backend": "clip", "namespace": "arm",
                                "bag": "/data/scene0", "lockstep": "true", "evaluate": "true", "rviz": "true",
                                "use_depth": "false", "score_threshold": "0.5"}),
    ("benchmark.launch.py", "benchmark", {"bag": "/data/scene0", "checkpoint": "/m/clip.pt"}),
])
def test_launch_files_start_the_shared_graph(launch_modules, launch_file, graph, overrides):
    declared, actions = _run(launch_file, overrides)
    assert declared == {a.name: a.default for a in launch_arguments(graph)}
    nodes = [a.kwargs for a in actions if type(a).__name__ == "Node"]
    expected = graph_nodes({**declared, **overrides}, graph)
    assert nodes == [s.launch_kwargs() for s in expected]
    # the DDS environment (config/fastdds.xml) is set for the nodes
    env = {a.args[0]: a.args[1] for a in actions if type(a).__name__ == "SetEnvironmentVariable"}
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds.xml")
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
    # the benchmark ends when its evaluator has written the report
    handlers = [a for a in actions if type(a).__name__ == "RegisterEventHandler"]
    enders = [s for s in expected if s.shutdown_on_exit]
    assert len(handlers) == len(enders) == (1 if graph == "benchmark" else 0)
    for h in handlers:
        target = h.args[0].kwargs["target_action"]
        assert target.kwargs["name"] == enders[0].name


@pytest.mark.skipif(not HAVE_LAUNCH_ROS, reason="launch_ros is not installed (the stand-in test covers the check)")
def test_with_real_launch_ros():  # pragma: no cover - needs a ROS 2 install with launch_ros
    from launch import LaunchContext

    ld = _load_launch_file("pose.launch.py").generate_launch_description()
    context = LaunchContext()
    for a in launch_arguments("pose"):
        context.launch_configurations[a.name] = a.default
    opaque = [e for e in ld.entities if type(e).__name__ == "OpaqueFunction"][0]
    actions = opaque.execute(context)
    names = [a.node_name for a in actions if type(a).__name__ == "Node"]
    assert names == [s.name for s in graph_nodes({}, "pose")]


def test_pose_graph_defaults_are_config_pose_yaml():
    (spec,) = graph_nodes({}, "pose")
    assert (spec.package, spec.executable, spec.name, spec.namespace) == ("vfm_pose_ros", "pose_node", "vfm_pose", "")
    assert spec.parameters == load_pose_defaults()


def test_arguments_are_typed_like_the_parameters():
    (spec,) = graph_nodes({"use_depth": "false", "sync_tolerance_ms": "5", "queue_size": "2", "prompt": "the can"})
    p = spec.parameters
    assert p["use_depth"] is False and p["sync_tolerance_ms"] == 5.0 and isinstance(p["sync_tolerance_ms"], float)
    assert p["queue_size"] == 2 and p["prompt"] == "the can"
    # another backend without a checkpoint: that backend's shipped checkpoint, not the default backend's
    (spec,) = graph_nodes({"backend": "clip"})
    assert spec.parameters["checkpoint"] == "models/clip_small.pt"
    (spec,) = graph_nodes({"backend": "clip", "checkpoint": "/my/clip.pt"})
    assert spec.parameters["checkpoint"] == "/my/clip.pt"
    with pytest.raises(ValueError, match="use_depth.*true or false"):
        graph_nodes({"use_depth": "maybe"})
    with pytest.raises(ValueError, match="unknown argument.*colour_topic"):
        graph_nodes({"colour_topic": "/x"})
    assert graph_nodes({"colour_topic": "/x"}, strict=False)  # launch files pass unrelated configurations


def test_benchmark_wiring():
    player, pose, evaluator = graph_nodes({"bag": "/b", "namespace": "/r1/"}, "benchmark")
    assert player.arguments == ["/b", "--lockstep", "/r1/vfm_pose/detections", "--wait-timeout", "300",
                                "--wait-topics", "/ground_truth/detections"]
    assert pose.parameters["input_qos"] == "reliable"  # the player publishes reliably
    # the benchmark ends when the evaluator has written its report (or, without one, when the bag is sent)
    assert evaluator.shutdown_on_exit and not player.shutdown_on_exit and not pose.shutdown_on_exit
    assert evaluator.parameters["exit_after_report"] is True
    assert {s.namespace for s in (player, pose, evaluator)} == {"/r1"}
    assert evaluator.parameters["detections_topic"] == "/r1/vfm_pose/detections"
    assert evaluator.parameters["done_topic"] == "/r1/bag_player/done"
    without_evaluator = graph_nodes({"bag": "/b", "evaluate": "false"}, "benchmark")
    assert [s.name for s in without_evaluator if s.shutdown_on_exit] == ["bag_player"]
    with pytest.raises(ValueError, match="bag:=PATH"):
        graph_nodes({}, "benchmark")


def test_commands_and_params_files(tmp_path):
    spec = NodeSpec("vfm_pose_ros", "pose_node", "vfm_pose", "/ns", parameters={"prompt": "the can", "use_depth": True},
                    remappings=[("~/detections", "/dets")], module="vfm_pose_ros.ros.pose_node")
    cmd = spec.command(tmp_path / "p.yaml")
    assert cmd[1:4] == ["-m", "vfm_pose_ros.ros.start", "vfm_pose_ros.ros.pose_node"]  # signals held from the start
    assert cmd[4:] == ["--ros-args", "-r", "__node:=vfm_pose", "-r", "__ns:=/ns", "--params-file",
                       str(tmp_path / "p.yaml"), "-r", "~/detections:=/dets"]
    import yaml

    assert yaml.safe_load(spec.params_yaml()) == {"/**": {"ros__parameters": {"prompt": "the can", "use_depth": True}}}
    assert NodeSpec("rviz2", "no_such_executable_here", "rviz2", optional=True).command() is None


def test_cli_assignments():
    assert parse_assignments(["prompt:=the driller", "a:="]) == {"prompt": "the driller", "a": ""}
    with pytest.raises(ValueError, match="KEY:=VALUE"):
        parse_assignments(["prompt=the driller"])


def test_cli_dry_run(capsys):
    from vfm_pose_ros.cli import main

    assert main(["launch", "benchmark", "bag:=/b", "checkpoint:=/c.pt", "--dry-run"]) == 0
    out = capsys.readouterr().out
    player = "-m vfm_pose_ros.ros.start vfm_pose_ros.ros.player /b --lockstep /vfm_pose/detections --wait-timeout 300"
    assert player in out
    assert "checkpoint: /c.pt" in out and "FASTDDS_DEFAULT_PROFILES_FILE=" in out
    assert main(["launch", "benchmark"]) == 2  # no bag


@pytest.mark.ros
def test_cli_launch_stops_the_graph_cleanly_when_a_node_fails(tmp_path, ros_env, run_launcher):
    """pose node fails (no checkpoint) -> the launcher sends SIGINT to the rest, the evaluator writes its report
    on the way out, and the launcher exits with the failing node's status."""
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (interfaces/)")
    out = tmp_path / "eval"
    run = run_launcher([sys.executable, "-m", "vfm_pose_ros.cli", "launch", "pose", f"checkpoint:={tmp_path}/no.pt",
                          "evaluate:=true", f"output_dir:={out}", "--grace", "30"],
                         env=ros_env, timeout=180)
    log = run.stdout + run.stderr
    assert run.returncode == 1, log
    assert "checkpoint not found" in log and "vfm_pose exited with status 1" in log
    assert "vfm_pose_evaluator exited with status 0" in log
    assert (out / "report.json").is_file()


@pytest.mark.ros
def test_benchmark_launch_says_which_node_died_and_reports_incomplete(tmp_path, ros_env, run_launcher):
    """The pose node dies (here: at start, no checkpoint) under `vfm-pose launch benchmark`: one line names it,
    the exit status is non-zero, no process prints a traceback on the way out, and the evaluator's report says
    incomplete, 0 of the bag's frames played, with every ground-truth instance of the bag a failure."""
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (interfaces/)")
    import json
    from types import SimpleNamespace

    import numpy as np

    from vfm_pose_ros.core.catalogue import Catalogue
    from vfm_pose_ros.core.types import GroundTruthPose
    from vfm_pose_ros.data import rosbag as rb
    from vfm_pose_ros.paths import default_catalogue_dir

    cat = Catalogue.from_dir(default_catalogue_dir())
    K = np.array([[50.0, 0, 16], [0, 50.0, 12], [0, 0, 1]])
    rng = np.random.default_rng(0)
    frames = [SimpleNamespace(scene_id=0, im_id=i, K=K, rgb=rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
                              depth=np.full((24, 32), 0.8, np.float32),
                              gts=[GroundTruthPose(o.class_id, o.name, np.eye(3), np.array([0.0, 0.0, 0.8]))
                                   for o in cat]) for i in range(3)]
    bag, out = tmp_path / "bag", tmp_path / "eval"
    rb.write_frames(frames, bag, cat, progress=False)
    run = run_launcher([sys.executable, "-m", "vfm_pose_ros.cli", "launch", "benchmark", f"bag:={bag}",
                        f"checkpoint:={tmp_path}/no.pt", f"output_dir:={out}", "--grace", "30"],
                       env=ros_env, timeout=180)
    log = run.stdout + run.stderr
    assert run.returncode == 1, log
    died = [line for line in run.stderr.splitlines() if line.startswith("vfm-pose launch:")]
    assert len(died) == 1 and "vfm_pose died (exit status 1)" in died[0] and "incomplete" in died[0], log
    assert "Traceback" not in log and "[launch] done" not in log, log
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "incomplete", report["ros"]
    ros = report["ros"]
    assert (ros["frames_played"], ros["frames_in_bag"], ros["unplayed_frames"]) == (0, 3, 3)
    assert report["n_frames"] == 3 and report["overall"]["n_gt"] == 3 * len(cat)
    assert report["overall"]["n_predicted"] == 0 and report["overall"]["add_s_01d_acc"] == 0.0
    assert "INCOMPLETE" in (out / "report.md").read_text()
