"""`vfm-pose compare --bag`: the real ROS graph once per backend in lockstep (bag player -> pose node -> evaluator).

The metrics come from what the evaluator node writes, latency and throughput from the player's summary;
:mod:`vfm_pose_ros.commands.compare` holds the command and the dataset mode.
"""
from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from .compare import CompareError, describe_device


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


def _bag_frames(args, bag: Path, catalogue) -> tuple[list, list[int], set[int]]:
    """(frame records, figure panel indices, every drawn index): the bag's first ``--max-frames`` frames, images
    kept only for the frames drawn (the panels and the frame with the most objects)."""
    from ..data.rosbag import read_bag
    from ..report.compare import FrameRecord, pick_figure_frames, rename_gts

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
    return frames, sorted(fig_idx), fig_idx_all


def _graph_specs(args, backend: str, bag: Path, checkpoint: Path, out_b: Path) -> list:
    """The benchmark graph's node specs for one backend, its outputs in ``out_b``."""
    from ..ros.graph import EVALUATOR_NODE, PLAYER_NODE, graph_nodes

    for stale in ("report.json", "frames.csv", "player.json"):
        (out_b / stale).unlink(missing_ok=True)
    assignments = {"bag": str(bag), "checkpoint": str(checkpoint), "backend": backend,
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
    return specs


def _read_run(backend: str, status: int, out_b: Path, log_path: Path) -> tuple[dict, dict]:
    """(evaluator report, player summary) of a finished run; a failed run is a CompareError with the log's end."""
    report_path, player_path = out_b / "report.json", out_b / "player.json"
    if status != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-15:])
        raise CompareError(f"the {backend} ROS run failed (exit status {status}); the end of {log_path}:\n{tail}")
    if not report_path.is_file() or not player_path.is_file():
        raise CompareError(f"the {backend} ROS run (status {status}) left no "
                           f"{'report.json' if not report_path.is_file() else 'player.json'} in {out_b}: "
                           f"see {log_path}")
    return json.loads(report_path.read_text()), json.loads(player_path.read_text())


def _figure_poses(args, est, frames: list, drawn_idx: set[int], threshold: float) -> dict:
    """Poses for the drawn frames, recomputed in this process: what the pose node would publish."""
    from ..core.types import Frame

    drawn = {}
    for i in sorted(drawn_idx):
        fr = frames[i]
        poses = est.predict(Frame(rgb=fr.rgb, K=fr.K, depth=None if args.no_depth else fr.depth, prompt=args.prompt))
        drawn[i] = [p for p in poses if p.score >= threshold]
    return drawn


def _run_backend(args, backend: str, bag: Path, checkpoint: Path, frames: list, drawn_idx: set[int],
                 threshold: float, catalogue, log, log_path: Path):
    """One backend's ROS run in lockstep and its BackendResult (metrics, instances, latency, figure poses)."""
    from ..models import load_estimator
    from ..report.compare import BackendResult, estimator_keypoints

    out_b = Path(args.out) / f"ros_{backend}"
    specs = _graph_specs(args, backend, bag, checkpoint, out_b)
    print(f"{backend}: running the ROS graph (player -> pose node -> evaluator) on {bag}; log: {log_path}")
    t0 = time.perf_counter()
    log.write(f"===== {backend} =====\n")
    log.flush()
    status = _run_graph(specs, args.timeout, log, out_b / "report.json")
    wall = time.perf_counter() - t0
    report, player = _read_run(backend, status, out_b, log_path)
    with open(out_b / "frames.csv", newline="") as f:
        instances = instances_from_rows(list(csv.DictReader(f)), catalogue)
    est = load_estimator(checkpoint, device=args.device, backend=backend) if drawn_idx else None
    drawn = _figure_poses(args, est, frames, drawn_idx, threshold) if est is not None else {}
    settings = {"checkpoint": str(checkpoint), "device": args.device,
                "ros_output": str(out_b), "ros_run_wall_s": round(wall, 1), "exit_status": status,
                "frames_scored": report.get("n_frames"), "frames_without_detections":
                    report.get("ros", {}).get("n_gaps"), "player_timeouts": player.get("timeouts")}
    if est is not None:
        settings["figure_poses"] = "recomputed in-process by the same checkpoint (the ROS run records none)"
    print(f"{backend}: {report.get('n_frames')} frames scored in {wall:.0f} s (exit status {status})")
    return BackendResult(backend, report, instances, _player_latency(player), settings, drawn,
                         estimator_keypoints(est) if est is not None else None)


def run_bag(args, backends: list[str], checkpoints: dict[str, Path]) -> dict:
    """Bag mode: per backend, the benchmark graph (player in lockstep -> pose node -> evaluator) in processes.

    Metrics are the evaluator node's report.json (the core PoseEvaluator, as `vfm-pose eval`), the
    error distributions its frames.csv, latency and throughput the player's summary. The ROS run
    records no poses, so the figures' predicted boxes are recomputed in this process by the same
    checkpoint on the drawn frames (the report says so).
    """
    from ..core.catalogue import Catalogue
    from ..paths import default_catalogue_dir
    from ..report.compare import write_report
    from ..ros.env import configure_ros_env
    from ..ros.graph import load_pose_defaults

    bag = Path(args.bag)
    if not bag.exists():
        raise CompareError(f"bag not found: {bag} (make one with `vfm-pose make-bag`)")
    if args.objects_dir is not None or args.targets is not None:
        raise CompareError("--objects-dir and --targets apply to --dataset only (the evaluator node scores a bag "
                           "with the package catalogue, config/objects)")
    catalogue = Catalogue.from_dir(default_catalogue_dir())  # what the evaluator node scores with
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, panels, drawn_idx = _bag_frames(args, bag, catalogue)

    configure_ros_env()
    threshold = (args.score_threshold if args.score_threshold is not None
                 else float(load_pose_defaults().get("score_threshold", 0.0)))
    log_path = out / "ros.log"
    with open(log_path, "w") as log:
        results = [_run_backend(args, b, bag, checkpoints[b], frames, drawn_idx, threshold, catalogue, log, log_path)
                   for b in backends]
    settings = {
        "mode": "bag (ROS graph in lockstep: bag player -> pose node -> evaluator node)",
        "source": str(bag), "n_frames": len(frames),
        "device": describe_device(args.device), "checkpoints": {b: str(p) for b, p in checkpoints.items()},
        "prompt": args.prompt, "depth_given_to_estimators": not args.no_depth, "objects": catalogue.names,
        "score_threshold": threshold if args.score_threshold is not None
        else f"{threshold} (the pose node's, config/pose.yaml)",
    }
    return write_report(out, frames, results, catalogue, settings, renderer=args.renderer,
                        figures=not args.no_figures, panel_indices=panels)
