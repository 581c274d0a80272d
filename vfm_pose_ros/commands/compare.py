# Over 500 lines on purpose: CLI glue for both comparison modes (dataset, bag); the report lives in report/
"""compare backends on the same frames and write the report with figures

Dataset mode (``--dataset DIR``) runs each backend's estimator in this process over the same
frames, writes BOP results per backend (``results_<backend>.csv``) and a ``targets.json`` naming
the scored frames, and scores them exactly as ``vfm-pose eval --targets OUT/targets.json`` does.
Bag mode (``--bag BAG``) runs the real ROS graph once per backend in lockstep (bag player ->
pose node -> evaluator) and reports what the evaluator and the pose node produced.

Either way the folder ``--out`` gets results.json, table.csv, report.md, report.html and the
figures (vfm_pose_ros/report/figures.py), and the table is printed.
"""
from __future__ import annotations

import argparse
import csv
import json
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


def run_dataset(args, backends: list[str], checkpoints: dict[str, Path]) -> dict:
    """Dataset mode: in-process estimators, BOP results CSVs, scored like `vfm-pose eval`."""
    from tqdm import tqdm

    from ..data.bop import BopDataset, read_results_csv, save_json, write_results_csv
    from ..data.evaluation import evaluate, make_evaluator, resolve_catalogue, vsd_delta_for
    from ..pipeline import CameraFrame
    from ..report.compare import (
        BackendResult,
        FrameRecord,
        estimator_keypoints,
        latency_summary,
        pick_figure_frames,
        rename_gts,
        write_report,
    )

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
    frames: list[FrameRecord] = []
    preds = {b: [] for b in backends}
    lat = {b: [] for b in backends}
    stage_ms = {b: [] for b in backends}
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

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_json(out / TARGETS_JSON, _targets(frames))
    scored = BopDataset(args.dataset, split=args.split, targets=out / TARGETS_JSON)

    results = []
    for b in backends:
        rows = _result_rows(b, frames, preds[b], lat[b], catalogue, estimators[b].catalogue)
        csv_path = write_results_csv(out / f"results_{b}.csv", rows)
        ev = make_evaluator(catalogue, vsd_delta=vsd_delta_for(args.dataset))  # VSD where the frames have depth
        # Score the file as written (read back), the same call as `vfm-pose eval`.
        report = evaluate(scored, read_results_csv(csv_path), catalogue, progress=False, evaluator=ev)
        settings = _estimator_settings(estimators[b], checkpoints[b])
        settings["results_csv"] = csv_path.name
        settings["eval_command"] = (f"vfm-pose eval --dataset {args.dataset} --split {args.split} "
                                    f"--targets {out / TARGETS_JSON} --results {csv_path}")
        latency = latency_summary(lat[b], None, stage_ms[b],
                                  how="in-process FramePipeline.process (the pose node's path) wall-clock per "
                                      "frame, after one warm-up frame")
        drawn = {i: preds[b][i] for i, fr in enumerate(frames) if fr.rgb is not None}
        results.append(BackendResult(b, report, ev.instances, latency, settings, drawn,
                                     estimator_keypoints(estimators[b])))

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


def instances_from_rows(rows: list[dict], catalogue) -> list:
    """InstanceResults (metres) from the evaluator node's frames.csv rows (InstanceResult.to_dict, mm)."""
    from ..core.metrics import InstanceResult

    def num(v, scale=1.0):
        return float(v) * scale if v not in (None, "") else float("nan")

    out = []
    for r in rows:
        name = r["name"]
        sym = bool(catalogue[name].symmetric) if name in catalogue else r.get("add_s_mm") == r.get("adds_mm")
        out.append(InstanceResult(
            name=name, obj_id=int(r["obj_id"]), diameter=num(r["diameter_mm"], 1e-3), symmetric=sym,
            scene_id=int(r["scene_id"]) if r.get("scene_id") not in (None, "") else None,
            im_id=int(r["im_id"]) if r.get("im_id") not in (None, "") else None,
            gt_id=int(r.get("gt_id") or -1), predicted=str(r["predicted"]).lower() == "true",
            score=num(r.get("score")), add=num(r.get("add_mm"), 1e-3), adi=num(r.get("adds_mm"), 1e-3),
            re=num(r.get("rot_err_deg")), te=num(r.get("trans_err_mm"), 1e-3), mssd=num(r.get("mssd_mm"), 1e-3),
            mspd=num(r.get("mspd_px"))))
    return out


def _player_latency(summary: dict) -> dict:
    """Latency and throughput of a lockstep ROS run, from the bag player's summary."""
    lat = summary.get("answer_latency_ms") or {}
    return {
        "how": "lockstep round trip per frame: the player publishes a frame -> the pose node's Detection3DArray "
               "for it arrives (conversion, inference, DDS transport both ways)",
        "n_frames": int(summary.get("frames_answered", 0)),
        "latency_mean_ms": lat.get("mean"), "latency_median_ms": lat.get("p50"),
        "latency_p95_ms": lat.get("p95"), "latency_max_ms": lat.get("max"),
        "throughput_fps": summary.get("fps"),
        "throughput_how": "frames sent / wall time of the replay (lockstep: one frame in flight)",
        "stages_mean_ms": {},
        "frames_sent": summary.get("frames_sent"), "timeouts": summary.get("timeouts"),
    }


def _run_graph(specs, timeout_s: float, log, report_path: Path, drain_s: float = 60.0) -> int:
    """Start the graph's processes (as `vfm-pose launch` does), wait, and stop them when the evaluator is done.

    The benchmark graph would stop every process the moment the player exits, which can cut the
    evaluator off before it has scored the last frames it was sent (seen here under CPU load). So
    the player does not stop the graph; we stop it once the evaluator has written its end-of-bag
    report (``report_path``), ``drain_s`` after the player ended at the latest, or at ``timeout_s``.
    """
    import os
    import threading

    from ..ros.graph import PLAYER_NODE
    from .launch import Graph

    for spec in specs:
        spec.shutdown_on_exit = False
    graph = Graph(specs, grace=20.0, out=log)
    finished = threading.Event()

    def watch():
        t_end = time.monotonic() + timeout_s
        player = next((p for s, p in graph.procs if s.name == PLAYER_NODE), None)
        player_done_at = None
        while not finished.is_set() and time.monotonic() < t_end:
            if player is not None and player.poll() is not None:
                player_done_at = player_done_at or time.monotonic()
                if report_path.is_file() or time.monotonic() - player_done_at > drain_s:
                    break
            time.sleep(0.2)
        graph.stop()

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)  # the nodes inherit stdout/stderr: their logs go to the log file, not the terminal
    os.dup2(log.fileno(), 2)
    watcher = threading.Thread(target=watch, daemon=True)
    try:
        graph.start()
        watcher.start()
        return graph.wait()
    except BaseException:
        graph.stop()
        graph.wait()
        raise
    finally:
        finished.set()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run_bag(args, backends: list[str], checkpoints: dict[str, Path]) -> dict:
    """Bag mode: per backend, the benchmark graph (player in lockstep -> pose node -> evaluator) in processes.

    Metrics are the evaluator node's report.json (the core PoseEvaluator, as `vfm-pose eval`), the
    error distributions its frames.csv, latency and throughput the player's summary. The ROS run
    records no poses, so the figures' predicted boxes are recomputed in this process by the same
    checkpoint on the drawn frames (the report says so).
    """
    from ..core.catalogue import Catalogue
    from ..core.types import Frame
    from ..data.rosbag import read_bag
    from ..models import load_estimator
    from ..paths import default_catalogue_dir
    from ..report.compare import (
        BackendResult,
        FrameRecord,
        estimator_keypoints,
        pick_figure_frames,
        rename_gts,
        write_report,
    )
    from ..ros.env import configure_ros_env
    from ..ros.graph import EVALUATOR_NODE, PLAYER_NODE, graph_nodes, load_pose_defaults

    bag = Path(args.bag)
    if not bag.exists():
        raise CompareError(f"bag not found: {bag} (make one with `vfm-pose make-bag`)")
    if args.objects_dir is not None or args.targets is not None:
        raise CompareError("--objects-dir and --targets apply to --dataset only (the evaluator node scores a bag "
                           "with the package catalogue, config/objects)")
    catalogue = Catalogue.from_dir(default_catalogue_dir())  # what the evaluator node scores with
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    frames: list[FrameRecord] = []
    for bf in read_bag(bag):
        if args.max_frames is not None and len(frames) >= args.max_frames:
            break
        frames.append(FrameRecord(bf.scene_id if bf.scene_id is not None else 0,
                                  bf.im_id if bf.im_id is not None else len(frames), bf.K,
                                  rename_gts(bf.gts, catalogue), int(bf.rgb.shape[1]), bf.rgb, bf.depth))
    if not frames:
        raise CompareError(f"{bag} holds no camera frames")
    fig_idx = set(pick_figure_frames(len(frames), 0 if args.no_figures else args.figure_frames))
    if fig_idx:
        multi = max(range(len(frames)), key=lambda i: (len(frames[i].gts), i not in fig_idx, -i))
        fig_idx_all = fig_idx | {multi}
    else:
        fig_idx_all = set()
    for i, fr in enumerate(frames):  # keep only the drawn frames' images
        if i not in fig_idx_all:
            fr.rgb = fr.depth = None

    configure_ros_env()
    threshold = (args.score_threshold if args.score_threshold is not None
                 else float(load_pose_defaults().get("score_threshold", 0.0)))
    results = []
    log_path = out / "ros.log"
    with open(log_path, "w") as log:
        for b in backends:
            out_b = out / f"ros_{b}"
            for stale in ("report.json", "frames.csv", "player.json"):
                (out_b / stale).unlink(missing_ok=True)
            assignments = {"bag": str(bag), "checkpoint": str(checkpoints[b]), "backend": b,
                           "device": args.device, "use_depth": not args.no_depth, "output_dir": str(out_b)}
            if args.prompt:
                assignments["prompt"] = args.prompt
            if args.score_threshold is not None:
                assignments["score_threshold"] = float(args.score_threshold)
            specs = graph_nodes(assignments, "benchmark")
            for spec in specs:
                if spec.name == PLAYER_NODE:  # a summary file, a generous start-up wait, no progress bar
                    spec.arguments += ["--summary", str(out_b / "player.json"), "--wait-timeout", "180", "--quiet"]
                    if args.max_frames is not None:
                        spec.arguments += ["--max-frames", str(args.max_frames)]
                elif spec.name == EVALUATOR_NODE and args.max_frames is not None:
                    spec.parameters["max_frames"] = max(0, int(args.max_frames))  # the frames the player sends
            print(f"{b}: running the ROS graph (player -> pose node -> evaluator) on {bag}; log: {log_path}")
            t0 = time.perf_counter()
            log.write(f"===== {b} =====\n")
            log.flush()
            status = _run_graph(specs, args.timeout, log, out_b / "report.json")
            wall = time.perf_counter() - t0
            report_path, player_path = out_b / "report.json", out_b / "player.json"
            if status != 0:
                tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
                raise CompareError(f"the {b} ROS run failed (exit status {status}); the end of {log_path}:\n{tail}")
            if not report_path.is_file() or not player_path.is_file():
                raise CompareError(f"the {b} ROS run (status {status}) left no "
                                   f"{'report.json' if not report_path.is_file() else 'player.json'} in {out_b}: "
                                   f"see {log_path}")
            report = json.loads(report_path.read_text())
            player = json.loads(player_path.read_text())
            with open(out_b / "frames.csv", newline="") as f:
                instances = instances_from_rows(list(csv.DictReader(f)), catalogue)
            est = load_estimator(checkpoints[b], device=args.device, backend=b) if fig_idx_all else None
            drawn = {}
            for i in sorted(fig_idx_all):
                fr = frames[i]
                poses = est.predict(Frame(rgb=fr.rgb, K=fr.K, depth=None if args.no_depth else fr.depth,
                                          prompt=args.prompt))
                drawn[i] = [p for p in poses if p.score >= threshold]  # what the pose node would publish
            settings = {"checkpoint": str(checkpoints[b]), "device": args.device,
                        "ros_output": str(out_b), "ros_run_wall_s": round(wall, 1), "exit_status": status,
                        "frames_scored": report.get("n_frames"), "frames_without_detections":
                            report.get("ros", {}).get("n_gaps"), "player_timeouts": player.get("timeouts")}
            if est is not None:
                settings["figure_poses"] = "recomputed in-process by the same checkpoint (the ROS run records none)"
            results.append(BackendResult(b, report, instances, _player_latency(player), settings, drawn,
                                         estimator_keypoints(est) if est is not None else None))
            print(f"{b}: {report.get('n_frames')} frames scored in {wall:.0f} s (exit status {status})")

    settings = {
        "mode": "bag (ROS graph in lockstep: bag player -> pose node -> evaluator node)",
        "source": str(bag), "n_frames": len(frames),
        "device": describe_device(args.device), "checkpoints": {b: str(p) for b, p in checkpoints.items()},
        "prompt": args.prompt, "depth_given_to_estimators": not args.no_depth, "objects": catalogue.names,
        "score_threshold": threshold if args.score_threshold is not None
        else f"{threshold} (the pose node's, config/pose.yaml)",
    }
    return write_report(out, frames, results, catalogue, settings, renderer=args.renderer,
                        figures=not args.no_figures, panel_indices=sorted(fig_idx))


def run(args: argparse.Namespace) -> int:
    from ..report.compare import REPORT_HTML, REPORT_MD, RESULTS_JSON, print_table

    t0 = time.perf_counter()
    try:
        backends = parse_backends(args.backends)
        checkpoints = resolve_checkpoints(args, backends)
        if args.dataset is not None:
            doc = run_dataset(args, backends, checkpoints)
        else:
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
