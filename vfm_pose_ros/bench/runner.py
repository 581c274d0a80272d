"""The benchmark run: sections in order, each printed as it completes, then the tables, targets and JSON.

A section that fails is recorded (error and traceback) and the others still run. The machine's
load average is recorded before and after, since timings on a shared machine include waiting for a core.
"""
from __future__ import annotations

import functools
import gc
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .common import machine_info, section

SECTIONS = ("pipeline", "transport", "ros", "evaluator", "renderer", "soak", "phantom")


@dataclass
class BenchOptions:
    backends: tuple[str, ...] = ("dinov2", "clip")
    real_size: bool = True  # the real architectures (ViT-B/14 224, ViT-B/32) with random weights
    small: bool = True  # the shipped small configs (models/*_small.pt, else SMALL_CONFIG)
    repeats: int = 10
    warmup: int = 2
    ros_frames: int = 20  # probe frames through the pose node
    bag_frames: int = 10  # lockstep replay frames through the pose node
    transport_frames: int = 200
    evaluator_frames: int = 1000
    evaluator_objects: tuple[str, ...] = ("driller_like", "can_like")  # procedural objects (data/procedural.py)
    renderer_frames: int = 30
    soak_frames: int = 10_000
    soak_size: tuple[int, int] = (64, 48)
    soak_backend: str = "dinov2"
    phantom_frames: int = 200  # empty frames (no catalogue object) through each shipped checkpoint (bench.phantom)
    phantom_backends: tuple[str, ...] = ("dinov2", "clip", "hybrid")
    frame_size: tuple[int, int] = (640, 480)
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads here and in the node processes (None: torch's default)
    sections: tuple[str, ...] = SECTIONS
    ros: bool = True
    profile: bool = False
    out: Path = Path("bench/results.json")
    progress: bool = True
    overrides: dict = field(default_factory=dict)  # backend -> config keys over the small config (tests)

    @classmethod
    def quick(cls, **kw) -> BenchOptions:
        """Small configs only, few repeats and frames: a minute or two instead of many."""
        base = dict(real_size=False, repeats=3, warmup=1, ros_frames=5, bag_frames=3, transport_frames=60,
                    evaluator_frames=200, renderer_frames=5, soak_frames=200, phantom_frames=20)
        base.update(kw)
        return cls(**base)


def _device(opt: BenchOptions) -> str:
    if opt.device != "auto":
        return opt.device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def run_bench(opt: BenchOptions, log=print) -> dict:
    """Run the selected sections; returns the results dict (also written to ``opt.out`` as JSON)."""
    from .pipeline import Variant

    t_start = time.monotonic()
    results: dict = {"machine": machine_info(), "options": _jsonable(asdict(opt)), "sections": {},
                     "pipeline": {}, "ros": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    results["machine"]["note"] = ("timings are wall-clock on this machine as it was during the run; on a shared, "
                                  "loaded machine they include waiting for a core (see load_average and the "
                                  "CPU-time columns)")
    if opt.threads:
        import torch

        torch.set_num_threads(opt.threads)
        os.environ["OMP_NUM_THREADS"] = str(opt.threads)  # the node processes started from here
    device = _device(opt)
    results["device"] = device
    results["machine"]["torch_threads"] = _torch_threads()
    for var in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS"):
        # OMP_WAIT_POLICY=PASSIVE: on a loaded machine spinning OpenMP threads made a ViT-B/14 2-3x slower here
        results["machine"][var] = os.environ.get(var)
    sizes = [s for s, on in (("real", opt.real_size), ("small", opt.small)) if on]
    variants = [Variant(b, s, dict(opt.overrides.get(b, {})) if s == "small" else {})
                for b in opt.backends for s in sizes]
    tmp = tempfile.TemporaryDirectory(prefix="vfm_pose_bench_")
    # Every torch call runs on one worker thread, as the pose node runs inference on its worker thread.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vfm_pose_bench_infer")

    def infer(fn, *args, **kwargs):
        return pool.submit(fn, *args, **kwargs).result()

    work = Path(tmp.name)
    checkpoints: dict[str, str] = {}
    sec = results["sections"]
    want = set(opt.sections)
    ros_ok = opt.ros
    if ros_ok:
        from ..ros.env import configure_ros_env

        configure_ros_env()
        os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))  # a private domain unless set

    catalogue = frame = None
    if want & {"pipeline", "ros"}:
        with section(sec, "frames", log) as s:
            from .common import default_catalogue, synthetic_frames

            catalogue = default_catalogue()
            frames = synthetic_frames(catalogue, max(1, opt.bag_frames), *opt.frame_size)
            frame = frames[0]
            s.note = f"{len(frames)} synthetic {opt.frame_size[0]}x{opt.frame_size[1]} frames with depth"

    io = None
    if "pipeline" in want and frame is not None:
        if ros_ok:
            with section(sec, "pipeline/messages-setup", log) as s:
                from .pipeline import MessageIO
                from .rosgraph import require_ros

                require_ros()
                io = MessageIO(frames, catalogue)
        for v in variants:
            with section(sec, f"pipeline/{v.key}", log):
                from .pipeline import measure_variant

                r = infer(measure_variant, v, catalogue, frames, opt.repeats, opt.warmup, device=device, io=io,
                                    checkpoint_dir=work, progress=opt.progress,
                                    profile_dir=opt.out.parent if opt.profile else None)
                results["pipeline"][v.key] = r
                if r.get("checkpoint"):
                    checkpoints[v.key] = r["checkpoint"]
                log(_pipeline_lines(v.key, r))
            gc.collect()
        if io is not None:
            io.close()

    if "transport" in want:
        with section(sec, "transport", log) as s:
            if not ros_ok:
                from .common import SkipSection

                raise SkipSection("--no-ros")
            from .rosgraph import measure_transport

            w, h = 640, 480
            results["transport"] = {q: measure_transport(opt.transport_frames, q, w, h) for q in ("reliable", "sensor")}
            r = results["transport"]["reliable"]["latency_ms"]
            log(f"  VGA numpy -> Image -> publish -> receive -> numpy (reliable): p50 {r.get('p50')} ms, "
                f"p95 {r.get('p95')} ms")

    if "ros" in want and frame is not None:
        for v in variants:
            with section(sec, f"ros/{v.key}", log):
                if not ros_ok:
                    from .common import SkipSection

                    raise SkipSection("--no-ros")
                from .rosgraph import measure_pose_node, require_ros, write_bag

                require_ros()
                ckpt = checkpoints.get(v.key) or _make_checkpoint(v, catalogue, work)
                checkpoints[v.key] = ckpt
                bag = work / f"bag_{v.backend}_{v.size}"
                if not bag.exists():
                    write_bag(frames, bag, catalogue)
                from .pipeline import BackboneProbe, build_estimator

                # the same model in this process, for the interleaved backbone reference
                est, _ = infer(build_estimator, v, catalogue, device=device,
                               precision="fp16" if device == "cuda" else "fp32")
                probe = infer(BackboneProbe, est)
                r = measure_pose_node(ckpt, v.backend, frames, work / f"ros_{v.backend}_{v.size}", opt.ros_frames,
                                      opt.warmup, bag=bag, device=device, progress=opt.progress,
                                      probe=functools.partial(infer, probe))
                results["ros"][v.key] = r
                log(_ros_line(v.key, r))
                if v.size == "real":
                    # a camera watching a still scene with tracking on, RGB only: after the first frame the
                    # tracks' boxes replace detection / localisation, one crop pass per frame (core.tracking)
                    key = f"{v.key}+tracking"
                    r = measure_pose_node(ckpt, v.backend, frames[:1], work / f"ros_{v.backend}_{v.size}_tracking",
                                          opt.ros_frames, opt.warmup, device=device, progress=opt.progress,
                                          probe=functools.partial(infer, probe),
                                          extra={"tracking_enabled": "true", "use_depth": "false"})
                    results["ros"][key] = r
                    log(_ros_line(key, r))
                del est, probe

    if "evaluator" in want:
        with section(sec, "evaluator", log):
            from .throughput import measure_evaluator

            results["evaluator"] = measure_evaluator(opt.evaluator_frames, objects=opt.evaluator_objects)
            e = results["evaluator"]
            log("  " + "; ".join(f"{k}: {v['frames_per_s']} frames/s (node Scorer {v['node_scorer_frames_per_s']})"
                                 for k, v in e.items() if isinstance(v, dict)))

    if "renderer" in want:
        with section(sec, "renderer", log):
            from .throughput import measure_renderer

            results["renderer"] = measure_renderer(opt.renderer_frames)
            log(f"  renderer {results['renderer']['faces']} faces VGA: {results['renderer']['frames_per_s']} frames/s")

    if "soak" in want:
        with section(sec, "soak", log) as s:
            from .common import SkipSection

            if opt.soak_frames <= 0:
                raise SkipSection("--soak-frames 0")
            if not ros_ok:
                raise SkipSection("--no-ros")
            from .pipeline import Variant as _V
            from .rosgraph import run_soak

            if catalogue is None:
                from .common import default_catalogue

                catalogue = default_catalogue()
            v = _V(opt.soak_backend, "small", dict(opt.overrides.get(opt.soak_backend, {})))
            ckpt = checkpoints.get(v.key) or _make_checkpoint(v, catalogue, work)
            results["soak"] = run_soak(ckpt, v.backend, opt.soak_frames, work / "soak", *opt.soak_size, device=device,
                                       progress=opt.progress)
            so = results["soak"]
            log(f"  soak {so['frames']} frames: lost {so['lost_frames']}, RSS growth pose node "
                f"{so['rss']['pose_node'].get('growth_mb')} MB, evaluator {so['rss']['evaluator'].get('growth_mb')} MB")

    if "phantom" in want:
        with section(sec, "phantom", log):
            from .phantom import measure_phantom_rate, phantom_lines

            results["phantom"] = infer(measure_phantom_rate, opt.phantom_frames, opt.phantom_backends,
                                       *opt.frame_size, device=device, progress=opt.progress)
            log(phantom_lines(results["phantom"]))

    results["machine"]["load_average_after"] = machine_info()["load_average"]
    results["wall_s"] = round(time.monotonic() - t_start, 1)
    results["targets"] = targets(results)
    pool.shutdown()
    tmp.cleanup()
    opt.out.parent.mkdir(parents=True, exist_ok=True)
    opt.out.write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    log(format_tables(results))
    log(f"results written to {opt.out} ({results['wall_s']:.0f} s)")
    return results


def _torch_threads():
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:
        return None


def _make_checkpoint(variant, catalogue, work: Path) -> str:
    """A checkpoint for the pose node process: the shipped one, or the variant's config with random weights."""
    from ..models import backend_module
    from ..models.checkpoint import save_checkpoint
    from .pipeline import shipped_checkpoint, variant_config

    if variant.size == "small" and not variant.overrides:
        shipped = shipped_checkpoint(variant.backend)
        if shipped is not None:
            return str(shipped)
    import torch

    torch.manual_seed(0)
    net = backend_module(variant.backend).build_net(variant_config(variant), catalogue)
    path = work / f"{variant.backend}_{variant.size}.pt"
    save_checkpoint(path, net, backend=variant.backend, config=net.config, catalogue=catalogue,
                    data_hash="bench-random-init", epoch=0)
    return str(path)


def _jsonable(obj):
    import math

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


# ------------------------------------------------------------------------------------------- reporting


def _pipeline_lines(key: str, r: dict) -> str:
    lines = []
    for prec, p in r["precision"].items():
        lines.append(f"  {key} {prec}: e2e in-process {p['e2e_inproc_ms']['median']:.1f} ms, backbone alone "
                     f"{p['backbone_alone_ms']['median']:.1f} ms, ratio {p['ratio_e2e_inproc_to_backbone']}, "
                     f"{p['backbone_images_per_frame']} backbone images/frame")
    return "\n".join(lines)


def _ros_line(key: str, r: dict) -> str:
    lat = r.get("latency_ms") or {}
    ls = r.get("lockstep") or {}
    mem = (r.get("memory_end") or {}).get("peak_rss_mb")
    node = r.get("node") or {}
    return (f"  {key} through ROS: p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, lost {r.get('lost')}, "
            f"latency / backbone alone {r.get('ratio_latency_to_backbone')}; in the node: inference p50 "
            f"{node.get('inference_median_ms')} ms, received -> published p50 {node.get('latency_p50_ms')} ms; "
            f"lockstep {ls.get('fps')} frames/s; pose node peak RSS {mem} MB")


def targets(res: dict) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met (None: not measured)."""
    out = []

    def add(name, value, limit, op, note=""):
        ok = None if value is None else (value <= limit if op == "<=" else value < limit if op == "<"
                                         else value >= limit if op == ">=" else value == limit)
        out.append({"target": name, "value": value, "limit": f"{op} {limit}", "met": ok, "note": note})

    for b, label in (("dinov2", "DINOv2 ViT-B/14 224"), ("clip", "CLIP ViT-B/32")):
        key = f"{b}/real"
        p = res.get("pipeline", {}).get(key, {}).get("precision", {}).get("fp32")
        r = res.get("ros", {}).get(key)
        if p is None and r is None:
            continue
        if r is not None:
            add(f"{label}: ROS e2e / backbone alone (median of per-frame ratios, fp32)",
                r.get("ratio_latency_to_backbone"), 1.2, "<=",
                f"{p['backbone_images_per_frame']} backbone images per frame" if p else "")
            # a two-stage pipeline runs the backbone on several images per frame: the node reports the backbone
            # time its estimator spent on these same frames, so this ratio is free of run-to-run drift
            add(f"{label}: ROS e2e p50 / the node's own backbone time per frame (fp32, same frames)",
                r.get("ratio_latency_to_node_backbone"), 1.2, "<=",
                f"{p['backbone_images_per_frame']} backbone images per frame" if p else "")
        rt = res.get("ros", {}).get(f"{key}+tracking")
        if rt is not None:
            node = rt.get("node") or {}
            add(f"{label}: ROS e2e / backbone alone, tracking mode (tracks' boxes, one crop pass; RGB, fp32)",
                rt.get("ratio_latency_to_backbone"), 1.2, "<=",
                f"frames in tracking mode (roi) {node.get('frames_roi')}, full {node.get('frames_estimated')}")
        if p:
            add(f"{label}: in-process e2e / backbone alone (fp32)", p["ratio_e2e_inproc_to_backbone"], 1.2, "<=")
            ext = p.get("external_box")
            if ext:
                add(f"{label}: in-process e2e / backbone, external 2D box (one crop)",
                    ext["ratio_e2e_inproc_to_backbone"], 1.2, "<=")
        if r:
            add(f"{label}: pose node peak RSS (MB)", (r.get("memory_end") or {}).get("peak_rss_mb"), 2048, "<")
    t = res.get("transport", {}).get("reliable")
    if t:
        add("VGA convert + publish + receive p50 (ms)", t["latency_ms"].get("p50"), 3.0, "<")
    ev = res.get("evaluator", {}).get("driller_like")
    if ev:
        add("evaluator frames/s (1 object, 2k points)", ev["frames_per_s"], 500, ">=")
    so = res.get("soak")
    if so:
        add("soak: pose node RSS growth (MB)", so["rss"]["pose_node"].get("growth_mb"), 50, "<",
            f"{so['frames']} frames {so['size']}")
        add("soak: evaluator RSS growth (MB)", so["rss"]["evaluator"].get("growth_mb"), 50, "<")
        add("soak: lost frames (lockstep)", so.get("lost_frames"), 0, "==")
    if res.get("device", "cpu").startswith("cuda"):
        r = res.get("ros", {}).get("dinov2/real", {})
        lat = r.get("latency_ms", {}).get("p50")
        add("GPU DINOv2 ViT-B/14 fp16 e2e frames/s", round(1e3 / lat, 1) if lat else None, 150, ">=")
    from .phantom import phantom_targets

    return out + phantom_targets(res.get("phantom"))


def _fmt(v, nd=1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def format_tables(res: dict) -> str:
    """The printed summary: per-stage table, ROS table, other sections, targets."""
    from .pipeline import STAGE_ORDER

    m = res["machine"]
    lines = ["", f"machine: {m.get('cpu_model')} ({m.get('cpu_count')} CPUs, torch threads {m.get('torch_threads')}), "
                 f"device {res.get('device')}, load average before {m.get('load_average')} after "
                 f"{m.get('load_average_after')}"]
    pl = res.get("pipeline", {})
    if pl:
        seen = {c for r in pl.values() for p in r["precision"].values() for c in p["stages_ms"]}
        cols = [c for c in STAGE_ORDER if c in seen]
        head = ["variant", "prec"] + cols + ["e2e", "e2e cpu", "bb alone", "bb cpu", "bb 1thr", "ratio", "bb img/f",
                                             "e2e/bb-in-pipe", "1-box e2e", "1-box ratio"]
        rows = []
        for key, r in pl.items():
            for prec, p in r["precision"].items():
                ext = p.get("external_box") or {}
                rows.append([key, prec] + [_fmt(p["stages_ms"].get(c)) for c in cols] + [
                    _fmt(p["e2e_inproc_ms"]["median"]), _fmt(p.get("e2e_inproc_cpu_ms_median")),
                    _fmt(p["backbone_alone_ms"]["median"]), _fmt(p["backbone_alone_ms"].get("cpu_ms_median")),
                    _fmt((p.get("backbone_alone_1thread_ms") or {}).get("median")),
                    _fmt(p["ratio_e2e_inproc_to_backbone"], 2), _fmt(p["backbone_images_per_frame"], 0),
                    _fmt(p.get("ratio_e2e_inproc_to_pipeline_backbone"), 2),
                    _fmt((ext.get("e2e_inproc_ms") or {}).get("median")),
                    _fmt(ext.get("ratio_e2e_inproc_to_backbone"), 2)])
        lines += ["", "In-process stages, median ms per frame (bb = backbone alone, batch 1, same side and precision; "
                      "cpu = process CPU time; bb 1thr = backbone alone on one torch thread; ratio = e2e / bb alone; "
                      "e2e/bb-in-pipe = e2e / backbone time of all the pipeline's passes; 1-box = one external "
                      "2D box, a single crop pass)", _table(head, rows)]
        batch_rows = [[key] + [_fmt((b.get(n) or {}).get("ms_per_frame")) for n in ("1", "4")]
                      + [_fmt((b.get("4") or {}).get("speedup_vs_batch_1"), 2)]
                      for key, r in pl.items() if (b := r["precision"].get("fp32", {}).get("batch"))]
        if batch_rows:
            lines += ["", "Batch inference (n cameras in one predict_batch call; RGB, fp32): ms per frame",
                      _table(["variant", "batch 1", "batch 4", "speed-up"], batch_rows)]
    ros = res.get("ros", {})
    if ros:
        head = ["variant", "p50 ms", "p95 ms", "bb alone ms", "ratio", "node infer ms", "node bb ms", "ratio node bb",
                "lost", "lockstep fps", "answered", "startup s", "RSS loaded MB", "peak RSS MB"]
        rows = []
        for key, r in ros.items():
            lat, ls, node = r.get("latency_ms") or {}, r.get("lockstep") or {}, r.get("node") or {}
            rows.append([key, _fmt(lat.get("p50")), _fmt(lat.get("p95")),
                         _fmt((r.get("backbone_alone_ms") or {}).get("median")),
                         _fmt(r.get("ratio_latency_to_backbone"), 2), _fmt(node.get("inference_median_ms")),
                         _fmt(node.get("backbone_median_ms")), _fmt(r.get("ratio_latency_to_node_backbone"), 2),
                         _fmt(r.get("lost")), _fmt(ls.get("fps")),
                         f"{ls.get('frames_answered')}/{ls.get('frames_sent')}" if ls else "-",
                         _fmt(r.get("startup_s")),
                         _fmt((r.get("memory_after_load") or {}).get("rss_mb")),
                         _fmt((r.get("memory_end") or {}).get("peak_rss_mb"))])
        lines += ["", "Through ROS (pose node process, real DDS): image published -> detections received; bb alone = "
                      "the same backbone in the bench process right after each frame; ratio = median per-frame "
                      "latency / bb; node infer / node bb = the node's own medians over the same frames (estimator "
                      "call, backbone time within it); +tracking = a still scene, tracking on, RGB only",
                  _table(head, rows)]
        stage_names = list(dict.fromkeys(n for r in ros.values() for n in ((r.get("node") or {}).get("stages_ms")
                                                                           or {})))
        if stage_names:
            rows = [[key, *(_fmt(((r.get("node") or {}).get("stages_ms") or {}).get(n)) for n in stage_names)]
                    for key, r in ros.items()]
            lines += ["", "Inside the pose node over the same frames: the estimator's stage medians, ms per frame "
                          "(/diagnostics stage_<name>_median_ms; 0 where a stage did not run on a frame)",
                      _table(["variant", *stage_names], rows)]
    other = []
    for q, t in (res.get("transport") or {}).items():
        lat = t["latency_ms"]
        other.append([f"VGA transport ({q})", f"p50 {_fmt(lat.get('p50'), 2)} ms, p95 {_fmt(lat.get('p95'), 2)} ms, "
                                               f"lost {t['lost']}/{t['frames_sent']}"])
    for name, e in (res.get("evaluator") or {}).items():
        if isinstance(e, dict):
            other.append([f"evaluator {name} ({e['model_points']} pts, {e['symmetry']})",
                          f"{e['frames_per_s']} frames/s; node Scorer {e['node_scorer_frames_per_s']} frames/s; "
                          f"report() {e['report_ms']} ms at {e['instances_in_report']} instances"])
    if res.get("renderer"):
        r = res["renderer"]
        other.append([f"renderer ({r['faces']} faces, {r['size']})", f"{r['frames_per_s']} frames/s"])
    if res.get("soak"):
        so = res["soak"]
        rss = so["rss"]
        other.append([f"soak ({so['frames']} frames {so['size']}, {so['backend']})",
                      f"lost {so['lost_frames']}, player {so['player'].get('fps')} frames/s, RSS growth pose "
                      f"{rss['pose_node'].get('growth_mb')} MB, evaluator {rss['evaluator'].get('growth_mb')} MB"])
    from .phantom import phantom_rows

    other += phantom_rows(res.get("phantom"))
    if other:
        lines += ["", _table(["section", "result"], other)]
    if res.get("targets"):
        rows = [[t["target"], _fmt(t["value"], 2), t["limit"],
                 {True: "met", False: "MISSED", None: "n/a"}[t["met"]]] for t in res["targets"]]
        lines += ["", "Targets (issues 9, 10, 22)", _table(["target", "value", "limit", ""], rows)]
    bad = {k: v for k, v in res.get("sections", {}).items() if v["status"] != "ok"}
    if bad:
        lines += ["", "Sections not completed:"] + [f"  {k}: {v['status']} {v.get('error') or v.get('note', '')}"
                                                    for k, v in bad.items()]
    times = ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in res.get("sections", {}).items())
    lines += ["", f"section times: {times}"]
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])
