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
from .tables import format_tables, pipeline_lines, ros_line, targets

__all__ = ["SECTIONS", "BenchOptions", "format_tables", "run_bench", "targets"]

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


def _skip_without_ros(ros_ok: bool) -> None:
    if not ros_ok:
        from .common import SkipSection

        raise SkipSection("--no-ros")


class _BenchRun:
    """What the sections of one benchmark run share: options, results, the work folder, checkpoints, frames."""

    def __init__(self, opt: BenchOptions, log):
        from .pipeline import Variant

        self.opt, self.log = opt, log
        self.results: dict = {"machine": machine_info(), "options": _jsonable(asdict(opt)), "sections": {},
                              "pipeline": {}, "ros": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        machine = self.results["machine"]
        machine["note"] = ("timings are wall-clock on this machine as it was during the run; on a shared, loaded "
                           "machine they include waiting for a core (see load_average and the CPU-time columns)")
        if opt.threads:
            import torch

            torch.set_num_threads(opt.threads)
            os.environ["OMP_NUM_THREADS"] = str(opt.threads)  # the node processes started from here
        self.device = self.results["device"] = _device(opt)
        machine["torch_threads"] = _torch_threads()
        for var in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS"):
            # OMP_WAIT_POLICY=PASSIVE: on a loaded machine spinning OpenMP threads made a ViT-B/14 2-3x slower here
            machine[var] = os.environ.get(var)
        sizes = [s for s, on in (("real", opt.real_size), ("small", opt.small)) if on]
        self.variants = [Variant(b, s, dict(opt.overrides.get(b, {})) if s == "small" else {})
                         for b in opt.backends for s in sizes]
        self.tmp = tempfile.TemporaryDirectory(prefix="vfm_pose_bench_")
        self.work = Path(self.tmp.name)
        # Every torch call runs on one worker thread, as the pose node runs inference on its worker thread.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vfm_pose_bench_infer")
        self.checkpoints: dict[str, str] = {}
        self.sec = self.results["sections"]
        self.ros_ok = opt.ros
        if self.ros_ok:
            from ..ros.env import configure_ros_env

            configure_ros_env()
            os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 101))  # a private domain unless set
        self.catalogue = self.frames = None

    def infer(self, fn, *args, **kwargs):
        return self.pool.submit(fn, *args, **kwargs).result()

    def checkpoint(self, v) -> str:
        """The variant's checkpoint: the one its pipeline section wrote, else the shipped or a random one."""
        self.checkpoints[v.key] = self.checkpoints.get(v.key) or _make_checkpoint(v, self.catalogue, self.work)
        return self.checkpoints[v.key]

    def make_frames(self) -> None:
        with section(self.sec, "frames", self.log) as s:
            from .common import default_catalogue, synthetic_frames

            opt = self.opt
            self.catalogue = default_catalogue()
            self.frames = synthetic_frames(self.catalogue, max(1, opt.bag_frames), *opt.frame_size)
            s.note = f"{len(self.frames)} synthetic {opt.frame_size[0]}x{opt.frame_size[1]} frames with depth"

    def pipeline(self) -> None:
        """Each variant in this process, through ROS messages when ROS is there."""
        io = None
        if self.ros_ok:
            with section(self.sec, "pipeline/messages-setup", self.log):
                from .pipeline import MessageIO
                from .rosgraph import require_ros

                require_ros()
                io = MessageIO(self.frames, self.catalogue)
        opt = self.opt
        for v in self.variants:
            with section(self.sec, f"pipeline/{v.key}", self.log):
                from .pipeline import measure_variant

                r = self.infer(measure_variant, v, self.catalogue, self.frames, opt.repeats, opt.warmup,
                               device=self.device, io=io, checkpoint_dir=self.work, progress=opt.progress,
                               profile_dir=opt.out.parent if opt.profile else None)
                self.results["pipeline"][v.key] = r
                if r.get("checkpoint"):
                    self.checkpoints[v.key] = r["checkpoint"]
                self.log(pipeline_lines(v.key, r))
            gc.collect()
        if io is not None:
            io.close()

    def transport(self) -> None:
        with section(self.sec, "transport", self.log):
            _skip_without_ros(self.ros_ok)
            from .rosgraph import measure_transport

            w, h = 640, 480
            self.results["transport"] = {q: measure_transport(self.opt.transport_frames, q, w, h)
                                         for q in ("reliable", "sensor")}
            r = self.results["transport"]["reliable"]["latency_ms"]
            self.log(f"  VGA numpy -> Image -> publish -> receive -> numpy (reliable): p50 {r.get('p50')} ms, "
                     f"p95 {r.get('p95')} ms")

    def ros(self) -> None:
        for v in self.variants:
            with section(self.sec, f"ros/{v.key}", self.log):
                _skip_without_ros(self.ros_ok)
                self.ros_variant(v)

    def ros_variant(self, v) -> None:
        """The pose node process on the variant's checkpoint; the real size also in tracking mode."""
        from .pipeline import BackboneProbe, build_estimator
        from .rosgraph import measure_pose_node, require_ros, write_bag

        require_ros()
        opt, frames, work = self.opt, self.frames, self.work
        ckpt = self.checkpoint(v)
        bag = work / f"bag_{v.backend}_{v.size}"
        if not bag.exists():
            write_bag(frames, bag, self.catalogue)
        # the same model in this process, for the interleaved backbone reference
        est, _ = self.infer(build_estimator, v, self.catalogue, device=self.device,
                            precision="fp16" if self.device == "cuda" else "fp32")
        probe = functools.partial(self.infer, self.infer(BackboneProbe, est))
        r = measure_pose_node(ckpt, v.backend, frames, work / f"ros_{v.backend}_{v.size}", opt.ros_frames,
                              opt.warmup, bag=bag, device=self.device, progress=opt.progress, probe=probe)
        self.results["ros"][v.key] = r
        self.log(ros_line(v.key, r))
        if v.size == "real":
            # a camera watching a still scene with tracking on, RGB only: after the first frame the
            # tracks' boxes replace detection / localisation, one crop pass per frame (core.tracking)
            key = f"{v.key}+tracking"
            r = measure_pose_node(ckpt, v.backend, frames[:1], work / f"ros_{v.backend}_{v.size}_tracking",
                                  opt.ros_frames, opt.warmup, device=self.device, progress=opt.progress, probe=probe,
                                  extra={"tracking_enabled": "true", "use_depth": "false"})
            self.results["ros"][key] = r
            self.log(ros_line(key, r))
        del est, probe

    def evaluator(self) -> None:
        with section(self.sec, "evaluator", self.log):
            from .throughput import measure_evaluator

            e = self.results["evaluator"] = measure_evaluator(self.opt.evaluator_frames,
                                                              objects=self.opt.evaluator_objects)
            self.log("  " + "; ".join(f"{k}: {v['frames_per_s']} frames/s (node Scorer "
                                      f"{v['node_scorer_frames_per_s']})" for k, v in e.items() if isinstance(v, dict)))

    def renderer(self) -> None:
        with section(self.sec, "renderer", self.log):
            from .throughput import measure_renderer

            r = self.results["renderer"] = measure_renderer(self.opt.renderer_frames)
            self.log(f"  renderer {r['faces']} faces VGA: {r['frames_per_s']} frames/s")

    def soak(self) -> None:
        with section(self.sec, "soak", self.log):
            from .common import SkipSection

            opt = self.opt
            if opt.soak_frames <= 0:
                raise SkipSection("--soak-frames 0")
            _skip_without_ros(self.ros_ok)
            from .pipeline import Variant
            from .soak import run_soak

            if self.catalogue is None:
                from .common import default_catalogue

                self.catalogue = default_catalogue()
            v = Variant(opt.soak_backend, "small", dict(opt.overrides.get(opt.soak_backend, {})))
            so = self.results["soak"] = run_soak(self.checkpoint(v), v.backend, opt.soak_frames, self.work / "soak",
                                                 *opt.soak_size, device=self.device, progress=opt.progress)
            self.log(f"  soak {so['frames']} frames: lost {so['lost_frames']}, RSS growth pose node "
                     f"{so['rss']['pose_node'].get('growth_mb')} MB, evaluator "
                     f"{so['rss']['evaluator'].get('growth_mb')} MB")

    def phantom(self) -> None:
        with section(self.sec, "phantom", self.log):
            from .phantom import measure_phantom_rate, phantom_lines

            opt = self.opt
            self.results["phantom"] = self.infer(measure_phantom_rate, opt.phantom_frames, opt.phantom_backends,
                                                 *opt.frame_size, device=self.device, progress=opt.progress)
            self.log(phantom_lines(self.results["phantom"]))

    def close(self) -> None:
        self.pool.shutdown()
        self.tmp.cleanup()


def run_bench(opt: BenchOptions, log=print) -> dict:
    """Run the selected sections; returns the results dict (also written to ``opt.out`` as JSON)."""
    t_start = time.monotonic()
    run = _BenchRun(opt, log)
    want = set(opt.sections)
    if want & {"pipeline", "ros"}:
        run.make_frames()
    if "pipeline" in want and run.frames is not None:
        run.pipeline()
    if "transport" in want:
        run.transport()
    if "ros" in want and run.frames is not None:
        run.ros()
    for name in ("evaluator", "renderer", "soak", "phantom"):
        if name in want:
            getattr(run, name)()
    results = run.results
    results["machine"]["load_average_after"] = machine_info()["load_average"]
    results["wall_s"] = round(time.monotonic() - t_start, 1)
    results["targets"] = targets(results)
    run.close()
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
