"""In-process cost of every stage between an Image message and published results, and the backbone alone.

One call of :func:`measure_variant` times, for one estimator and each precision:

* ``convert``: Image/CameraInfo messages -> numpy (vfm_pose_ros.ros.convert, as the pose node does),
* the pose node's :class:`vfm_pose_ros.pipeline.FramePipeline`, built from its default parameters:
  ``validate`` (input checks, stamp order), the estimator's own stages from ``Prediction.timings_ms``
  (preprocess, backbone, head, pnp, icp, text), ``select`` (validity, threshold, gates, numbering),
* ``messages``: Detection3DArray + TF + MarkerArray building (convert.py),
* ``publish``: rclpy publish() of those three messages to a matched subscriber,

and the backbone alone on the same input size and precision, so ``e2e / backbone`` comes from
one run. A forward pre-hook on the patch embedding counts the images the backbone sees per
frame (a two-pass pipeline shows 2 or more, which bounds the e2e / backbone ratio from below).
"""
from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import PROMPT, gt_poses, summarize, time_calls, to_frame

STAGE_ORDER = ("convert", "validate", "preprocess", "text", "backbone", "head", "pnp", "icp", "other", "select",
               "messages", "publish")


@dataclass
class Variant:
    """An estimator to measure: a backend at the real architecture's size (random init) or the small one."""

    backend: str
    size: str  # real | small
    overrides: dict = field(default_factory=dict)  # config keys over the chosen config (tests use tiny ones)

    @property
    def key(self) -> str:
        return f"{self.backend}/{self.size}"


def shipped_checkpoint(backend: str) -> Path | None:
    """models/<backend>_small.pt of the package, when present."""
    from ..ros.env import find_package_file

    try:
        return find_package_file(f"models/{backend}_small.pt")
    except FileNotFoundError:
        return None


def variant_config(variant: Variant) -> dict:
    """The config of a variant: DEFAULT_CONFIG with random weights (real) or SMALL_CONFIG, plus overrides."""
    from ..models import backend_module

    mod = backend_module(variant.backend)
    base = mod.DEFAULT_CONFIG if variant.size == "real" else mod.SMALL_CONFIG
    # 'weights': 'random' is the backends' own switch for random init (models/backbones.py resolve_weights):
    # latency does not depend on weight values, and no pretrained weights can be downloaded here.
    return {**base, "weights": "random", **variant.overrides}


def build_estimator(variant: Variant, catalogue, device: str = "cpu", precision: str = "fp32"):
    """(estimator, description). Small: the shipped checkpoint when present and no overrides, else SMALL_CONFIG."""
    from ..models import backend_module, load_estimator

    mod = backend_module(variant.backend)
    ckpt = shipped_checkpoint(variant.backend) if variant.size == "small" and not variant.overrides else None
    if ckpt is not None:
        est = load_estimator(str(ckpt), device=device, backend=variant.backend, precision=precision)
        return est, {"source": str(ckpt)}
    import torch

    torch.manual_seed(0)
    net = mod.build_net(variant_config(variant), catalogue)
    est = mod.Estimator.from_net(net, catalogue, device=device, precision=precision)
    src = ("DEFAULT_CONFIG, random init" if variant.size == "real" else "SMALL_CONFIG, random init") + (
        f", overrides {sorted(variant.overrides)}" if variant.overrides else "")
    return est, {"source": src}


def with_precision(est, precision: str):
    """The same network behind an estimator of another precision (no copy of the weights)."""
    return type(est).from_net(est.net, est.catalogue, device=est.device, precision=precision)


# ------------------------------------------------------------------------------------------- backbone access


def backbone_parts(est):
    """(backbone module, patch-embedding module, input side, call(x) running the backbone as the pipeline does).

    Hand-written per backend: the estimators do not expose "the backbone alone" as one call.
    """
    import torch

    net = est.net
    if est.backend == "dinov2":
        side = int(est.config["img_size"])

        def make_input():
            return torch.randn(1, 3, side, side, device=est.device)

        return net.backbone, net.backbone.patch_embed, side, make_input, net.features
    if est.backend == "clip":
        side = int(est.size)

        def make_input():
            return torch.randint(0, 256, (1, 3, side, side), dtype=torch.uint8, device=est.device)

        return net.clip.visual, net.clip.visual.conv1, side, make_input, net.encode_image
    raise ValueError(f"no backbone accessor for backend {est.backend!r}; add one to vfm_pose_ros/bench/pipeline.py")


def count_params(module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


class ImageCounter:
    """Counts images entering the patch embedding (a forward pre-hook), i.e. backbone images per frame."""

    def __init__(self, module):
        self.n = 0
        self.calls = 0
        self._h = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module, args):
        self.calls += 1
        self.n += int(args[0].shape[0])

    def reset(self):
        self.n = self.calls = 0

    def close(self):
        self._h.remove()


class BackboneProbe:
    """One call of the backbone alone (batch 1, the estimator's input side, autocast precision), timed.

    Called right after each measured frame, so the frame and its backbone reference see the same load
    on a shared machine: the e2e / backbone ratio is the median of per-frame ratios.
    """

    def __init__(self, est):
        import torch

        self.est = est
        _, _, self.side, make_input, self._call = backbone_parts(est)
        self.x = make_input()
        self._torch = torch
        self.cpu_ms: list[float] = []

    def __call__(self) -> float:
        torch = self._torch
        c0, t0 = time.process_time(), time.perf_counter()
        with torch.no_grad(), self.est.autocast():
            self._call(self.x)
        if self.est.device.type == "cuda":
            torch.cuda.synchronize(self.est.device)
        self.cpu_ms.append((time.process_time() - c0) * 1e3)
        return (time.perf_counter() - t0) * 1e3


def time_backbone(est, repeats: int, warmup: int, progress: bool = True) -> dict:
    """Median etc. of the backbone alone in a loop of its own (see BackboneProbe)."""
    probe = BackboneProbe(est)
    wall = time_calls(probe, repeats, warmup, desc=f"backbone {est.precision}", progress=progress)
    return {"side": probe.side, **summarize(wall), "cpu_ms_median": summarize(probe.cpu_ms[-len(wall):]).get("median")}


# ------------------------------------------------------------------------------------------- ROS message side


class MessageIO:
    """Prebuilt input messages of each frame (as the pose node receives them: ``inputs[i]`` = image, depth,
    camera info) and publishers with a matched subscriber."""

    def __init__(self, sfs, catalogue, topic_prefix: str = "/vfm_pose_bench"):
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage
        from vision_msgs.msg import Detection3DArray
        from visualization_msgs.msg import MarkerArray

        from ..ros import convert

        self.convert = convert
        self.catalogue = catalogue
        header = convert.make_header(1_000_000_000, "camera_color_optical_frame")
        self.header = header
        self.inputs = [(convert.rgb_to_image(sf.rgb, header), convert.depth_to_image(sf.depth, header),
                        convert.K_to_camera_info(sf.K, sf.rgb.shape[1], sf.rgb.shape[0], header)) for sf in sfs]
        self.TFMessage = TFMessage
        self.contexts = []
        self.nodes = []
        pub_ctx, sub_ctx = rclpy.Context(), rclpy.Context()
        for ctx in (pub_ctx, sub_ctx):
            rclpy.init(context=ctx)
            self.contexts.append(ctx)
        self.node = rclpy.create_node("vfm_pose_bench_pub", context=pub_ctx)
        sub = rclpy.create_node("vfm_pose_bench_sub", context=sub_ctx)
        self.nodes = [self.node, sub]
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        types = {"detections": Detection3DArray, "tf": TFMessage, "markers": MarkerArray}
        self.pubs = {k: self.node.create_publisher(t, f"{topic_prefix}/{k}", qos) for k, t in types.items()}
        self.subs = [sub.create_subscription(t, f"{topic_prefix}/{k}", lambda _m: None, qos) for k, t in types.items()]
        deadline = time.monotonic() + 10.0
        while any(p.get_subscription_count() < 1 for p in self.pubs.values()) and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self):
        for n in self.nodes:
            n.destroy_node()
        for ctx in self.contexts:
            if ctx.ok():
                ctx.shutdown()


# ------------------------------------------------------------------------------------------- one estimator


def node_pipeline(est, prompt: str | None):
    """The FramePipeline the pose node would build with its default parameters (config/pose.yaml), tracking
    off, depth on, and ``prompt``."""
    from ..pipeline import FramePipeline
    from ..ros.graph import load_pose_defaults

    params = {**load_pose_defaults(), "prompt": prompt or "", "use_depth": True, "tracking_enabled": False}
    return FramePipeline.from_params(est, params)


def _decode(io: MessageIO, i: int, stamp_ns: int):
    """A CameraFrame from frame ``i``'s messages, as the pose node decodes them."""
    from ..pipeline import CameraFrame

    c = io.convert
    image_msg, depth_msg, info_msg = io.inputs[i]
    K, size = c.camera_info_to_K(info_msg)
    return CameraFrame(rgb=c.image_to_rgb(image_msg), K=K, depth=c.image_to_depth(depth_msg), stamp_ns=stamp_ns,
                       frame_id=image_msg.header.frame_id, camera_size=size)


def _publish(io: MessageIO, catalogue, poses, row: dict) -> None:
    """Build and publish the node's three messages, timed into ``row`` (messages, publish)."""
    c = io.convert
    t0 = time.perf_counter()
    det = c.poses_to_detection_array(poses, catalogue, io.header)
    tfs = c.pose_transforms(poses, catalogue, io.header)
    markers = c.pose_markers(poses, catalogue, io.header)
    t1 = time.perf_counter()
    io.pubs["detections"].publish(det)
    io.pubs["tf"].publish(io.TFMessage(transforms=tfs))
    io.pubs["markers"].publish(markers)
    row["messages"], row["publish"] = (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3


def _stage_row(result) -> dict:
    """One frame's stages from a FrameResult: the pipeline's validate and select, the estimator's own stages,
    ``predict`` (the estimator call) and ``other`` (its time outside the stages it names)."""
    t = result.timings_ms
    if result.outcome != "inferred":
        raise RuntimeError(f"the benchmark frame was not inferred: {result.reason}")
    own = {k: float(v) for k, v in t.items() if k not in ("total", "infer")}
    row = {**own, "predict": float(t["infer"])}
    named = sum(v for k, v in own.items() if k not in ("validate", "select"))
    row["other"] = max(0.0, row["predict"] - named)
    return row


def measure_pipeline(est, sfs, catalogue, repeats: int, warmup: int, io: MessageIO | None = None,
                     prompt: str | None = PROMPT, boxes: bool = False, progress: bool = True,
                     interleave_backbone: bool = True) -> dict:
    """Per-stage medians (ms) over ``repeats`` frames of the pose node's path around one estimator (message
    decoding, then the node's FramePipeline, then message building and publishing), taking the scene frames
    ``sfs`` in turn (the ones the ROS section sends: how often the depth stage needs its global search depends
    on the frame); with ``interleave_backbone`` each frame is followed by one call of the backbone alone
    (BackboneProbe). Messages are built from the ground-truth poses, so their cost does not depend on what a
    random-weight network finds."""
    from ..pipeline import CameraFrame

    probe = BackboneProbe(est) if interleave_backbone else None
    counter = ImageCounter(backbone_parts(est)[1])
    pipeline = node_pipeline(est, prompt)
    rows: list[dict] = []
    found: list[int] = []
    images: list[int] = []
    base_frames = [to_frame(sf, prompt=prompt, boxes=boxes) for sf in sfs]
    msg_poses_of = [gt_poses(sf) for sf in sfs]  # what message building is timed with
    if boxes and est.backend == "dinov2":  # dinov2 crops every boxed object: keep one box, one crop
        for f in base_frames:
            f.boxes_2d = {k: v for k, v in f.boxes_2d.items() if k.startswith("driller")}
    try:
        from tqdm import tqdm

        total = max(0, warmup) + max(1, repeats)
        for i in tqdm(range(total), desc=f"{est.backend} {est.precision}{' box' if boxes else ''}", leave=False,
                      disable=not progress):
            j = i % len(sfs)
            c0, t0 = time.process_time(), time.perf_counter()
            if io is not None:
                frame = _decode(io, j, i)
                convert_ms = (time.perf_counter() - t0) * 1e3
            else:
                frame = CameraFrame(rgb=sfs[j].rgb, K=sfs[j].K, depth=sfs[j].depth, stamp_ns=i)
            frame.boxes_2d = base_frames[j].boxes_2d
            counter.reset()
            result = pipeline.process(frame)
            row = _stage_row(result)
            if io is not None:
                row["convert"] = convert_ms
                _publish(io, catalogue, msg_poses_of[j], row)
            row["e2e"] = (time.perf_counter() - t0) * 1e3
            row["e2e_cpu"] = (time.process_time() - c0) * 1e3
            n_images = counter.n  # before the probe's own image
            if probe is not None:
                row["backbone_alone"] = probe()
                row["backbone_alone_cpu"] = probe.cpu_ms[-1]
                row["ratio"] = row["e2e"] / row["backbone_alone"]
                row["ratio_cpu"] = row["e2e_cpu"] / max(row["backbone_alone_cpu"], 1e-6)
            if i >= warmup:
                rows.append(row)
                found.append(len(result.poses))
                images.append(n_images)
    finally:
        counter.close()
    return _pipeline_summary(rows, found, images, msg_poses_of, boxes, probe)


def _pipeline_summary(rows, found, images, msg_poses_of, boxes: bool, probe) -> dict:
    keys = sorted({k for r in rows for k in r})
    detail = {k: summarize([r.get(k, 0.0) for r in rows]) for k in keys}
    special = ("predict", "e2e", "e2e_cpu", "backbone_alone", "backbone_alone_cpu", "ratio", "ratio_cpu")
    out = {
        "stages_ms": {k: detail[k]["median"] for k in STAGE_ORDER if k in detail},
        "predict_ms": detail["predict"],
        "e2e_inproc_ms": detail["e2e"],
        "e2e_inproc_cpu_ms_median": detail["e2e_cpu"]["median"],
        "stages_detail_ms": {k: v for k, v in detail.items() if k not in special},
        "stage_ran_fraction": {k: round(float(np.mean([r.get(k, 0.0) > 0 for r in rows])), 2)
                               for k in ("pnp", "icp") if k in detail},
        "backbone_images_per_frame": float(np.median(images)) if images else None,
        "poses_per_frame": float(np.mean(found)) if found else 0.0,
        "message_poses": float(np.mean([len(p) for p in msg_poses_of])),
        "with_external_box": boxes,
        "path": "ros.convert decoding + pipeline.FramePipeline (the pose node's defaults) + message building",
    }
    if probe is not None:
        out["backbone_alone_ms"] = {"side": probe.side, **detail["backbone_alone"],
                                    "cpu_ms_median": detail["backbone_alone_cpu"]["median"], "interleaved": True}
        out["ratio_e2e_inproc_to_backbone"] = round(detail["ratio"]["median"], 2)
        out["ratio_e2e_inproc_to_backbone_cpu"] = round(detail["ratio_cpu"]["median"], 2)
        in_pipe = out["stages_ms"].get("backbone")
        # overhead around the network: e2e over the backbone time the pipeline itself spent (all its passes)
        out["ratio_e2e_inproc_to_pipeline_backbone"] = round(detail["e2e"]["median"] / in_pipe, 2) if in_pipe else None
    return out


def measure_batch(est, sf, repeats: int, warmup: int, sizes=(1, 4), prompt: str | None = PROMPT,
                  progress: bool = True) -> dict:
    """Milliseconds per frame when ``n`` frames (n cameras at once) go through one ``predict_batch`` call, for
    each n in ``sizes``: the backends batch the full-frame pass and the crops of all frames. RGB only: the
    depth stage runs per object whatever the batch, and would hide what batching does to the network."""
    from dataclasses import replace

    frame = replace(to_frame(sf, prompt=prompt), depth=None)
    out = {}
    for n in sizes:
        frames = [replace(frame) for _ in range(n)]
        ms = time_calls(lambda fs=frames: est.predict_batch(fs), repeats, warmup, desc=f"{est.backend} batch {n}",
                        progress=progress)
        out[str(n)] = {"ms_per_frame": round(float(np.median(ms)) / n, 3), "ms_per_call": summarize(ms)}
    base = out.get("1", {}).get("ms_per_frame")
    for v in out.values():
        v["speedup_vs_batch_1"] = round(base / v["ms_per_frame"], 2) if base else None
    return out


def precisions_for(device) -> list[str]:
    """fp32 and the device's fast autocast type: bf16 on the CPU, fp16 on CUDA."""
    return ["fp32", "fp16" if str(device).startswith("cuda") else "bf16"]


def measure_variant(variant: Variant, catalogue, sfs, repeats: int, warmup: int, device: str = "cpu",
                    io: MessageIO | None = None, checkpoint_dir: Path | None = None, progress: bool = True,
                    profile_dir: Path | None = None) -> dict:
    """Everything in-process for one variant: per precision the stages, the backbone alone and their ratio;
    at fp32 also the single-crop path (external box) and batch inference (the first frame). ``sfs``: the scene
    frames, taken in turn. Saves a checkpoint for the ROS section when asked."""
    import torch

    est, info = build_estimator(variant, catalogue, device=device, precision="fp32")
    backbone, _, side, _, _ = backbone_parts(est)
    out: dict = {
        "source": info["source"], "device": str(est.device),
        "backbone": est.config.get("backbone") or est.config.get("clip_model"),
        "input_side": side, "params_backbone_m": round(count_params(backbone) / 1e6, 2),
        "params_total_m": round(count_params(est.net) / 1e6, 2), "precision": {},
    }
    if checkpoint_dir is not None and not info["source"].endswith(".pt"):
        from ..models.checkpoint import save_checkpoint

        path = Path(checkpoint_dir) / f"{variant.backend}_{variant.size}.pt"
        save_checkpoint(path, est.net, backend=variant.backend, config=est.net.config, catalogue=catalogue,
                        data_hash="bench-random-init", epoch=0)
        out["checkpoint"] = str(path)
    elif info["source"].endswith(".pt"):
        out["checkpoint"] = info["source"]
    for prec in precisions_for(est.device):
        e = est if prec == "fp32" else with_precision(est, prec)
        res = measure_pipeline(e, sfs, catalogue, repeats, warmup, io=io, progress=progress)
        if prec == "fp32" and torch.get_num_threads() > 1:
            # on a loaded machine OpenMP threads wait for each other at every barrier: one thread can be faster
            n = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                res["backbone_alone_1thread_ms"] = time_backbone(e, repeats, warmup, progress=progress)
            finally:
                torch.set_num_threads(n)
        if prec == "fp32":
            box = measure_pipeline(e, sfs, catalogue, repeats, warmup, io=io, boxes=True, progress=progress)
            res["external_box"] = {k: box[k] for k in ("stages_ms", "predict_ms", "e2e_inproc_ms", "backbone_alone_ms",
                                                         "backbone_images_per_frame", "ratio_e2e_inproc_to_backbone")}
            res["batch"] = measure_batch(e, sfs[0], max(1, repeats // 3), min(warmup, 1), progress=progress)
            if profile_dir is not None:
                out["profile"] = profile_pipeline(e, sfs, catalogue, io, profile_dir / f"profile_{variant.backend}_"
                                                  f"{variant.size}.txt", frames=max(3, repeats // 2))
        out["precision"][prec] = res
    if est.device.type == "cuda":
        out["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated(est.device) / 2**20, 1)
    del est
    gc.collect()
    return out


# ------------------------------------------------------------------------------------------- profiling


def profile_pipeline(est, sfs, catalogue, io: MessageIO | None, out_path: Path, frames: int = 5) -> dict:
    """cProfile of ``frames`` pipeline runs (warm); writes the pstats listing and returns the top functions
    by own time, per frame, outside torch's module machinery (where the backbone's time lands)."""
    import cProfile
    import io as _io
    import pstats

    measure_pipeline(est, sfs, catalogue, 1, 1, io=io, progress=False, interleave_backbone=False)  # warm caches
    prof = cProfile.Profile()
    prof.enable()
    measure_pipeline(est, sfs, catalogue, frames, 0, io=io, progress=False, interleave_backbone=False)
    prof.disable()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    buf = _io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(40)
    stats.sort_stats("cumulative").print_stats(60)
    out_path.write_text(buf.getvalue())
    top = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():
        top.append({"function": f"{Path(file).name}:{line}({func})", "file": file, "calls_per_frame": nc / frames,
                    "own_ms_per_frame": round(tt * 1e3 / frames, 3), "cum_ms_per_frame": round(ct * 1e3 / frames, 3)})
    top.sort(key=lambda r: -r["own_ms_per_frame"])
    return {"file": str(out_path), "frames": frames, "top_own_time": top[:25]}
