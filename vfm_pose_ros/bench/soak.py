"""The soak run: the whole benchmark graph (player --lockstep -> pose node -> evaluator) over a bag of N small
frames, with the RSS of the pose node and the evaluator sampled along the way and the frames lost counted."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .common import PROMPT, process_memory_mb
from .rosgraph import RosClient, log_tail, require_ros, start_node, stop_process, write_bag


def _soak_bag(catalogue, n_frames: int, workdir: Path, width: int, height: int, distinct: int,
              progress: bool) -> tuple[Path, dict]:
    """(bag of ``n_frames`` frames cycling through ``distinct`` synthetic ones, what the results say of it)."""
    from .common import synthetic_frames

    t0 = time.monotonic()
    # Asymmetric objects only in the scenes: the evaluator scores a continuously symmetric object at about
    # 0.5 s per frame (MSPD over 315 symmetry copies, see the evaluator section), which would make a
    # 10,000-frame soak take hours; the pose node still looks for every catalogue object.
    scene_objects = [o for o in catalogue if not o.symmetric] or list(catalogue)
    frames = synthetic_frames(scene_objects, min(distinct, n_frames), width, height, seed=1)
    bag = write_bag(frames, workdir / "soak_bag", catalogue, n=n_frames, progress=progress)
    return bag, {"scene_objects": [o.name for o in scene_objects], "bag_seconds": round(time.monotonic() - t0, 1),
                 "bag_mb": round(sum(p.stat().st_size for p in bag.rglob("*") if p.is_file()) / 2**20, 1)}


def _watch(procs: dict, client: RosClient, n_frames: int, progress: bool, samples: list) -> dict:
    """Sample the RSS of the pose node and the evaluator once a second until the evaluator exits."""
    from std_msgs.msg import String
    from tqdm import tqdm

    from ..ros.graph import EVALUATOR_NODE, POSE_NODE

    scored = {"n": 0}

    def on_summary(msg):
        try:
            scored["n"] = int(json.loads(msg.data).get("n_frames") or 0)
        except (ValueError, TypeError):
            pass

    client.node.create_subscription(String, f"/{EVALUATOR_NODE}/summary", on_summary, 10)
    bar = tqdm(total=n_frames, desc="soak", unit="frame", disable=not progress)
    t_run = time.monotonic()
    deadline = t_run + 900 + 2.0 * n_frames
    ev, pose = procs[EVALUATOR_NODE], procs[POSE_NODE]
    while ev.poll() is None:
        client.spin_until(lambda: False, timeout=1.0)
        mp, me = process_memory_mb(pose.pid)["rss_mb"], process_memory_mb(ev.pid)["rss_mb"]
        samples.append((time.monotonic() - t_run, scored["n"], mp, me))
        bar.n = scored["n"]
        bar.refresh()
        if pose.poll() is not None:
            raise RuntimeError(f"the pose node exited ({pose.returncode}) during the soak:\n{log_tail(pose)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"soak did not finish in {deadline - t_run:.0f} s ({scored['n']} frames scored)")
    bar.close()
    return {"run_seconds": round(time.monotonic() - t_run, 1),
            "peak_rss_mb": {"pose_node": process_memory_mb(pose.pid)["peak_rss_mb"]}}


def _run_graph(specs: list, workdir: Path, summary_path: Path, n_frames: int, progress: bool,
               samples: list) -> tuple[dict, dict]:
    """(what the watch measured, exit code per node): the graph's processes started, watched and stopped."""
    from ..ros.graph import EVALUATOR_NODE, PLAYER_NODE, POSE_NODE

    by_name = {s.name: s for s in specs}
    procs = {}
    client = None
    try:
        for name in (EVALUATOR_NODE, POSE_NODE, PLAYER_NODE):
            extra = ["--summary", str(summary_path), "--quiet", "--lockstep-timeout", "60"] if name == PLAYER_NODE \
                else None
            procs[name] = start_node(by_name[name], workdir, extra)
        client = RosClient("vfm_pose_bench_soak")
        watched = _watch(procs, client, n_frames, progress, samples)
    finally:
        if client is not None:
            client.close()
        for name in (PLAYER_NODE, POSE_NODE, EVALUATOR_NODE):
            if name in procs:
                stop_process(procs[name])
    return watched, {k: p.returncode for k, p in procs.items()}


def run_soak(checkpoint, backend: str, n_frames: int, workdir: Path, width: int = 64, height: int = 48,
             device: str = "cpu", progress: bool = True, distinct: int = 32) -> dict:
    """The benchmark graph (player --lockstep -> pose node -> evaluator) over ``n_frames`` small frames."""
    require_ros()
    from ..ros.graph import graph_nodes
    from .common import default_catalogue

    workdir.mkdir(parents=True, exist_ok=True)
    catalogue = default_catalogue()
    bag, about_bag = _soak_bag(catalogue, n_frames, workdir, width, height, distinct, progress)
    out: dict = {"frames": n_frames, "size": f"{width}x{height}", "backend": backend, "checkpoint": str(checkpoint),
                 **about_bag}
    report_dir = workdir / "soak_eval"
    specs = graph_nodes({"bag": str(bag), "checkpoint": str(checkpoint), "backend": backend, "device": device,
                         "output_dir": str(report_dir), "score_threshold": "0.0",
                         "plausibility_gates": "false",
                         "prompt": PROMPT if backend in ("clip", "hybrid") else ""}, "benchmark")
    summary_path = workdir / "soak_player.json"
    samples: list[tuple[float, int, float | None, float | None]] = []
    watched, exit_codes = _run_graph(specs, workdir, summary_path, n_frames, progress, samples)
    out.update(watched)
    out["exit_codes"] = exit_codes
    player = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    report = json.loads((report_dir / "report.json").read_text()) if (report_dir / "report.json").is_file() else {}
    ros = report.get("ros", {})
    out["player"] = {k: player.get(k) for k in ("frames_sent", "frames_answered", "timeouts", "late_answers",
                                                "wall_s", "fps")}
    out["evaluator"] = {"n_frames": report.get("n_frames"), "frames_matched": ros.get("frames_matched"),
                        "n_gaps": ros.get("n_gaps"), "duplicates": ros.get("duplicate_messages")}
    # lost: bag frames whose detections never reached the evaluator (player timeouts are listed above)
    out["lost_frames"] = n_frames - int(ros.get("frames_matched") or 0) if report else None
    out["rss"] = rss_growth(samples, n_frames)
    return out


def rss_growth(samples, n_frames: int) -> dict:
    """RSS growth of the pose node and the evaluator after warm-up: end minus warm-up value, and the slope
    (MB per 1000 frames, least squares over the samples after warm-up)."""
    warm = max(20, n_frames // 20)
    out = {"warmup_frames": warm, "samples": len(samples)}
    for j, name in ((2, "pose_node"), (3, "evaluator")):
        pts = [(s[1], s[j]) for s in samples if s[j] is not None and s[1] >= warm]
        if len(pts) < 2:
            out[name] = {"growth_mb": None, "note": "too few samples after warm-up"}
            continue
        n, rss = np.array(pts, float).T
        slope = float(np.polyfit(n, rss, 1)[0]) * 1000 if np.ptp(n) > 0 else None
        out[name] = {"rss_after_warmup_mb": round(float(rss[0]), 1), "rss_end_mb": round(float(rss[-1]), 1),
                     "growth_mb": round(float(rss[-1] - rss[0]), 1), "max_mb": round(float(rss.max()), 1),
                     "slope_mb_per_1000_frames": None if slope is None else round(slope, 2)}
    return out
