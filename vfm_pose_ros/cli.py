"""`vfm-pose`: the user command. Each subcommand lives in vfm_pose_ros/commands/<module>.py.

Command modules are imported only when their subcommand runs, so `vfm-pose --help`
stays fast and a missing optional dependency (torch, rclpy) only affects the
commands that need it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module under vfm_pose_ros.commands (each defines add_arguments(parser) and run(args) -> int)
COMMANDS = {
    "doctor": "doctor",
    "eval": "eval",
    "synth": "synth",
    "make-bag": "make_bag",
    "play": "play",
    "train": "train",
    "predict": "predict",
    "compare": "compare",
    "launch": "launch",
    "bench": "bench",
}

# One-line help per command, kept here so --help needs no imports.
HELP = {
    "doctor": "report what is installed and usable (ROS 2, messages, torch/CUDA, backbones, DDS profile)",
    "eval": "score BOP results (CSV) against a BOP dataset: ADD, ADD-S, errors, accuracies, AUC, MSSD/MSPD",
    "synth": "render a synthetic BOP dataset of catalogue objects (train and test splits)",
    "make-bag": "write a BOP scene as a rosbag2 (images, camera info, depth, ground truth, tf_static)",
    "play": "replay a rosbag2 into ROS (recorded timing, or lockstep with the pose node)",
    "train": "train a pose backend (clip or dinov2) on a BOP dataset",
    "predict": "run a pose backend over a BOP dataset and write BOP results",
    "compare": "compare backends on the same frames and write the report with figures",
    "bench": "measure per-stage latency, throughput and memory",
    "launch": "start the ROS graph (pose node, player, evaluator) without launch_ros",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfm-pose",
        description="6D object pose with vision foundation models (CLIP, DINOv2) for ROS 2.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=HELP.get(name, ""), add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"vfm-pose: unknown command {argv[0]!r}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"vfm_pose_ros.commands.{COMMANDS[name]}")
    sub = argparse.ArgumentParser(prog=f"vfm-pose {name}", description=HELP.get(name) or module.__doc__)
    module.add_arguments(sub)
    args = sub.parse_args(rest)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
