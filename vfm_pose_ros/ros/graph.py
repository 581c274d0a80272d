"""The ROS graph, described once: which processes run, with which names, parameters and arguments.

``launch/pose.launch.py`` and ``launch/benchmark.launch.py`` (launch_ros) and ``vfm-pose launch``
(plain subprocesses, where launch_ros is not installed) all start :func:`graph_nodes`, so the
three cannot drift apart. Nothing here imports rclpy or launch at module level.

Graphs:

* ``pose``: the pose node; optionally a bag player (``bag:=PATH``, ``lockstep:=true``), the
  evaluator (``evaluate:=true``) and RViz (``rviz:=true``).
* ``benchmark``: bag player in lockstep -> pose node -> evaluator; the graph shuts down when
  the player has sent the whole bag (the evaluator writes its report on the way out).

Arguments are strings (as launch passes them) or values; any pose node parameter of
``config/pose.yaml`` is accepted as an argument too (``score_threshold:=0.5``).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .env import find_package_file

PACKAGE = "vfm_pose_ros"
POSE_NODE = "vfm_pose"
EVALUATOR_NODE = "vfm_pose_evaluator"
PLAYER_NODE = "bag_player"
GRAPHS = ("pose", "benchmark")


@dataclass
class NodeSpec:
    """One process of the graph, in launch_ros terms (``launch_kwargs``) and as a command line (``command``)."""

    package: str
    executable: str
    name: str
    namespace: str = ""
    parameters: dict = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)
    module: str | None = None  # python module run with `python -m` by `vfm-pose launch` (no install needed)
    shutdown_on_exit: bool = False  # the whole graph stops when this process ends (the benchmark's player)
    optional: bool = False  # `vfm-pose launch` skips it with a warning when the executable is missing (rviz2)
    finished_statuses: tuple[int, ...] = (0,)  # exit statuses meaning "ended its work" (any other: it died)

    def launch_kwargs(self) -> dict:
        """Keyword arguments for ``launch_ros.actions.Node``."""
        return {
            "package": self.package, "executable": self.executable, "name": self.name,
            "namespace": self.namespace, "parameters": [dict(self.parameters)] if self.parameters else [],
            "remappings": list(self.remappings), "arguments": list(self.arguments), "output": "screen",
        }

    def command(self, params_file: str | os.PathLike | None = None) -> list[str] | None:
        """The command line ``vfm-pose launch`` runs (None when the executable is not installed)."""
        if self.module:
            head = [sys.executable, "-m", "vfm_pose_ros.ros.start", self.module]  # signals held from the start
        else:
            import shutil

            exe = shutil.which(self.executable)
            if exe is None:
                return None
            head = [exe]
        ros = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            ros += ["-r", f"__ns:={self.namespace}"]
        if params_file is not None and self.parameters:
            ros += ["--params-file", str(params_file)]
        for a, b in self.remappings:
            ros += ["-r", f"{a}:={b}"]
        return head + list(self.arguments) + ros

    def params_yaml(self) -> str:
        """This node's parameters as a ROS 2 parameters file (``/**: ros__parameters: ...``)."""
        import yaml

        return yaml.safe_dump({"/**": {"ros__parameters": dict(self.parameters)}}, sort_keys=False)


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str


def load_pose_defaults(path: str | os.PathLike | None = None) -> dict:
    """The pose node's parameter defaults: ``ros__parameters`` of config/pose.yaml (the one place they are written)."""
    import yaml

    path = Path(path) if path else find_package_file("config/pose.yaml")
    data = yaml.safe_load(Path(path).read_text()) or {}
    for section in data.values():
        if isinstance(section, dict) and "ros__parameters" in section:
            return dict(section["ros__parameters"])
    raise ValueError(f"{path} has no 'ros__parameters' section (expected '/**: ros__parameters: ...')")


def _text(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def launch_arguments(graph: str = "pose") -> list[Argument]:
    """The declared launch arguments of a graph, with defaults as strings (what launch shows with --show-args)."""
    if graph not in GRAPHS:
        raise ValueError(f"unknown graph {graph!r}; choose from {', '.join(GRAPHS)}")
    d = load_pose_defaults()
    bench = graph == "benchmark"
    args = [
        Argument("namespace", "", "namespace of every node (topics: /<ns>/vfm_pose/detections, ...)"),
        Argument("params_file", "", "a pose node parameters file over config/pose.yaml ('' = none)"),
        Argument("backend", _text(d["backend"]), "pose backend: clip | dinov2 | hybrid (the checkpoint's)"),
        Argument("checkpoint", _text(d["checkpoint"]), "checkpoint from `vfm-pose train`"),
        Argument("weights", _text(d["weights"]), "backbone weights file for full-size configs ('' = checkpoint's)"),
        Argument("prompt", _text(d["prompt"]), "text naming the object and grasp, e.g. 'the driller by the handle'"),
        Argument("device", _text(d["device"]), "auto | cpu | cuda"),
        Argument("image_topic", _text(d["image_topic"]), "colour image topic"),
        Argument("camera_info_topic", _text(d["camera_info_topic"]), "camera info topic"),
        Argument("depth_topic", _text(d["depth_topic"]), "depth image topic (aligned to colour)"),
        Argument("use_depth", _text(d["use_depth"]), "use depth (ICP refinement)"),
        Argument("bag", "", "rosbag2 to replay with the package's player ('' = live camera)" if not bench
                 else "rosbag2 to replay (required)"),
        Argument("lockstep", "true" if bench else "false", "player sends the next frame after the pose node answered"),
        Argument("evaluate", "true" if bench else "false", "start the evaluator node (needs ground truth in the bag)"),
        Argument("output_dir", "vfm_pose_eval", "where the evaluator writes report.json, frames.csv, report.md"),
        Argument("rviz", "false", "start RViz with config/pose.rviz"),
    ]
    return args


def _coerce(name: str, value, default):
    """A launch argument (string) as the type of the parameter's default."""
    if isinstance(value, str) and not isinstance(default, str):
        v = value.strip().lower()
        if isinstance(default, bool):
            if v in ("true", "1", "yes", "on"):
                return True
            if v in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"{name}:={value!r}: expected true or false")
        try:
            return int(value) if isinstance(default, int) else float(value)
        except ValueError:
            raise ValueError(f"{name}:={value!r}: expected a {'whole ' if isinstance(default, int) else ''}"
                             "number") from None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # ROS parameters are typed: 20 would not override 20.0
    return value


def _bool(name, value) -> bool:
    return _coerce(name, value, False)


def _topic(namespace: str, node: str, leaf: str) -> str:
    parts = [p for p in (namespace.strip("/"), node, leaf) if p]
    return "/" + "/".join(parts)


def graph_nodes(args: dict | None = None, graph: str = "pose", strict: bool = True) -> list[NodeSpec]:
    """The processes of ``graph`` for the given arguments (launch argument names, or pose node parameter names).

    ``strict``: unknown argument names are an error (the CLI); launch files pass every launch
    configuration and ignore the ones that are not theirs.
    """
    declared = {a.name: a.default for a in launch_arguments(graph)}
    pose_defaults = load_pose_defaults()
    args = {k: v for k, v in (args or {}).items()}
    unknown = sorted(set(args) - set(declared) - set(pose_defaults))
    if unknown and strict:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}; {graph} takes: "
                         f"{', '.join(sorted(set(declared) | set(pose_defaults)))}")
    a = {**declared, **{k: v for k, v in args.items() if k in declared or k in pose_defaults}}
    ns = str(a["namespace"]).strip("/")
    namespace = f"/{ns}" if ns else ""

    # pose node parameters: config/pose.yaml, then params_file, then arguments
    params = dict(pose_defaults)
    if a["params_file"]:
        params.update({k: v for k, v in load_pose_defaults(a["params_file"]).items() if k in pose_defaults})
    for key in pose_defaults:
        if key in a:
            params[key] = _coerce(key, a[key], pose_defaults[key])
    from .params import POSE_PARAMS, check_values

    errors = check_values(POSE_PARAMS, params)  # the node's own start-up check: refuse before starting anything
    if errors:
        raise ValueError(errors[0])
    if params["backend"] and params["backend"] != pose_defaults["backend"] \
            and params["checkpoint"] == pose_defaults["checkpoint"]:
        params["checkpoint"] = f"models/{params['backend']}_small.pt"  # the shipped checkpoint of that backend
    detections = _topic(ns, POSE_NODE, "detections")
    nodes: list[NodeSpec] = []

    bag = str(a["bag"])
    lockstep, evaluate = _bool("lockstep", a["lockstep"]), _bool("evaluate", a["evaluate"])
    if graph == "benchmark" and not bag:
        raise ValueError("the benchmark graph replays a bag: give bag:=PATH (make one with `vfm-pose make-bag`)")
    if bag:
        if "input_qos" not in args:
            params["input_qos"] = "reliable"  # the player publishes reliably: lose no frame of a benchmark
        player_args = [bag]
        if lockstep:
            # the pose node subscribes once its model is loaded: allow for a slow load before the first frame
            player_args += ["--lockstep", detections, "--wait-timeout", "300"]
        if evaluate:
            player_args += ["--wait-topics", "/ground_truth/detections"]
        # the benchmark ends with its evaluator's report (or, without an evaluator, when the bag is sent)
        from .player import LOCKSTEP_TIMEOUT_STATUS  # the bag was sent; some frames went unanswered

        nodes.append(NodeSpec(PACKAGE, "bag_player", PLAYER_NODE, namespace, arguments=player_args,
                              module="vfm_pose_ros.ros.player", shutdown_on_exit=graph == "benchmark" and not evaluate,
                              finished_statuses=(0, LOCKSTEP_TIMEOUT_STATUS)))
    nodes.append(NodeSpec(PACKAGE, "pose_node", POSE_NODE, namespace, parameters=params,
                          module="vfm_pose_ros.ros.pose_node"))
    if evaluate:
        eval_params = {"detections_topic": detections, "ground_truth_topic": "/ground_truth/detections",
                       "camera_info_topic": params["camera_info_topic"], "output_dir": str(a["output_dir"]),
                       "done_topic": _topic(ns, PLAYER_NODE, "done") if bag else "", "bag": bag,
                       "exit_after_report": graph == "benchmark"}
        nodes.append(NodeSpec(PACKAGE, "evaluator_node", EVALUATOR_NODE, namespace, parameters=eval_params,
                              module="vfm_pose_ros.ros.evaluator_node", shutdown_on_exit=graph == "benchmark"))
    if _bool("rviz", a["rviz"]):
        nodes.append(NodeSpec("rviz2", "rviz2", "rviz2", namespace,
                              arguments=["-d", str(find_package_file("config/pose.rviz"))], optional=True))
    return nodes


def launch_description(graph: str):
    """A launch_ros LaunchDescription of :func:`graph_nodes` (what the launch files return)."""
    from launch.actions import (
        DeclareLaunchArgument,
        EmitEvent,
        OpaqueFunction,
        RegisterEventHandler,
        SetEnvironmentVariable,
    )
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown
    from launch_ros.actions import Node

    from launch import LaunchDescription

    from .env import configure_ros_env

    def setup(context, *_, **__):
        actions = [SetEnvironmentVariable(k, v) for k, v in configure_ros_env().items()]
        for spec in graph_nodes(dict(context.launch_configurations), graph, strict=False):
            node = Node(**spec.launch_kwargs())
            actions.append(node)
            if spec.shutdown_on_exit:
                actions.append(RegisterEventHandler(OnProcessExit(
                    target_action=node, on_exit=[EmitEvent(event=Shutdown(reason=f"{spec.name} finished"))])))
        return actions

    declared = [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
                for a in launch_arguments(graph)]
    return LaunchDescription([*declared, OpaqueFunction(function=setup)])


def terminate(proc, wait_s: float = 5.0) -> None:
    """SIGTERM a graph process that did not stop on SIGINT, and SIGKILL it if that does not end it either."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
