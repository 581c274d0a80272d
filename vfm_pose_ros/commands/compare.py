"""compare backends on the same frames and write the report with figures

Dataset mode (``--dataset DIR``) runs each backend's estimator in this process over the same
frames, writes BOP results per backend (``results_<backend>.csv``) and a ``targets.json`` naming
the scored frames, and scores them exactly as ``vfm-pose eval --targets OUT/targets.json`` does.
Bag mode (``--bag BAG``, :mod:`vfm_pose_ros.commands.compare_bag`) runs the real ROS graph once per
backend in lockstep (bag player -> pose node -> evaluator) and reports what the evaluator and the pose
node produced.

Either way the folder ``--out`` gets results.json, table.csv, report.md, report.html and the
figures (vfm_pose_ros/report/figures.py), and the table is printed.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_CHECKPOINTS = {"clip": "models/clip_small.pt", "dinov2": "models/dinov2_small.pt",
                       "hybrid": "models/hybrid_small.pt"}
TARGETS_JSON = "targets.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", type=Path, help="BOP dataset root: run the estimators in this process")
    src.add_argument("--bag", type=Path, help="rosbag2 (vfm-pose make-bag): run the ROS graph in lockstep")
    parser.add_argument("--backends", default="clip,dinov2",
                        help="comma-separated backends to compare (default clip,dinov2; also hybrid)")
    for b in ("clip", "dinov2", "hybrid"):
        parser.add_argument(f"--checkpoint-{b}", type=Path, default=None, metavar="CKPT",
                            help=f"{b} checkpoint (default {DEFAULT_CHECKPOINTS[b]} of the package)")
    parser.add_argument("--split", default="test", help="dataset split (default test)")
    parser.add_argument("--targets", default=None,
                        help="'bop19' or a targets JSON: score only those frames and instances (dataset mode)")
    parser.add_argument("--objects-dir", type=Path, default=None,
                        help="object models for the metrics (default: the dataset's models_eval/ or models/)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="use the first N frames only")
    parser.add_argument("--prompt", default=None, help="text prompt for prompt-driven backends (clip, hybrid)")
    parser.add_argument("--no-depth", action="store_true", help="give the estimators RGB only (no ICP)")
    parser.add_argument("--score-threshold", type=float, default=None, metavar="S",
                        help="drop poses scored below S (dataset mode default: keep all, as `vfm-pose predict`; "
                             "bag mode default: the pose node's score_threshold in config/pose.yaml)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    parser.add_argument("--figure-frames", type=int, default=3, metavar="K",
                        help="frames per backend in the Figure 3 panel, spread evenly over the run (default 3)")
    parser.add_argument("--renderer", choices=("auto", "open3d", "matplotlib"), default="auto",
                        help="point-cloud figure renderer (auto: Open3D offscreen, else matplotlib)")
    parser.add_argument("--no-figures", action="store_true", help="skip the figures (numbers only)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="bag mode: wall-clock limit for one backend's ROS run (default 600)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the report")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


class CompareError(RuntimeError):
    """A user-facing failure: the message says what is wrong and how to fix it."""


def parse_backends(text: str) -> list[str]:
    from ..models import BACKENDS

    names = [b.strip() for b in text.split(",") if b.strip()]
    if not names:
        raise CompareError("--backends is empty; give e.g. --backends clip,dinov2")
    known = set(BACKENDS) | {"hybrid"}
    unknown = [b for b in names if b not in known]
    if unknown:
        raise CompareError(f"unknown backend(s) {unknown}; choose from: {', '.join(sorted(known))}")
    if len(set(names)) != len(names):
        raise CompareError(f"--backends lists a backend twice: {text}")
    return names


def default_checkpoint(backend: str) -> Path:
    """The shipped checkpoint of a backend, found in the source tree or the installed share directory."""
    from ..ros.env import find_package_file

    rel = DEFAULT_CHECKPOINTS.get(backend, f"models/{backend}_small.pt")
    try:
        return find_package_file(rel)
    except FileNotFoundError as exc:
        raise CompareError(
            f"no {backend} checkpoint: {exc}\nTrain one with `vfm-pose train --backend {backend} --small "
            f"--dataset DIR --epochs N --out {rel}`, or pass --checkpoint-{backend} PATH."
        ) from None


def resolve_checkpoints(args, backends: list[str]) -> dict[str, Path]:
    out = {}
    for b in backends:
        given = getattr(args, f"checkpoint_{b}", None)
        if given is not None:
            if not Path(given).is_file():
                raise CompareError(f"--checkpoint-{b} {given}: file not found "
                                   f"(train one with `vfm-pose train --backend {b} ... --out {given}`)")
            out[b] = Path(given)
        else:
            out[b] = default_checkpoint(b)
    return out


def describe_device(device) -> str:
    """The device in words for the report: 'cpu (2 cores, <model>)' or 'cuda:0 (<GPU name>)'."""
    import os

    import torch

    from ..models.estimator import pick_device

    dev = pick_device(device)
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = ", " + line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} cores{model}; torch threads {torch.get_num_threads()})"


def _estimator_settings(est, ckpt: Path) -> dict:
    import torch

    return {"checkpoint": str(ckpt), "device": str(est.device), "precision": getattr(est, "precision", None),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "config": {k: v for k, v in (getattr(est, "config", {}) or {}).items()
                       if isinstance(v, (str, int, float, bool)) or v is None}}


def _run_frames(args, dataset, keys: list, pipelines: dict, catalogue, fig_idx: set[int]) -> tuple:
    """(frame records, poses, ms, stage ms per backend): every pipeline on every frame; images are kept only for
    the panels and the frame with the most objects (Figure c)."""
    from tqdm import tqdm

    from ..pipeline import CameraFrame
    from ..report.compare import FrameRecord, rename_gts

    frames: list[FrameRecord] = []
    preds, lat, stage_ms = ({b: [] for b in pipelines} for _ in range(3))
    best_multi = -1  # index of the frame with the most objects so far (kept with its images for Figure c)
    warmed = set()
    bar = tqdm(keys, desc="compare", unit="frame", disable=args.quiet)
    for i, (sid, iid) in enumerate(bar):
        sf = dataset.frame(sid, iid)
        _process_frame(pipelines, CameraFrame.of(sf), warmed, preds, lat, stage_ms)
        gts = rename_gts(sf.gts, catalogue)
        keep = i in fig_idx
        if not args.no_figures and (best_multi < 0 or len(gts) > len(frames[best_multi].gts) or (
                len(gts) == len(frames[best_multi].gts) and best_multi in fig_idx and i not in fig_idx)):
            if best_multi >= 0 and best_multi not in fig_idx:
                frames[best_multi].rgb = frames[best_multi].depth = None
            best_multi, keep = i, True
        frames.append(FrameRecord(sid, iid, sf.K, gts, sf.width, sf.rgb if keep else None,
                                  sf.depth if keep else None))
        bar.set_postfix({b: f"{sum(v) / len(v):.0f} ms" for b, v in lat.items()})
    return frames, preds, lat, stage_ms


def _score_backend(args, b: str, est, checkpoint: Path, frames: list, preds: list, lat: list, stage_ms: list,
                   catalogue, scored):
    """One backend's BackendResult: its results CSV written, read back and scored as `vfm-pose eval` does."""
    from ..data.bop import read_results_csv, write_results_csv
    from ..data.evaluation import evaluate, make_evaluator, vsd_delta_for
    from ..report.compare import BackendResult, estimator_keypoints, latency_summary

    out = Path(args.out)
    rows = _result_rows(b, frames, preds, lat, catalogue, est.catalogue)
    csv_path = write_results_csv(out / f"results_{b}.csv", rows)
    ev = make_evaluator(catalogue, vsd_delta=vsd_delta_for(args.dataset))  # VSD where the frames have depth
    # Score the file as written (read back), the same call as `vfm-pose eval`.
    report = evaluate(scored, read_results_csv(csv_path), catalogue, progress=False, evaluator=ev)
    settings = _estimator_settings(est, checkpoint)
    settings["results_csv"] = csv_path.name
    settings["eval_command"] = (f"vfm-pose eval --dataset {args.dataset} --split {args.split} "
                                f"--targets {out / TARGETS_JSON} --results {csv_path}")
    latency = latency_summary(lat, None, stage_ms,
                              how="in-process FramePipeline.process (the pose node's path) wall-clock per "
                                  "frame, after one warm-up frame")
    drawn = {i: preds[i] for i, fr in enumerate(frames) if fr.rgb is not None}
    return BackendResult(b, report, ev.instances, latency, settings, drawn, estimator_keypoints(est))


def run_dataset(args, backends: list[str], checkpoints: dict[str, Path]) -> dict:
    """Dataset mode: in-process estimators, BOP results CSVs, scored like `vfm-pose eval`."""
    from ..data.bop import BopDataset, save_json
    from ..data.evaluation import resolve_catalogue
    from ..report.compare import pick_figure_frames, write_report

    dataset = BopDataset(args.dataset, split=args.split, targets=args.targets)
    catalogue = resolve_catalogue(dataset, args.objects_dir)
    keys = dataset.keys()
    if args.max_frames is not None:
        keys = keys[: max(0, args.max_frames)]
    if not keys:
        raise CompareError(f"no frames to compare in {dataset.split_dir} (check --split, --targets, --max-frames)")

    pipelines = _load_pipelines(args, backends, checkpoints)
    estimators = {b: p.estimator for b, p in pipelines.items()}
    fig_idx = set(pick_figure_frames(len(keys), args.figure_frames if not args.no_figures else 0))
    frames, preds, lat, stage_ms = _run_frames(args, dataset, keys, pipelines, catalogue, fig_idx)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / TARGETS_JSON, _targets(frames))
    scored = BopDataset(args.dataset, split=args.split, targets=out / TARGETS_JSON)
    results = [_score_backend(args, b, estimators[b], checkpoints[b], frames, preds[b], lat[b], stage_ms[b],
                              catalogue, scored) for b in backends]
    settings = {
        "mode": "dataset (in-process estimators)",
        "source": f"{args.dataset} (split {args.split}{', targets ' + str(args.targets) if args.targets else ''})",
        "n_frames": len(frames),
        "device": ", ".join(sorted({describe_device(e.device) for e in estimators.values()})),
        "checkpoints": {b: str(p) for b, p in checkpoints.items()},
        "prompt": args.prompt,
        "depth_given_to_estimators": not args.no_depth,
        "score_threshold": args.score_threshold if args.score_threshold is not None else "none (all poses kept)",
        "objects": catalogue.names,
    }
    return write_report(out, frames, results, catalogue, settings, renderer=args.renderer,
                        figures=not args.no_figures, panel_indices=sorted(fig_idx))


def _load_pipelines(args, backends: list[str], checkpoints: dict[str, Path]) -> dict:
    """backend -> the pose node's FramePipeline around its estimator, keeping every valid pose unless
    --score-threshold (no gates, as `vfm-pose predict`)."""
    from ..models import load_estimator
    from ..pipeline import FramePipeline, PipelineSettings

    settings = PipelineSettings(score_threshold=args.score_threshold or 0.0, prompt=args.prompt or "",
                                use_depth=not args.no_depth)
    pipelines = {}
    for b in backends:
        t0 = time.perf_counter()
        est = load_estimator(checkpoints[b], device=args.device, backend=b)
        print(f"{b}: {est} from {checkpoints[b]} ({time.perf_counter() - t0:.1f} s)")
        pipelines[b] = FramePipeline(est, settings=settings)
    return pipelines


def _process_frame(pipelines: dict, frame, warmed: set, preds: dict, lat: dict, stage_ms: dict) -> None:
    """Every backend's pipeline on one frame: its poses, wall-clock ms and stage times appended per backend."""
    for b, pipeline in pipelines.items():
        if b not in warmed:  # first call pays lazy initialisation; keep it out of the latency
            pipeline.process(frame)
            warmed.add(b)
        t0 = time.perf_counter()
        answer = pipeline.process(frame)
        lat[b].append((time.perf_counter() - t0) * 1000.0)
        if answer.outcome == "failed":
            raise answer.error
        preds[b].append(answer.poses)
        stage_ms[b].append({k: v for k, v in answer.timings_ms.items() if k != "infer"})


def _targets(frames) -> list[dict]:
    """The scored frames and instances, so that `vfm-pose eval --targets` sees exactly these."""
    targets = []
    for fr in frames:
        counts: dict[int, int] = {}
        for g in fr.gts:
            counts[g.obj_id] = counts.get(g.obj_id, 0) + 1
        targets += [{"scene_id": fr.scene_id, "im_id": fr.im_id, "obj_id": o, "inst_count": n}
                    for o, n in sorted(counts.items())]
    return targets


def _result_rows(backend: str, frames, preds, lat, catalogue, own_catalogue) -> list:
    """BOP result rows of one backend's poses; objects neither catalogue knows are left out, with a warning."""
    from ..data.bop import BopResult

    rows, unknown = [], set()
    for fr, poses, ms in zip(frames, preds, lat):
        for p in poses:
            obj = catalogue.objects.get(p.name) or own_catalogue.objects.get(p.name)
            if obj is None:
                unknown.add(p.name)
                continue
            rows.append(BopResult.from_pose(fr.scene_id, fr.im_id, p, obj.class_id, time=ms / 1000.0))
    if unknown:
        print(f"warning: {backend} predicted objects the catalogue lacks (not scored): {sorted(unknown)}",
              file=sys.stderr)
    return rows


def run(args: argparse.Namespace) -> int:
    from ..report.compare import REPORT_HTML, REPORT_MD, RESULTS_JSON, print_table

    t0 = time.perf_counter()
    try:
        backends = parse_backends(args.backends)
        checkpoints = resolve_checkpoints(args, backends)
        if args.dataset is not None:
            doc = run_dataset(args, backends, checkpoints)
        else:
            from .compare_bag import run_bag

            doc = run_bag(args, backends, checkpoints)
    except (CompareError, FileNotFoundError, KeyError, ValueError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"vfm-pose compare: {msg}", file=sys.stderr)
        return 1
    print()
    print_table(doc)
    out = Path(args.out)
    print(f"\nreport: {out / REPORT_MD} (also {REPORT_HTML}, {RESULTS_JSON}, table.csv, "
          f"{len(doc['figures'])} figures; point cloud: {doc['pointcloud_renderer']})")
    print(f"done in {time.perf_counter() - t0:.1f} s (report and figures {doc['timings_s']['report_total']:.1f} s)")
    return 0
