"""Render a synthetic BOP dataset of catalogue objects (train and test splits).

Writes ``OUT/models`` (meshes in mm, models_info.json, names), ``OUT/train`` and/or
``OUT/test`` (scene 000000, 000001, ... of ``--frames-per-scene`` images each: rgb,
depth, mask, mask_visib, scene_gt*.json) and ``OUT/test_targets_bop19.json``.
Train and test frames come from different random streams of the same seed.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from ..data.scenes import LMO_K


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--objects", default=None,
                        help="comma-separated object names (default: every object of the catalogue, "
                             "i.e. driller_like,can_like for the package's own)")
    parser.add_argument("--objects-dir", default=None,
                        help="a BOP models folder (e.g. ../shared/data/lmo_models/models) or a YAML catalogue "
                             "directory (default: the package's config/objects)")
    parser.add_argument("--frames", type=int, default=200, help="train frames (default 200)")
    parser.add_argument("--test-frames", type=int, default=None, help="test frames (default: frames / 4, at least 1)")
    parser.add_argument("--split", choices=("train", "test", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--overwrite", action="store_true", help="delete existing split folders under --out first")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fx", type=float, default=LMO_K[0, 0])
    parser.add_argument("--fy", type=float, default=LMO_K[1, 1])
    parser.add_argument("--cx", type=float, default=None, help="default: the LM-O camera's, scaled to --width")
    parser.add_argument("--cy", type=float, default=None, help="default: the LM-O camera's, scaled to --height")
    parser.add_argument("--min-distance", type=float, default=0.5, help="metres")
    parser.add_argument("--max-distance", type=float, default=1.2, help="metres")
    parser.add_argument("--placement", choices=("mixed", "table", "floating"), default="mixed")
    parser.add_argument("--distractors", type=int, default=2, help="at most this many distractor shapes per frame")
    parser.add_argument("--empty-frac", type=float, default=0.0,
                        help="share of frames with no catalogue object, only background and distractors "
                             "(training negatives; phantom-rate tests); default 0")
    parser.add_argument("--min-visib", type=float, default=0.1,
                        help="redraw frames where an object is less visible than this fraction")
    parser.add_argument("--frames-per-scene", type=int, default=1000)
    parser.add_argument("--no-progress", action="store_true")


def _catalogue(args):
    from ..core.catalogue import Catalogue
    from ..paths import default_catalogue_dir

    names = [n.strip() for n in args.objects.split(",") if n.strip()] if args.objects else None
    path = Path(args.objects_dir) if args.objects_dir else default_catalogue_dir()
    return Catalogue.load(path, names=names)


def run(args) -> int:
    import sys

    from ..core.catalogue import Catalogue
    from ..data.bop import write_models_info
    from ..data.scenes import SceneConfig, SceneGenerator, intrinsics, write_split

    if args.frames < 0 or (args.test_frames is not None and args.test_frames < 0):
        print("vfm-pose synth: --frames and --test-frames must be >= 0", file=sys.stderr)
        return 2
    try:
        catalogue = _catalogue(args)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"vfm-pose synth: {exc}", file=sys.stderr)
        return 2
    objects = sorted((o for o in catalogue if o.faces is not None and len(o.faces)), key=lambda o: o.class_id)
    skipped = sorted(set(catalogue.names) - {o.name for o in objects})
    if skipped:
        print(f"vfm-pose synth: skipping objects without faces (point clouds cannot be rendered): {skipped}")
    if not objects:
        print("vfm-pose synth: no renderable objects selected", file=sys.stderr)
        return 2
    cx = args.cx if args.cx is not None else LMO_K[0, 2] * args.width / 640.0
    cy = args.cy if args.cy is not None else LMO_K[1, 2] * args.height / 480.0
    try:
        config = SceneConfig(width=args.width, height=args.height, K=intrinsics(args.fx, args.fy, cx, cy),
                             distance=(args.min_distance, args.max_distance), placement=args.placement,
                             distractors=max(0, args.distractors), min_visib_fract=args.min_visib,
                             empty_prob=args.empty_frac)
    except ValueError as exc:
        print(f"vfm-pose synth: {exc}", file=sys.stderr)
        return 2
    test_frames = args.test_frames if args.test_frames is not None else max(1, args.frames // 4)
    plan = []
    if args.split in ("train", "both") and args.frames > 0:
        plan.append(("train", args.frames, 0))
    if args.split in ("test", "both") and test_frames > 0:
        plan.append(("test", test_frames, 1))
    out = Path(args.out)
    for split, _, _ in plan:
        d = out / split
        if d.exists() and any(d.iterdir()):
            if not args.overwrite:
                print(f"vfm-pose synth: {d} already holds data; pass --overwrite to replace it or choose another --out",
                      file=sys.stderr)
                return 2
            shutil.rmtree(d)

    t0 = time.perf_counter()
    write_models_info(out / "models", Catalogue(objects))
    generator = SceneGenerator(objects, config, seed=args.seed)
    summaries = [write_split(generator, out, split, n, stream, frames_per_scene=args.frames_per_scene,
                             progress=not args.no_progress) for split, n, stream in plan]
    total = time.perf_counter() - t0

    print(f"\nsynthetic BOP dataset: {out.resolve()}")
    print(f"  objects: {', '.join(f'{o.name} (id {o.class_id})' for o in objects)}; seed {args.seed}; "
          f"{args.width}x{args.height}, fx {args.fx:.2f} fy {args.fy:.2f} cx {cx:.2f} cy {cy:.2f}")
    print(f"  {'split':6} {'frames':>6} {'instances':>9} {'mean visib':>10} {'redrawn':>8} {'below min':>9} "
          f"{'seconds':>8} {'frames/s':>8}")
    for s in summaries:
        print(f"  {s.split:6} {s.frames:6d} {s.objects:9d} {s.mean_visib_fract:10.3f} {s.rejected_draws:8d} "
              f"{s.below_threshold:9d} {s.seconds:8.1f} {s.frames / max(s.seconds, 1e-9):8.1f}")
    print(f"  total {total:.1f} s")
    if any(s.below_threshold for s in summaries):
        print(f"  note: 'below min' frames kept an object under --min-visib {args.min_visib} after "
              f"{config.max_tries} draws; scene_gt_info.json records their true visib_fract")
    if any(s.split == "test" for s in summaries):
        print(f"  next: vfm-pose make-bag --dataset {out} --split test --out {out / 'test.mcap'}")
    return 0
