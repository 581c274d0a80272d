"""score BOP results (CSV) against a BOP dataset: ADD, ADD-S, errors, accuracies, AUC, BOP AR (VSD/MSSD/MSPD)

Prints one row per object and the pooled overall row, and writes the JSON report (errors in mm,
degrees and pixels; accuracies and recalls as fractions). Metric definitions: vfm_pose_ros/core/metrics.py.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, type=Path, help="BOP dataset root (holds <split>/ and models/)")
    parser.add_argument("--results", required=True, type=Path,
                        help="BOP results CSV: scene_id,im_id,obj_id,score,R,t,time (t in mm)")
    parser.add_argument("--split", default="test", help="split folder under the dataset root (default: test)")
    parser.add_argument("--targets", default="auto",
                        help="'auto' (default): the dataset's test_targets_bop19.json for a test split when it has "
                             "one (BOP 2019 protocol), else all ground truth; 'bop19', 'none' (all ground truth), "
                             "or a targets JSON")
    parser.add_argument("--objects-dir", type=Path, default=None,
                        help="object models: a BOP models folder, a YAML catalogue directory, a dataset root or a "
                             "mesh file (default: the dataset's models_eval/ or models/)")
    parser.add_argument("--objects", default=None,
                        help="comma-separated names: score only these objects (the others' ground truth and results "
                             "are left out, and the report says which); default: every object of the catalogue")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="only the first N frames of the split, as `vfm-pose predict --max-frames N` takes them")
    parser.add_argument("--max-points", type=int, default=None,
                        help="subsample model vertices for the metrics (default: all, as BOP does)")
    parser.add_argument("--no-vsd", action="store_true",
                        help="skip VSD (no depth images read, no rendering): BOP AR is then not available")
    parser.add_argument("--vsd-delta-mm", type=float, default=None,
                        help="VSD visibility tolerance (default: BOP's, 5 mm for ITODD, else 15 mm)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    parser.add_argument("--instances-csv", type=Path, default=None, help="also write one CSV row per ground truth")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..core.catalogue_loader import parse_object_names
    from ..data.bop import BopDataset, read_results_csv
    from ..data.evaluation import (
        default_targets,
        evaluate,
        first_frames,
        make_evaluator,
        resolve_catalogue,
        vsd_delta_for,
    )
    from ..report.tables import format_report

    try:
        targets = default_targets(args.dataset, args.split) if args.targets == "auto" else args.targets
        dataset = BopDataset(args.dataset, split=args.split, targets=targets)
        results = read_results_csv(args.results)
        catalogue = resolve_catalogue(dataset, args.objects_dir)
        delta = vsd_delta_for(args.dataset) if args.vsd_delta_mm is None else args.vsd_delta_mm / 1000.0
        evaluator = make_evaluator(catalogue, max_points=args.max_points, vsd=not args.no_vsd, vsd_delta=delta)
        report = evaluate(dataset, results, catalogue, progress=not args.quiet, evaluator=evaluator,
                          objects=parse_object_names(args.objects),
                          frames=first_frames(args.dataset, args.split, args.max_frames))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"vfm-pose eval: {msg}", file=sys.stderr)
        return 2

    if report["dataset"].get("objects_scored"):
        left = report["dataset"]["objects_left_out"]
        print(f"scoring only {', '.join(report['dataset']['objects_scored'])}; left out: "
              f"{', '.join(left) if left else 'no other object in these frames'}")
    print(format_report(report))
    ov = report["overall"]
    if ov.get("bop19_average_recall") is not None:
        print(f"\nBOP AR {ov['bop19_average_recall']:.3f} (VSD {ov['bop19_average_recall_vsd']:.3f}, "
              f"MSSD {ov['bop19_average_recall_mssd']:.3f}, MSPD {ov['bop19_average_recall_mspd']:.3f})"
              + ("" if dataset.targets is not None else " (over all ground truth: no BOP targets file used)"))
    else:
        print(f"\nBOP AR not available: {ov.get('bop19_unavailable_reason')}")
    info = report["dataset"]
    print(f"\n{report['n_frames']} frames, {report['overall']['n_gt']} ground-truth instances, "
          f"{info['n_results']} results ({info['n_results_scored']} scored"
          + (f", {info['n_results_invalid']} invalid (not finite, or R not a rotation)" if info["n_results_invalid"]
             else "")
          + (f", {info['n_results_outside_dataset']} outside the evaluated frames" if info["n_results_outside_dataset"]
             else "")
          + (f", unknown obj_ids {info['unknown_obj_ids']}" if info["unknown_obj_ids"] else "") + ")")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.out}")
    if args.instances_csv:
        import csv

        args.instances_csv.parent.mkdir(parents=True, exist_ok=True)
        rows = [r.to_dict() for r in evaluator.instances]
        with open(args.instances_csv, "w", newline="") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=list(rows[0]))
                w.writeheader()
                w.writerows(rows)
        print(f"per-instance results: {args.instances_csv}")
    return 0
