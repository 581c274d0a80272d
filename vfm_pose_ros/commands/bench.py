"""measure per-stage latency, throughput and memory

    vfm-pose bench                       # both backends, real sizes + small, ROS, soak of 10,000 frames
    vfm-pose bench --quick               # small configs, few repeats, 200-frame soak (a few minutes)
    vfm-pose bench --backends dinov2 --only pipeline,ros --repeats 20
    vfm-pose bench --only phantom        # poses published on empty frames, each shipped checkpoint, RGB and RGB-D

Prints each section as it completes, then the tables and the issue's targets, and writes
everything (with the machine's CPU count, torch threads and load average) to --out as JSON.
OMP_WAIT_POLICY defaults to PASSIVE here as in the pose node (override it in the environment):
spinning OpenMP threads waiting for a busy core made the ViT-B/14 backbone 2-3 times slower here.
The real architectures (DINOv2 ViT-B/14 at 224, CLIP ViT-B/32) are measured with random
weights: latency does not depend on weight values, and no weights can be downloaded here.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT (e.g. 64x48), got {text!r}") from None
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError(f"size {text} is too small (at least 16x16)")
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench import SECTIONS

    parser.add_argument("--backends", default="dinov2,clip", help="comma-separated backends (default dinov2,clip)")
    parser.add_argument("--real-size", action=argparse.BooleanOptionalAction, default=None,
                        help="measure the real architectures with random weights (default: on, off with --quick)")
    parser.add_argument("--small", action=argparse.BooleanOptionalAction, default=True,
                        help="measure the small configs (models/*_small.pt, else SMALL_CONFIG; default on)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 10, quick 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 2, quick 1)")
    parser.add_argument("--ros-frames", type=int, default=None,
                        help="frames sent through the pose node for latency (default 20, quick 5)")
    parser.add_argument("--quick", action="store_true", help="small configs, few repeats, short soak")
    parser.add_argument("--soak-frames", type=int, default=None,
                        help="frames of the whole-graph soak (default 10000, quick 200; 0 skips it)")
    parser.add_argument("--soak-size", type=_size, default=(64, 48), help="soak image size WxH (default 64x48)")
    parser.add_argument("--soak-backend", default="dinov2", help="backend of the soak's pose node (default dinov2)")
    parser.add_argument("--phantom-frames", type=int, default=None,
                        help="empty frames (no catalogue object) of the phantom section, through dinov2, clip and "
                             "hybrid with and without depth (default 200, quick 20)")
    parser.add_argument("--only", default=None, metavar="SECTIONS",
                        help=f"comma-separated sections to run: {', '.join(SECTIONS)} (default all)")
    parser.add_argument("--no-ros", action="store_true", help="skip everything that needs rclpy")
    parser.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads here and in the node processes (OMP_NUM_THREADS)")
    parser.add_argument("--profile", action="store_true",
                        help="also write cProfile listings of the pipeline (profile_<backend>_<size>.txt beside --out)")
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"), help="JSON results file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_from_args(args):
    """BenchOptions from the parsed arguments; ValueError with the fix for a bad combination."""
    from ..bench import SECTIONS, BenchOptions
    from ..models import BACKENDS

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"unknown backend(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(BACKENDS)}")
    sections = SECTIONS
    if args.only:
        sections = tuple(s.strip() for s in args.only.split(",") if s.strip())
        bad = [s for s in sections if s not in SECTIONS]
        if bad:
            raise ValueError(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    kw = dict(backends=backends, small=args.small, device=args.device, sections=sections, ros=not args.no_ros,
              profile=args.profile, out=args.out, progress=not args.no_progress, soak_size=args.soak_size,
              soak_backend=args.soak_backend, threads=args.threads)
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.soak_backend not in BACKENDS:
        raise ValueError(f"unknown --soak-backend {args.soak_backend!r}; choose from {', '.join(BACKENDS)}")
    for name in ("repeats", "warmup", "ros_frames", "soak_frames", "phantom_frames"):
        value = getattr(args, name)
        if value is not None:
            if value < 0 or (value == 0 and name in ("repeats", "ros_frames", "phantom_frames")):
                need = ">= 0" if name in ("soak_frames", "warmup") else "positive"
                raise ValueError(f"--{name.replace('_', '-')} must be {need}, got {value}")
            kw[name] = value
    if args.real_size is not None:
        kw["real_size"] = args.real_size
    opt = BenchOptions.quick(**kw) if args.quick else BenchOptions(**kw)
    if not opt.real_size and not opt.small and {"pipeline", "ros"} & set(opt.sections):
        raise ValueError("--no-real-size and --no-small leave nothing to measure in the pipeline and ros sections")
    return opt


def run(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights only: never wait on the hub
    # as in the pose node (ros.env.configure_ros_env), before torch is imported: the backbone probes in this
    # process must not leave OpenMP threads spinning on the cores the node is about to use
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        opt = options_from_args(args)
    except ValueError as exc:
        print(f"vfm-pose bench: {exc}", file=sys.stderr)
        return 2
    from ..bench import run_bench

    res = run_bench(opt)
    failed = [k for k, v in res["sections"].items() if v["status"] == "failed"]
    if failed:
        print(f"vfm-pose bench: {len(failed)} section(s) failed: {', '.join(failed)} (details in {opt.out})",
              file=sys.stderr)
        return 1
    return 0
