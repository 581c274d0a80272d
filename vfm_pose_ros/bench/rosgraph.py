"""Measurements through ROS 2 in separate processes over real DDS (the package's Fast DDS profile, loopback).

* :func:`measure_transport`: a publisher process converts a VGA numpy frame to an Image and publishes
  it; this process receives it and converts it back (convert.image_to_rgb). The latency from before
  the first conversion to after the second is what a camera frame costs before inference.
* :func:`measure_pose_node`: the pose node in its own process (started from the graph description,
  ros/graph.py, as ``vfm-pose launch`` starts it); this process publishes camera frames and waits for
  each answer (image published -> detections received), then replays a bag with the package's player
  in lockstep (frames/s), and reads the node's peak RSS (the kernel's VmHWM).
* the soak run (:mod:`vfm_pose_ros.bench.soak`) builds on the process helpers here.

Stamps carry ``time.monotonic_ns()`` where latency crosses processes: CLOCK_MONOTONIC is one clock
for every process of a Linux machine.

Run as ``python -m vfm_pose_ros.bench.rosgraph publish ...`` it is the transport's publisher process.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .common import PROMPT, SkipSection, process_memory_mb, summarize

BENCH_STAMP_BASE_NS = 1000 * 1_000_000_000  # probe frames: after any bag's stamps (they start at 1 s)


def require_ros() -> None:
    """SkipSection unless rclpy and the interface packages import."""
    try:
        import rclpy  # noqa: F401
        import vision_msgs.msg  # noqa: F401
    except ImportError as exc:
        raise SkipSection(f"ROS 2 is not importable ({exc}); run `make setup` (ROS wheels + interfaces)") from None


class RosClient:
    """This process's own node, in its own context, spun on demand."""

    def __init__(self, name: str):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)

    def spin_until(self, cond, timeout: float, proc: subprocess.Popen | None = None, step: float = 0.05) -> bool:
        """Spin until ``cond()``; False on timeout or when ``proc`` has exited."""
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end or (proc is not None and proc.poll() is not None):
                return bool(cond())
            self.executor.spin_once(timeout_sec=step)
        return True

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if self.ctx.ok():
            self.ctx.shutdown()


# ------------------------------------------------------------------------------------------- processes


def start_process(cmd: list[str], log_path: Path) -> subprocess.Popen:
    """A child process (own session, so Ctrl-C here is forwarded once by stop_process) logging to a file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")  # noqa: SIM115 - closed in stop_process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(), start_new_session=True)
    proc.log_file, proc.log_path = log, log_path
    return proc


def start_node(spec, workdir: Path, extra_args: list[str] | None = None) -> subprocess.Popen:
    """Start a graph node (ros/graph.py NodeSpec) the way `vfm-pose launch` does: python -m module + params file."""
    params = None
    if spec.parameters:
        params = workdir / f"{spec.name}.params.yaml"
        params.write_text(spec.params_yaml())
    spec.arguments = list(spec.arguments) + list(extra_args or [])
    cmd = spec.command(params)
    if cmd is None:
        raise FileNotFoundError(f"{spec.executable} is not installed")
    return start_process(cmd, workdir / f"{spec.name}.log")


def stop_process(proc: subprocess.Popen, grace: float = 20.0) -> int | None:
    """SIGINT (clean shutdown, reports written), then terminate/kill after ``grace`` seconds."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            from ..ros.graph import terminate

            terminate(proc)
        except ProcessLookupError:
            pass
    log = getattr(proc, "log_file", None)
    if log is not None and not log.closed:
        log.close()
    return proc.returncode


def log_tail(proc_or_path, lines: int = 25) -> str:
    path = getattr(proc_or_path, "log_path", proc_or_path)
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def pose_node_spec(checkpoint, backend: str, device: str = "cpu", precision: str = "auto", extra: dict | None = None):
    """The pose node of the 'pose' graph with the benchmark's parameters (reliable input, every result published)."""
    from ..ros.graph import POSE_NODE, graph_nodes

    args = {"checkpoint": str(checkpoint), "backend": backend, "device": device, "precision": precision,
            "use_depth": "true", "input_qos": "reliable", "score_threshold": "0.0",
            "plausibility_gates": "false",
            "prompt": PROMPT if backend in ("clip", "hybrid") else "", **(extra or {})}
    return next(s for s in graph_nodes(args, "pose") if s.name == POSE_NODE)


def detections_topic() -> str:
    from ..ros.graph import POSE_NODE

    return f"/{POSE_NODE}/detections"


# ------------------------------------------------------------------------------------------- transport


def _publisher_main(argv: list[str]) -> int:
    """Child process of :func:`measure_transport`: publish ``--frames`` VGA frames converted from numpy."""
    ap = argparse.ArgumentParser(prog="python -m vfm_pose_ros.bench.rosgraph publish")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--qos", choices=("reliable", "sensor"), default="reliable")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--wait", type=float, default=60.0)
    a = ap.parse_args(argv)

    from ..ros.env import configure_ros_env

    configure_ros_env()
    import rclpy
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from ..ros import convert

    rclpy.init()
    node = rclpy.create_node("vfm_pose_bench_camera")
    qos = qos_profile_sensor_data if a.qos == "sensor" else QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = node.create_publisher(Image, a.topic, qos)
    rgb = np.random.default_rng(0).integers(0, 256, (a.height, a.width, 3), dtype=np.uint8)
    end = time.monotonic() + a.wait
    while pub.get_subscription_count() < 1:
        if time.monotonic() > end:
            print(json.dumps({"error": f"no subscriber on {a.topic} after {a.wait:.0f} s"}), flush=True)
            return 2
        time.sleep(0.02)
    time.sleep(0.5)  # matching is per side: let the subscriber's side finish too
    conv, pubt = [], []
    period = 1.0 / a.rate if a.rate > 0 else 0.0
    t_next = time.monotonic()
    for _ in range(a.frames):
        t0 = time.monotonic_ns()
        msg = convert.rgb_to_image(rgb, convert.make_header(t0, "camera_color_optical_frame"))
        t1 = time.monotonic_ns()
        pub.publish(msg)
        t2 = time.monotonic_ns()
        conv.append((t1 - t0) / 1e6)
        pubt.append((t2 - t1) / 1e6)
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))
    if a.qos == "reliable":
        pub.wait_for_all_acked(Duration(seconds=5.0))
    print(json.dumps({"numpy_to_image_ms": summarize(conv), "publish_call_ms": summarize(pubt)}), flush=True)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.shutdown()
    return 0


def measure_transport(frames: int = 200, qos: str = "reliable", width: int = 640, height: int = 480,
                      rate: float = 30.0, warmup: int = 5, workdir: Path | None = None) -> dict:
    """numpy -> Image -> publish -> receive -> numpy for ``frames`` frames between two processes."""
    require_ros()
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from ..ros import convert

    topic = f"/vfm_pose_bench/transport_{qos}"
    client = RosClient("vfm_pose_bench_receiver")
    lat, conv = [], []

    def on_image(msg):
        t0 = time.monotonic_ns()
        rgb = convert.image_to_rgb(msg)
        t1 = time.monotonic_ns()
        if rgb.shape != (height, width, 3):
            raise ValueError(f"received {rgb.shape}, expected {(height, width, 3)}")
        lat.append((t1 - convert.stamp_to_ns(msg.header.stamp)) / 1e6)
        conv.append((t1 - t0) / 1e6)

    q = qos_profile_sensor_data if qos == "sensor" else QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    client.node.create_subscription(Image, topic, on_image, q)
    cmd = [sys.executable, "-m", "vfm_pose_ros.bench.rosgraph", "publish", "--topic", topic, "--frames", str(frames),
           "--qos", qos, "--rate", str(rate), "--width", str(width), "--height", str(height)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        client.spin_until(lambda: len(lat) >= frames, timeout=120 + frames / max(rate, 1.0), proc=proc)
        client.spin_until(lambda: len(lat) >= frames, timeout=2.0)  # what is still in flight
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.close()
    if proc.returncode != 0:
        raise RuntimeError(f"transport publisher failed ({proc.returncode}): {(out + err)[-1500:]}")
    child = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    return {"qos": qos, "size": f"{width}x{height}", "frames_sent": frames, "frames_received": len(lat),
            "lost": frames - len(lat), "rate_hz": rate,
            "latency_ms": summarize(lat[warmup:]), "image_to_numpy_ms": summarize(conv[warmup:]),
            "publisher": child}


# ------------------------------------------------------------------------------------------- pose node


def write_bag(frames, path: Path, catalogue, n: int | None = None, progress: bool = False) -> Path:
    """A rosbag2 of ``n`` frames cycling through ``frames`` (each with its own stamp), via data.rosbag."""
    from ..data.rosbag import write_frames

    n = len(frames) if n is None else int(n)
    items = (SimpleNamespace(scene_id=0, im_id=i, rgb=f.rgb, depth=f.depth, K=f.K, gts=f.gts)
             for i, f in zip(range(n), itertools.cycle(frames)))
    write_frames(items, path, catalogue, total=n, progress=progress)
    return path


class _Camera:
    """This process as the pose node's camera: publishes a frame's messages and waits for its detections."""

    def __init__(self, client: RosClient, use_depth: bool, proc: subprocess.Popen):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from vision_msgs.msg import Detection3DArray

        from ..ros import convert
        from ..ros.graph import load_pose_defaults

        topics = load_pose_defaults()
        self.client, self.use_depth, self.proc, self.convert = client, use_depth, proc, convert
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node = client.node
        self.pubs = {"info": node.create_publisher(CameraInfo, topics["camera_info_topic"], qos),
                     "image": node.create_publisher(Image, topics["image_topic"], qos)}
        if use_depth:
            self.pubs["depth"] = node.create_publisher(Image, topics["depth_topic"], qos)
        self.received: dict[int, float] = {}
        self.sub = node.create_subscription(
            Detection3DArray, detections_topic(),
            lambda m: self.received.setdefault(convert.stamp_to_ns(m.header.stamp), time.monotonic()), qos)
        self.node_diag: dict[str, str] = {}  # the node's own view: inference and receive -> publish medians
        node.create_subscription(
            DiagnosticArray, "/diagnostics",
            lambda m: self.node_diag.update({kv.key: kv.value for st in m.status for kv in st.values}), qos)
        self.msgs: list[tuple] = []

    def load(self, frames: list) -> None:
        """Convert the frames to messages once (after start-up, which is timed without it)."""
        convert = self.convert
        self.msgs = [(convert.rgb_to_image(f.rgb), convert.depth_to_image(f.depth),
                      convert.K_to_camera_info(f.K, f.rgb.shape[1], f.rgb.shape[0])) for f in frames]

    def wait_for_node(self) -> bool:
        """True once every publisher and the detections subscription have matched the node."""
        ready = self.client.spin_until(lambda: all(p.get_subscription_count() >= 1 for p in self.pubs.values())
                                       and self.sub.get_publisher_count() >= 1, timeout=900, proc=self.proc)
        if ready:
            self.client.spin_until(lambda: False, timeout=0.5)  # both sides matched
        return ready

    def send(self, stamp: int, i: int) -> float | None:
        """Milliseconds from publishing frame ``i`` at ``stamp`` to its detections; None if none came."""
        image, depth, info = self.msgs[i % len(self.msgs)]
        header = self.convert.make_header(stamp, "camera_color_optical_frame")
        image.header = depth.header = info.header = header
        t0 = time.monotonic()
        self.pubs["info"].publish(info)
        if self.use_depth:
            self.pubs["depth"].publish(depth)
        self.pubs["image"].publish(image)
        if not self.client.spin_until(lambda: stamp in self.received, timeout=300, proc=self.proc, step=0.01):
            return None
        return (self.received[stamp] - t0) * 1e3

    def node_figures(self) -> dict:
        """The node's own medians over the same frames (warm-up included), after one more diagnostics period:
        inference, received -> published, and the estimator's stage medians (preprocess, backbone, head, icp..)."""
        self.node_diag.clear()
        self.client.spin_until(lambda: bool(self.node_diag), timeout=5.0)
        diag = self.node_diag
        node = {k: _float_or_none(diag.get(k))
                for k in ("inference_median_ms", "latency_p50_ms", "frames_roi", "frames_estimated", "frames_tracked")}
        stage_keys = [k for k in diag if k.startswith("stage_") and k.endswith("_median_ms")]
        node["stages_ms"] = {k[len("stage_"):-len("_median_ms")]: _float_or_none(diag[k]) for k in stage_keys}
        node["backbone_median_ms"] = node["stages_ms"].get("backbone")
        return node


def _latency_run(camera: _Camera, backend: str, n_frames: int, warmup: int, probe,
                 progress: bool) -> tuple[list[float], dict]:
    """(latency per answered frame in ms, the figures), the backbone reference (``probe``) timed after each answer."""
    from tqdm import tqdm

    for k in range(warmup):  # stamps below any bag's (1 s + i / fps): the node's stamp order stays monotonic
        camera.send(1_000_000 * (k + 1), k)
    lat, bbs, lost = [], [], 0
    if probe is not None:
        probe()  # warm this process's backbone
    for i in tqdm(range(n_frames), desc=f"ros {backend}", leave=False, disable=not progress):
        ms = camera.send(BENCH_STAMP_BASE_NS + i * 33_000_000, i)
        if ms is None:
            lost += 1
            proc = camera.proc
            if proc.poll() is not None:
                raise RuntimeError(f"the pose node exited ({proc.returncode}); its log:\n{log_tail(proc)}")
        else:
            lat.append(ms)
            if probe is not None:
                bbs.append(probe())
    out = {"latency_ms": summarize(lat), "lost": lost}
    if bbs:
        out["backbone_alone_ms"] = {**summarize(bbs), "interleaved": True}
        out["ratio_latency_to_backbone"] = round(float(np.median(np.divide(lat, bbs))), 2)
    return lat, out


def measure_pose_node(checkpoint, backend: str, frames: list, workdir: Path, n_frames: int, warmup: int,
                      bag: Path | None = None, device: str = "cpu", precision: str = "auto",
                      progress: bool = True, probe=None, extra: dict | None = None) -> dict:
    """Latency image published -> detections received (p50/p95), lockstep replay frames/s, peak RSS.

    ``probe`` (pipeline.BackboneProbe of the same model in this process): called after each answered
    frame, while the node waits for the next one, so latency and backbone reference see the same load.
    ``extra``: further pose node parameters (the tracking-mode run sets tracking_enabled, use_depth false).
    """
    require_ros()
    workdir.mkdir(parents=True, exist_ok=True)
    spec = pose_node_spec(checkpoint, backend, device=device, precision=precision, extra=extra)
    use_depth = str((extra or {}).get("use_depth", "true")).lower() == "true"
    t_start = time.monotonic()
    proc = start_node(spec, workdir)
    client = RosClient("vfm_pose_bench_camera")
    out: dict = {"checkpoint": str(checkpoint), "precision": precision, "pid": proc.pid}
    try:
        camera = _Camera(client, use_depth, proc)
        if not camera.wait_for_node():
            raise RuntimeError(f"the pose node did not come up (exit {proc.poll()}); its log:\n{log_tail(proc)}")
        out["startup_s"] = round(time.monotonic() - t_start, 1)
        out["memory_after_load"] = process_memory_mb(proc.pid)
        camera.load(frames)
        lat, figures = _latency_run(camera, backend, n_frames, warmup, probe, progress)
        out.update(figures)
        out["node"] = camera.node_figures()
        if lat and out["node"]["backbone_median_ms"]:
            out["ratio_latency_to_node_backbone"] = round(float(np.median(lat)) / out["node"]["backbone_median_ms"], 2)
        if bag is not None:
            out["lockstep"] = replay_lockstep(bag, workdir)
        out["memory_end"] = process_memory_mb(proc.pid)
    finally:
        client.close()
        code = stop_process(proc)
        out["exit_code"] = code
    return out


def _float_or_none(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def replay_lockstep(bag: Path, workdir: Path, timeout_s: float = 1800) -> dict:
    """The package's bag player in lockstep with the running pose node; its summary (frames/s etc.)."""
    summary_path = workdir / "player_summary.json"
    cmd = [sys.executable, "-m", "vfm_pose_ros.ros.player", str(bag), "--lockstep", detections_topic(),
           "--lockstep-timeout", "120", "--wait-timeout", "120", "--summary", str(summary_path), "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
    from ..ros.player import LOCKSTEP_TIMEOUT_STATUS  # timeouts: counted in the summary, not a failure here

    if run.returncode not in (0, LOCKSTEP_TIMEOUT_STATUS) or not summary_path.is_file():
        raise RuntimeError(f"player failed ({run.returncode}): {(run.stdout + run.stderr)[-1500:]}")
    s = json.loads(summary_path.read_text())
    return {k: s.get(k) for k in ("frames_sent", "frames_answered", "timeouts", "late_answers", "wall_s", "fps",
                                  "answer_latency_ms")}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "publish":
        sys.exit(_publisher_main(sys.argv[2:]))
    print("usage: python -m vfm_pose_ros.bench.rosgraph publish --topic T [--frames N] ...", file=sys.stderr)
    sys.exit(2)
