"""write a BOP scene as a rosbag2 (images, camera info, depth, ground truth, tf_static)

    vfm-pose make-bag --dataset DIR [--split test] [--scene N] [--objects-dir DIR]
                      [--storage mcap|sqlite3] [--fps 30] [--compress] --out BAG

Topics, encodings and stamps are described in vfm_pose_ros/data/rosbag.py; replay the
bag with `vfm-pose play BAG`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, required=True, help="BOP dataset root (holds the split folders)")
    parser.add_argument("--split", default="test", help="split folder (default: test)")
    parser.add_argument("--scene", type=int, default=None, help="only this scene id (default: all scenes)")
    parser.add_argument("--objects-dir", type=Path, default=None,
                        help="object models for the boxes: a YAML catalogue, a BOP models folder, a dataset root "
                             "or a mesh file (default: the dataset's models/)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage (default mcap)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the stamps (default 30)")
    parser.add_argument("--compress", action="store_true",
                        help="zstd compression (chunks for mcap, messages for sqlite3)")
    parser.add_argument("--out", type=Path, required=True, help="bag directory to create (must not exist)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..core.catalogue_loader import load_catalogue
    from ..data.bop import BopDataset
    from ..data.rosbag import bag_info, write_bag

    try:
        catalogue = load_catalogue(args.objects_dir) if args.objects_dir else None
        dataset = BopDataset(args.dataset, args.split, catalogue=catalogue)
        summary = write_bag(dataset, args.out, scene=args.scene, storage=args.storage, fps=args.fps,
                            compress=args.compress, catalogue=catalogue, progress=not args.quiet)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as exc:
        print(f"vfm-pose make-bag: {exc}", file=sys.stderr)
        return 2
    print(summary)
    info = bag_info(summary.path)
    for topic, (msgtype, count) in sorted(info.topics.items()):
        print(f"  {topic:45s} {msgtype:35s} {count:6d}")
    print(f"  duration {info.duration_s:.2f} s at {args.fps:g} fps; replay: vfm-pose play {summary.path}")
    return 0
