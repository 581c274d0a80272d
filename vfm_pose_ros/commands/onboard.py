"""from a catalogue to a trained checkpoint in one command: render, train, evaluate, report, launch command

    vfm-pose onboard --objects-dir my_objects --objects driller --time-budget 30 --out runs/driller

Stages (each the ordinary command, so any one can be rerun by hand; the report lists them):

1. ``vfm-pose synth``: render ``--test-frames`` held-back frames first (their speed gives the ETA,
   printed before the long part), then ``--frames`` training frames, into ``OUT/data``;
2. ``vfm-pose train`` for ``--time-budget`` minutes (or ``--max-steps``) -> ``OUT/<backend>.pt``;
3. ``vfm-pose calibrate``: scores that are the chance a pose is right, so the node's ``score_threshold``
   means for this checkpoint what it means for the shipped ones (``OUT/<backend>.pt.calibration.json``);
4. ``vfm-pose predict`` and ``vfm-pose eval --objects ...`` on the held-back frames;
5. ``OUT/report.json`` and ``OUT/report.md``, and the command that starts the pose node on the result.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..paths import default_catalogue_dir

STAGES = 6
ROUGH_EVAL_S_PER_FRAME = 1.0  # predict + eval of one VGA frame with a small model on a CPU core, roughly


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objects-dir", default=None,
                   help="the objects: a YAML catalogue folder (vfm-pose add-object writes one), a BOP models folder, "
                        "a dataset root or a mesh file (default: the package's config/objects)")
    p.add_argument("--objects", default=None, help="comma-separated names (default: every object of the catalogue)")
    p.add_argument("--unit", choices=("m", "mm"), default=None, help="unit of a single mesh file")
    p.add_argument("--backend", choices=("dinov2", "clip"), default="dinov2")
    p.add_argument("--config", default=None, help="training config (default: config/train/<backend>_small.yaml)")
    p.add_argument("--frames", type=int, default=400, help="training frames to render (default 400)")
    p.add_argument("--test-frames", type=int, default=None, help="held-back frames (default: frames / 4, at least 2)")
    p.add_argument("--time-budget", type=float, default=30.0, help="training minutes (default 30)")
    p.add_argument("--max-steps", type=int, default=None, help="stop training after this many steps (smoke tests)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-vsd", action="store_true", help="evaluate without VSD (faster; no BOP AR)")
    p.add_argument("--out", type=Path, required=True, help="run folder: data/, checkpoint, results, report")
    p.add_argument("--overwrite", action="store_true", help="replace the rendered data of an earlier run in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_stage(command: str, argv: list[str]) -> None:
    """Run one vfm-pose command in this process, as the user would type it; a failure ends the run."""
    import importlib

    from ..cli import COMMANDS, HELP

    module = importlib.import_module(f"vfm_pose_ros.commands.{COMMANDS[command]}")
    parser = argparse.ArgumentParser(prog=f"vfm-pose {command}", description=HELP.get(command))
    module.add_arguments(parser)
    if int(module.run(parser.parse_args(argv)) or 0) != 0:
        raise SystemExit(f"stage `vfm-pose {command}` failed (its message is above); rerun it alone with: "
                         f"vfm-pose {command} {' '.join(argv)}")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _stage(k: int, text: str) -> float:
    print(f"\n[{k}/{STAGES}] {text}", flush=True)
    return time.perf_counter()


def _synth_argv(args, split: str, frames: int) -> list[str]:
    argv = ["--split", split, "--frames" if split == "train" else "--test-frames", str(frames), "--out",
            str(args.out / "data"), "--seed", str(args.seed), "--width", str(args.width), "--height", str(args.height)]
    if args.objects_dir:
        argv += ["--objects-dir", str(args.objects_dir)]
    if args.objects:
        argv += ["--objects", args.objects]
    if args.unit:
        argv += ["--unit", args.unit]
    return argv + (["--overwrite"] if args.overwrite else []) + (["--no-progress"] if args.quiet else [])


def run(args) -> int:
    from ..core.catalogue_loader import load_catalogue, parse_object_names

    if args.frames < 1 or args.time_budget <= 0:
        raise ValueError("--frames must be >= 1 and --time-budget > 0")
    catalogue = load_catalogue(args.objects_dir, names=parse_object_names(args.objects), unit=args.unit)
    names = ",".join(catalogue.names)
    test_frames = args.test_frames if args.test_frames is not None else max(2, args.frames // 4)
    config = args.config or str(default_catalogue_dir().parents[1] / "config" / "train" / f"{args.backend}_small.yaml")
    data, ckpt = args.out / "data", args.out / f"{args.backend}.pt"
    results, eval_json = args.out / "results.csv", args.out / "eval.json"
    stages, seconds = [], {}

    t0 = _stage(1, f"render {test_frames} held-back frames of {names} (their speed sets the ETA)")
    stages.append(("synth", _synth_argv(args, "test", test_frames)))
    run_stage(*stages[-1])
    seconds["render_test"] = time.perf_counter() - t0
    per_frame = seconds["render_test"] / test_frames
    calibration_frames = max(10, test_frames)  # with objects, and as many without; with and without depth
    eta = (per_frame * args.frames + args.time_budget * 60
           + ROUGH_EVAL_S_PER_FRAME * (test_frames + 4 * calibration_frames))
    print(f"\nETA: about {_minutes(eta)} from now: render {args.frames} frames ~{_minutes(per_frame * args.frames)}, "
          f"train up to {args.time_budget:g} min" + (f" or {args.max_steps} steps" if args.max_steps else "")
          + f", calibrate ~{_minutes(ROUGH_EVAL_S_PER_FRAME * 4 * calibration_frames)}, predict and evaluate "
          f"{test_frames} frames ~{_minutes(ROUGH_EVAL_S_PER_FRAME * test_frames)}. "
          "Ctrl-C stops; each stage's command is in the report to resume by hand.", flush=True)

    t0 = _stage(2, f"render {args.frames} training frames")
    stages.append(("synth", _synth_argv(args, "train", args.frames)))
    run_stage(*stages[-1])
    seconds["render_train"] = time.perf_counter() - t0

    t0 = _stage(3, f"train {args.backend} for up to {args.time_budget:g} min")
    train_argv = ["--backend", args.backend, "--config", config, "--dataset", str(data), "--objects-dir", str(data),
                  "--objects", names, "--time-budget", str(args.time_budget), "--device", args.device,
                  "--out", str(ckpt)] + (["--max-steps", str(args.max_steps)] if args.max_steps else []) \
        + (["--quiet"] if args.quiet else [])
    stages.append(("train", train_argv))
    run_stage(*stages[-1])
    seconds["train"] = time.perf_counter() - t0

    quiet = ["--quiet"] if args.quiet else []
    t0 = _stage(4, f"calibrate the scores on {calibration_frames} frames with and {calibration_frames} without objects")
    stages.append(("calibrate", ["--checkpoint", str(ckpt), "--catalogue", str(data), "--frames",
                                 str(calibration_frames), "--width", str(args.width), "--height", str(args.height),
                                 "--device", args.device] + quiet))
    run_stage(*stages[-1])
    seconds["calibrate"] = time.perf_counter() - t0

    t0 = _stage(5, f"predict and evaluate on the {test_frames} held-back frames")
    stages.append(("predict", ["--checkpoint", str(ckpt), "--dataset", str(data), "--split", "test",
                               "--device", args.device, "--out", str(results)] + quiet))
    run_stage(*stages[-1])
    stages.append(("eval", ["--dataset", str(data), "--results", str(results), "--split", "test", "--objects", names,
                            "--out", str(eval_json)] + (["--no-vsd"] if args.no_vsd else []) + quiet))
    run_stage(*stages[-1])
    seconds["evaluate"] = time.perf_counter() - t0

    _stage(6, "report")
    launch = f"vfm-pose launch pose checkpoint:={ckpt} backend:={args.backend}"
    write_report(args.out, names, ckpt, eval_json, stages, seconds, launch)
    print(f"\ncheckpoint: {ckpt}\nreport: {args.out / 'report.md'}\nstart the pose node on it:\n  {launch}")
    return 0


def write_report(out: Path, names: str, ckpt: Path, eval_json: Path, stages, seconds: dict, launch: str) -> None:
    """report.json (numbers, commands) and report.md (the same for people) in the run folder."""
    overall = json.loads(eval_json.read_text())["overall"]
    keep = ("n_gt", "add_s_01d_acc", "add_01d_acc", "acc_5cm5deg", "rot_err_mean_deg", "trans_err_mean_mm",
            "bop19_average_recall")
    summary = {k: overall.get(k) for k in keep}
    commands = [f"vfm-pose {name} {' '.join(argv)}" for name, argv in stages]
    report = {"objects": names.split(","), "checkpoint": str(ckpt), "held_back": summary,
              "seconds": {k: round(v, 1) for k, v in seconds.items()}, "commands": commands, "launch": launch}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# Onboarding {names}", "", f"Checkpoint: `{ckpt}`", "", "## Held-back frames", ""]
    lines += [f"- {k}: {'n/a' if v is None else (f'{v:.3f}' if isinstance(v, float) else v)}"
              for k, v in summary.items()]
    lines += ["", "## Time", ""] + [f"- {k}: {_minutes(v)}" for k, v in seconds.items()]
    lines += ["", "## The same, step by step", "", "```"] + commands + ["```", "", "## Start the pose node", "",
                                                                      f"    {launch}", ""]
    (out / "report.md").write_text("\n".join(lines))
