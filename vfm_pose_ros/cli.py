"""`vfm-pose`: the user command. Each subcommand lives in vfm_pose_ros/commands/<module>.py.

Command modules are imported only when their subcommand runs, so `vfm-pose --help`
stays fast and a missing optional dependency (torch, rclpy) only affects the
commands that need it.

User errors (a missing, truncated or wrong-backend checkpoint, a missing dataset or file, a bad value)
end every command with one line that says what is wrong and how to fix it, and exit status 2;
``vfm-pose --debug COMMAND ...`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .models.backbones import WeightsUnavailable

# subcommand -> module under vfm_pose_ros.commands (each defines add_arguments(parser) and run(args) -> int)
COMMANDS = {
    "doctor": "doctor",
    "add-object": "add_object",
    "onboard": "onboard",
    "eval": "eval",
    "synth": "synth",
    "make-bag": "make_bag",
    "play": "play",
    "train": "train",
    "predict": "predict",
    "calibrate": "calibrate",
    "compare": "compare",
    "launch": "launch",
    "bench": "bench",
}

# One-line help per command, kept here so --help needs no imports.
HELP = {
    "doctor": "report what is installed and usable (ROS 2, messages, torch/CUDA, backbones, DDS profile)",
    "add-object": "add one object to a YAML catalogue from its mesh (checks it, writes the entry)",
    "onboard": "from a catalogue to a trained checkpoint: render, train, evaluate, report, launch command",
    "eval": "score BOP results (CSV) against a BOP dataset: ADD, ADD-S, errors, accuracies, AUC, MSSD/MSPD",
    "synth": "render a synthetic BOP dataset of catalogue objects (train and test splits)",
    "make-bag": "write a BOP scene as a rosbag2 (images, camera info, depth, ground truth, tf_static)",
    "play": "replay a rosbag2 into ROS (recorded timing, or lockstep with the pose node)",
    "train": "train a pose backend (clip or dinov2) on a BOP dataset",
    "predict": "run a pose backend over a BOP dataset and write BOP results",
    "calibrate": "fit a checkpoint's score calibration: scores that are the chance a pose is right",
    "compare": "compare backends on the same frames and write the report with figures",
    "bench": "measure per-stage latency, throughput and memory",
    "launch": "start the ROS graph (pose node, player, evaluator) without launch_ros",
}


# What a user gets wrong (files, checkpoints, values): one line and status 2, not a traceback. A checkpoint
# error (models.checkpoint.CheckpointError) and a corrupt file's error are ValueErrors; a missing one is an OSError.
# WeightsUnavailable: a backbone weights file that is missing, offline, or not the file the config names.
USER_ERRORS = (OSError, ValueError, KeyError, EOFError, WeightsUnavailable)
USER_ERROR_STATUS = 2


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    text = " ".join(str(text).split()) or type(exc).__name__
    return text if not isinstance(exc, OSError) or exc.filename is None or str(exc.filename) in text \
        else f"{text} ({exc.filename})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vfm-pose",
        description="6D object pose with vision foundation models (CLIP, DINOv2) for ROS 2.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=HELP.get(name, ""), add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # anywhere: vfm-pose --debug predict ... or vfm-pose predict ... --debug
    argv = [a for a in argv if a != "--debug"]
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
    try:
        return int(module.run(args) or 0)
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"vfm-pose {name}: {_one_line(exc)} (--debug shows the traceback)", file=sys.stderr)
        return USER_ERROR_STATUS
    except SystemExit as exc:  # raise SystemExit("what is wrong"): a user error too
        if isinstance(exc.code, str):
            print(f"vfm-pose {name}: {exc.code}", file=sys.stderr)
            return USER_ERROR_STATUS
        raise


if __name__ == "__main__":
    sys.exit(main())
