"""The package's layers, kept by reading every module's imports (an AST walk; nothing is imported).

Layers, lowest first: ``core`` (geometry, metrics, validation: numpy and friends only) <- ``data``,
``models`` <- ``report`` <- ``ros`` (rclpy nodes, the only ROS edge) <- ``bench``, ``commands``, ``cli``
(glue). ``paths`` (where the package's files lie) sits beside ``core`` for everyone. The rules:

1. ``core`` imports nothing heavy or of ROS: no torch (nor timm, open_clip, torchvision), no rclpy, no ROS
   message or launch package, no ament_index_python, no rosbags; and of this package only ``core`` itself and
   ``paths`` (a leaf: the catalogue loader's default folder).
2. ``data`` and ``models`` never import ``vfm_pose_ros.ros`` (nor bench, commands, cli): the bag codec,
   the datasets and the estimators run without ROS (``data.messages`` is the message codec both share).
   Nor do they import ``vfm_pose_ros.report``, even inside a function: report formatting sits above them
   and comes in from the caller (``core`` imports only ``core`` and ``paths``, so never ``report`` either).
3. rclpy, the ROS message/service packages (``*_msgs``, ``*_srvs``, builtin_interfaces), rosidl, launch,
   launch_ros, cv_bridge and tf2_ros are imported in ``ros/``; ``bench/`` and ``commands/`` may import
   them only inside a function (they start or measure a ROS graph when asked, and must import without
   ROS); nowhere else. ``ros/__init__.py`` and ``ros/env.py`` never import them: the CLI imports those
   before any ROS 2 context exists.
4. ament_index_python only in ``ros/`` and ``paths.py``.

Dynamic imports (``importlib.import_module``) are not seen; ``ros/convert.py`` is the one place that
uses them, for message classes.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vfm_pose_ros"

HEAVY = ("torch", "torchvision", "timm", "open_clip")
ROS_RUNTIME = ("rclpy", "rosidl_runtime_py", "rosidl_parser", "builtin_interfaces", "launch", "launch_ros",
               "cv_bridge", "tf2_ros", "message_filters")
GLUE = ("vfm_pose_ros.ros", "vfm_pose_ros.bench", "vfm_pose_ros.commands", "vfm_pose_ros.cli")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    name: str  # what it imports, dotted and absolute
    lazy: bool  # inside a function: runs only when called
    line: int


def _within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_ros_runtime(name: str) -> bool:
    top = name.split(".")[0]
    return top in ROS_RUNTIME or top.endswith(("_msgs", "_srvs"))


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def module_imports(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` with the absolute names it binds (``from a import b`` gives a and a.b)."""
    tree = ast.parse(source)
    out: list[Import] = []

    def visit(node, lazy: bool):
        for child in ast.iter_child_nodes(node):
            child_lazy = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend(Import(module, a.name, lazy, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(module, is_package, child)
                out.append(Import(module, base, lazy, child.lineno))
                out.extend(Import(module, f"{base}.{a.name}", lazy, child.lineno) for a in child.names if a.name != "*")
            visit(child, child_lazy)

    visit(tree, False)
    return out


def layer_violations(imp: Import) -> list[str]:
    """The rules this import breaks (see the module docstring), one line each."""
    m, n = imp.module, imp.name
    where = f"{m}:{imp.line}"
    found = []
    if _within(m, ["vfm_pose_ros.core"]):
        if _within(n, HEAVY) or _is_ros_runtime(n) or _within(n, ["ament_index_python", "rosbags"]):
            found.append(f"{where}: core stays free of torch, ROS and ament ({n.split('.')[0]})")
        if _within(n, ["vfm_pose_ros"]) and not _within(n, ["vfm_pose_ros.core", "vfm_pose_ros.paths"]):
            found.append(f"{where}: core imports only core ({n})")
    if _within(m, ["vfm_pose_ros.data", "vfm_pose_ros.models"]) and _within(n, GLUE):
        found.append(f"{where}: data and models run without the ROS layer and the glue")
    if _within(m, ["vfm_pose_ros.data", "vfm_pose_ros.models"]) and _within(n, ["vfm_pose_ros.report"]):
        found.append(f"{where}: data and models never import report (it sits above them)")
    if _is_ros_runtime(n):
        in_ros = _within(m, ["vfm_pose_ros.ros"]) and m not in ("vfm_pose_ros.ros", "vfm_pose_ros.ros.env")
        lazy_glue = imp.lazy and _within(m, ["vfm_pose_ros.bench", "vfm_pose_ros.commands"])
        if not (in_ros or lazy_glue):
            found.append(f"{where}: ROS is imported in ros/ (bench/ and commands/: inside functions only)")
    if _within(n, ["ament_index_python"]) and not (_within(m, ["vfm_pose_ros.ros"]) or m == "vfm_pose_ros.paths"):
        found.append(f"{where}: the ament index is read in ros/ and paths.py only")
    return found


def package_imports() -> list[Import]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        is_package = rel.name == "__init__"
        module = ".".join(rel.parts[:-1] if is_package else rel.parts)
        out += module_imports(path.read_text(), module, is_package)
    return out


def test_the_package_keeps_its_layers():
    imports = package_imports()
    assert len({i.module for i in imports}) > 50  # the walk saw the package
    problems = list(dict.fromkeys(v for imp in imports for v in layer_violations(imp)))  # a.b and a: one line
    assert not problems, "layer rules broken (see test/test_import_layers.py):\n" + "\n".join(problems)


@pytest.mark.parametrize("module, source, broken", [
    ("vfm_pose_ros.core.types", "import torch", "core stays free"),
    ("vfm_pose_ros.core.types", "def f():\n    from ament_index_python.packages import x", "core stays free"),
    ("vfm_pose_ros.core.types", "from ..data import bop", "core imports only core"),
    ("vfm_pose_ros.models.hybrid", "def f():\n    from ..ros.env import find_package_file", "without the ROS layer"),
    ("vfm_pose_ros.data.rosbag", "from vfm_pose_ros.ros import convert", "without the ROS layer"),
    ("vfm_pose_ros.data.stream_evaluation", "def f():\n    from ..report.tables import markdown_report",
     "never import report"),
    ("vfm_pose_ros.models.training", "from vfm_pose_ros.report import figures", "never import report"),
    ("vfm_pose_ros.core.metrics", "from ..report.tables import format_report", "core imports only core"),
    ("vfm_pose_ros.data.messages", "def f():\n    from sensor_msgs.msg import Image", "ROS is imported in ros/"),
    ("vfm_pose_ros.bench.pipeline", "import rclpy", "ROS is imported in ros/"),
    ("vfm_pose_ros.ros.env", "def f():\n    import rclpy", "ROS is imported in ros/"),
    ("vfm_pose_ros.report.figures", "from launch import LaunchDescription", "ROS is imported in ros/"),
    ("vfm_pose_ros.commands.doctor", "import ament_index_python", "ament index is read in ros/"),
])
def test_each_rule_catches_its_break(module, source, broken):
    problems = [v for imp in module_imports(source, module) for v in layer_violations(imp)]
    assert any(broken in p for p in problems), problems


@pytest.mark.parametrize("module, source", [
    ("vfm_pose_ros.bench.rosgraph", "def f():\n    import rclpy\n    from ..ros import convert"),
    ("vfm_pose_ros.ros.pose_node", "import rclpy\nfrom sensor_msgs.msg import Image"),
    ("vfm_pose_ros.paths", "def f():\n    from ament_index_python.packages import get_package_share_directory"),
    ("vfm_pose_ros.models.clip", "import torch\nfrom ..core.catalogue import Catalogue\nfrom ..data import messages"),
])
def test_allowed_imports_pass(module, source):
    assert [v for imp in module_imports(source, module) for v in layer_violations(imp)] == []
