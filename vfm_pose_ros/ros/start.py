"""Process entry of every node: the quiet SIGINT/SIGTERM handler is in place before the node's imports.

The launcher stops the whole graph when one node dies at once. A node still importing numpy, scipy or
torch at that moment would otherwise die of a KeyboardInterrupt traceback and, for the evaluator,
without writing the report that says the run was incomplete. Here the signal is only recorded
(:mod:`.spin`); the node honours it once it is up.

``python -m vfm_pose_ros.ros.start MODULE [ARGS...]`` (what ``vfm-pose launch`` runs) or the console
scripts ``pose_node``, ``evaluator_node`` and ``bag_player`` (what ``ros2 launch`` runs).
"""
from __future__ import annotations

import importlib
import runpy
import sys

from . import spin


def _main_of(module: str) -> int:
    spin.install_handlers()
    return importlib.import_module(module).main()


def pose_node() -> int:
    return _main_of("vfm_pose_ros.ros.pose_node")


def evaluator_node() -> int:
    return _main_of("vfm_pose_ros.ros.evaluator_node")


def bag_player() -> int:
    return _main_of("vfm_pose_ros.ros.player")


def main(argv: list[str] | None = None) -> None:
    """Run ``argv[1]`` as ``python -m`` would, with ``argv[2:]`` as its arguments."""
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2:
        sys.exit("usage: python -m vfm_pose_ros.ros.start MODULE [ARGS...]")
    spin.install_handlers()
    sys.argv[:] = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
