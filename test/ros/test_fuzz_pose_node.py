"""Property-based fuzzing of the pose node over DDS: at least 1,000 malformed or random camera frames.

The pose node runs in its own process (started once for the module) with a tiny randomly
initialised CLIP checkpoint. This process generates frames with hypothesis strategies (a
``@given`` function run with ``max_examples``) and publishes each one as the subscribed message
types: colour Image (random encodings, sizes, steps, data lengths, empty), depth Image (NaN,
inf, zeros, negative values, other sizes, other encodings, missing), CameraInfo (zero, NaN, inf
or negative K; other sizes; missing) and stamps going backwards. A subscriber checks what the
node publishes; at the end the node must be alive and its /diagnostics must account for every
image sent (processed, rejected by reason, dropped as stale, or never paired by the sync).

Generation only (no shrinking, fixed seed): the node is stateful (cached camera info, stamp
order), so a shrunk example replayed later says little; a failure names the frame that broke it.
"""
from __future__ import annotations

import array
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs is not built (interfaces/)")
pytest.importorskip("torch", reason="torch is not installed (requirements/ml.txt)")
hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (requirements/dev.txt)")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vfm_pose_ros.ros import convert  # noqa: E402

from .private_ros import close_private_node, private_node, stop_process  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

N_EXAMPLES = 1000  # frames from hypothesis (plus PRELUDE frames sent before any camera_info)
PRELUDE = 3
T0_NS = 1_000_000_000_000  # stamps start at 1000 s, so backward jumps stay positive
IMAGE, DEPTH, INFO = "/fuzz/color/image_raw", "/fuzz/depth/image_raw", "/fuzz/color/camera_info"
BAD_COLOUR_ENCODINGS = ["16UC1", "32FC1", "yuv422", "bayer_rggb8", "", "RGB8", "8UC3", "mono16"]
BAD_DEPTH_ENCODINGS = ["rgb8", "mono16", "", "32FC3", "8UC1"]


def bytes_per_pixel(encoding: str) -> int:
    if encoding in convert.ENCODINGS:
        dtype, channels = convert.ENCODINGS[encoding]
        return dtype.itemsize * channels
    return 3  # an encoding the node does not know: the sender's idea of its layout does not matter


# --------------------------------------------------------------------------- strategies


def layout():
    """How an Image's step and data length relate to its width and height (mostly right)."""
    return st.fixed_dictionaries({
        "step": st.sampled_from(["exact"] * 14 + ["padded", "short", "random"]),
        "data": st.sampled_from(["exact"] * 16 + ["empty", "short", "long", "random", "last_row_unpadded"]),
        "bigendian": st.sampled_from([False] * 4 + [True]),
        "extra": st.integers(1, 64),
    })


@st.composite
def frames(draw):
    kind = draw(st.sampled_from(["valid"] * 10 + ["bad", "text"]))  # mostly decodable: the later checks need those
    colour_enc = draw({"valid": st.sampled_from(convert.COLOR_ENCODINGS), "bad": st.sampled_from(BAD_COLOUR_ENCODINGS),
                       "text": st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", max_size=10)}[kind])
    with_depth = draw(st.sampled_from([True] * 6 + [False]))
    h, w = draw(st.integers(0, 40)), draw(st.integers(0, 48))
    return {
        "seed": draw(st.integers(0, 2**32 - 1)),
        "stamp": draw(st.sampled_from(["forward"] * 12 + ["backward", "same"])),
        "step_ms": draw(st.integers(40, 300)),
        "back_ms": draw(st.integers(1, 5000)),
        "frame_id": draw(st.sampled_from(["cam_optical", "cam_optical", "", "x" * 64])),
        "colour": {"encoding": colour_enc, "h": h, "w": w, **draw(layout())},
        "depth": draw(st.fixed_dictionaries({
            "encoding": st.sampled_from(["16UC1", "32FC1"] * 8 + BAD_DEPTH_ENCODINGS),
            "size": st.sampled_from(["same"] * 7 + ["other"]),
            "h": st.integers(0, 40), "w": st.integers(0, 48),
            "content": st.sampled_from(["valid"] * 6 + ["nan_holes", "inf", "negative"] + ["all_zero", "all_nan"] * 2),
            "stamp_offset_ms": st.sampled_from([0] * 10 + [5, 50, -50]),
        })) if with_depth else None,
        "depth_layout": draw(layout()),
        "info": draw(st.one_of(st.none(), st.fixed_dictionaries({
            "K": st.sampled_from(["valid"] * 6 + ["zero", "nan", "inf", "negative_f", "tiny_f"]),
            "size": st.sampled_from(["match"] * 5 + ["zero", "other"]),
        }))),
    }


# --------------------------------------------------------------------------- message building


def build_image(encoding: str, h: int, w: int, lay: dict, payload: bytes | None, rng, header):
    """An Image with the given layout; ``payload`` are the exact row bytes when the layout is right."""
    from sensor_msgs.msg import Image

    row = w * bytes_per_pixel(encoding)
    step = {"exact": row, "padded": row + lay["extra"], "short": max(0, row - lay["extra"]),
            "random": int(rng.integers(0, 4 * row + 8))}[lay["step"]]
    n = {"exact": step * h, "empty": 0, "short": max(0, step * h - lay["extra"]), "long": step * h + lay["extra"],
         "random": int(rng.integers(0, 4 * step * h + 8)),
         "last_row_unpadded": max(0, step * (h - 1) + row)}[lay["data"]]
    if payload is not None and step >= row and h > 0:
        rows = np.zeros((h, step), np.uint8)
        rows[:, :row] = np.frombuffer(payload, np.uint8).reshape(h, row)
        data = rows.tobytes()
        data = (data + rng.integers(0, 256, max(0, n - len(data)), dtype=np.uint8).tobytes())[:n]
    else:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    msg = Image(header=header, height=h, width=w, encoding=encoding, step=step,
                is_bigendian=int(lay["bigendian"]))
    msg.data = array.array("B", data)
    return msg, step, n


def depth_payload(enc: str, h: int, w: int, content: str, big: bool, rng) -> bytes | None:
    if enc not in ("16UC1", "32FC1") or h * w == 0:
        return None
    metres = rng.uniform(0.3, 2.0, (h, w)).astype(np.float32)
    if content == "all_zero":
        metres[:] = 0
    elif content == "all_nan":
        metres[:] = np.nan
    elif content in ("nan_holes", "inf", "negative"):
        holes = rng.random((h, w)) < 0.3
        metres[holes] = {"nan_holes": np.nan, "inf": np.inf, "negative": -0.5}[content]
    if enc == "16UC1":
        arr = np.where(np.isfinite(metres) & (metres > 0), np.rint(metres * 1000), 0).astype(np.uint16)
    else:
        arr = metres
    return arr.astype(arr.dtype.newbyteorder(">" if big else "<")).tobytes()


def K_for(mode: str, w: int, h: int) -> np.ndarray:
    K = np.array([[60.0, 0, w / 2], [0, 60.0, h / 2], [0, 0, 1]])
    if mode == "zero":
        K[:] = 0
    elif mode == "nan":
        K[0, 2] = np.nan
    elif mode == "inf":
        K[1, 1] = np.inf
    elif mode == "negative_f":
        K[0, 0] = -60.0
    elif mode == "tiny_f":
        K[0, 0] = K[1, 1] = 1e-12
    return K


def surely_invalid(c: dict, step: int, n: int) -> bool:
    """Frames whose colour image alone makes them unusable: the node must never answer them with a pose."""
    enc, h, w = c["encoding"], c["h"], c["w"]
    if enc not in convert.COLOR_ENCODINGS or h == 0 or w == 0 or n == 0:
        return True
    row = w * bytes_per_pixel(enc)
    return step < row or n not in (step * h, step * (h - 1) + row)


# --------------------------------------------------------------------------- the harness


class Harness:
    """The fuzzer's ROS side: publishers of the node's inputs, a collector of everything it publishes."""

    def __init__(self, proc, log_path):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from vision_msgs.msg import Detection3DArray

        self.proc, self.log_path = proc, log_path
        self.ctx, self.node, self.executor = private_node("pose_node_fuzzer")
        # KEEP_ALL: a writer never overwrites a sample its reader has not acknowledged (publish blocks instead)
        qos = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
        self.pub_image = self.node.create_publisher(Image, IMAGE, qos)
        self.pub_depth = self.node.create_publisher(Image, DEPTH, qos)
        self.pub_info = self.node.create_publisher(CameraInfo, INFO, qos)
        self.answers, self.diagnostics = [], []
        self.node.create_subscription(Detection3DArray, "/vfm_pose/detections", self.answers.append,
                                      QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        self.stamp = T0_NS
        self.sent_images = self.sent_depth = self.sent_info = 0
        self.headers: dict[tuple[int, str], list[bool]] = {}  # (stamp, frame_id) -> surely_invalid per image sent
        self.kinds: dict[str, int] = {}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self):
        assert self.proc.poll() is None, f"pose node exited ({self.proc.returncode}):\n{self.log()}"

    def spin(self, timeout=0.0):
        self.executor.spin_once(timeout_sec=timeout)

    def spin_until(self, cond, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond():
            self.spin(0.05)
            self.alive()
        return cond()

    def send(self, f: dict | None, rng=None) -> None:
        """Publish one fuzzed frame (camera_info, depth, then the image, as a driver or the bag player does)."""
        rng = rng or np.random.default_rng(f["seed"])
        if f["stamp"] == "forward":
            self.stamp += f["step_ms"] * 1_000_000
        elif f["stamp"] == "backward":
            self.stamp = max(1, self.stamp - f["back_ms"] * 1_000_000)
        c = f["colour"]
        header = convert.make_header(self.stamp, f["frame_id"])
        if f["info"] is not None:
            w, h = {"match": (c["w"], c["h"]), "zero": (0, 0), "other": (c["w"] + 7, c["h"] + 3)}[f["info"]["size"]]
            self.pub_info.publish(convert.K_to_camera_info(K_for(f["info"]["K"], c["w"], c["h"]), w, h, header))
            self.sent_info += 1
        d = f["depth"]
        if d is not None:
            dh, dw = (c["h"], c["w"]) if d["size"] == "same" else (d["h"], d["w"])
            lay = f["depth_layout"]
            dheader = convert.make_header(max(1, self.stamp + d["stamp_offset_ms"] * 1_000_000), f["frame_id"])
            payload = depth_payload(d["encoding"], dh, dw, d["content"], lay["bigendian"], rng)
            self.pub_depth.publish(build_image(d["encoding"], dh, dw, lay, payload, rng, dheader)[0])
            self.sent_depth += 1
        payload = None
        if c["encoding"] in convert.ENCODINGS and c["h"] * c["w"]:
            payload = rng.integers(0, 256, c["h"] * c["w"] * bytes_per_pixel(c["encoding"]), np.uint8).tobytes()
        image, step, n = build_image(c["encoding"], c["h"], c["w"], c, payload, rng, header)
        self.pub_image.publish(image)
        self.sent_images += 1
        self.headers.setdefault((self.stamp, f["frame_id"]), []).append(surely_invalid(c, step, n))

    def latest(self, key: str) -> int:
        """A counter from the newest /diagnostics received so far (-1 before any)."""
        for m in reversed(self.diagnostics):
            for status in m.status:
                if status.name.startswith("/vfm_pose:"):
                    return int({kv.key: kv.value for kv in status.values}.get(key, 0))
        return -1

    def counters(self) -> dict:
        n0 = len(self.diagnostics)
        assert self.spin_until(lambda: len(self.diagnostics) > n0, 10), "no /diagnostics from the pose node"
        status = [s for m in self.diagnostics for s in m.status if s.name.startswith("/vfm_pose:")][-1]
        return {kv.key: kv.value for kv in status.values} | {"_message": status.message, "_level": status.level}

    def close(self):
        close_private_node(self.ctx, self.node, self.executor)


@pytest.fixture(scope="module")
def harness(tmp_path_factory, ros_env, tiny_clip_checkpoint):
    tmp = tmp_path_factory.mktemp("fuzz")
    ckpt = tiny_clip_checkpoint
    log_path = tmp / "pose_node.log"
    log = open(log_path, "w")  # a file, not a pipe: thousands of warnings must not fill a pipe and block the node
    proc = subprocess.Popen(
        [sys.executable, "-m", "vfm_pose_ros.ros.pose_node", "--ros-args",
         "-p", f"checkpoint:={ckpt}", "-p", "backend:=clip", "-p", "device:=cpu", "-p", "input_qos:=reliable",
         "-p", f"image_topic:={IMAGE}", "-p", f"depth_topic:={DEPTH}", "-p", f"camera_info_topic:={INFO}",
         "-p", "score_threshold:=0.0",
         "-p", "plausibility_gates:=false", "-p", "camera_info_wait_ms:=20.0", "-p", "diagnostics_period_s:=0.25",
         "-p", "warn_every_n:=100", "-p", "grasp_frames:=all"],
        env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT)
    h = None
    try:  # the node process is stopped whatever fails, the harness's own start included
        h = Harness(proc, log_path)
        assert h.spin_until(lambda: all(p.get_subscription_count() for p in (h.pub_image, h.pub_depth, h.pub_info))
                            and h.node.count_publishers("/vfm_pose/detections"), 120), f"node not up:\n{h.log()}"
        # matching is per side: the node's readers may learn of our writers a moment after ours learnt of them, and
        # a reliable volatile sample sent in between is never delivered (not the node's loss): wait a little more
        h.spin_until(lambda: False, 1.0)
        yield h
    finally:
        if h is not None:
            h.close()
        stop_process(proc)
        log.close()


def check_answer(msg, headers) -> None:
    """A published Detection3DArray: the header of an image sent, finite unit-quaternion poses in front."""
    key = (convert.stamp_to_ns(msg.header.stamp), msg.header.frame_id)
    assert key in headers, f"answer with header {key} matches no image sent"
    if all(headers[key]):
        assert not msg.detections, f"poses published for an image that cannot be decoded: {key}"
    for det in msg.detections:
        assert det.header == msg.header and det.results
        for pose in [r.pose.pose for r in det.results] + [det.bbox.center]:
            q = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
            t = np.array([pose.position.x, pose.position.y, pose.position.z])
            assert np.all(np.isfinite(q)) and np.all(np.isfinite(t)), (key, q, t)
            assert abs(np.linalg.norm(q) - 1.0) < 1e-6, (key, q)
        assert det.results[0].pose.pose.position.z > 0
        assert math.isfinite(det.results[0].hypothesis.score)


def test_fuzzed_frames_never_crash_the_node_nor_leave_it_unaccounted(harness):
    h = harness
    t_start = time.monotonic()
    rng = np.random.default_rng(0)
    good = {"seed": 0, "stamp": "forward", "step_ms": 100, "back_ms": 0, "frame_id": "cam_optical",
            "colour": {"encoding": "rgb8", "h": 24, "w": 32, "step": "exact", "data": "exact", "bigendian": False,
                       "extra": 1},
            "depth": {"encoding": "32FC1", "size": "same", "h": 0, "w": 0, "content": "valid", "stamp_offset_ms": 0},
            "depth_layout": {"step": "exact", "data": "exact", "bigendian": False, "extra": 1}, "info": None}
    for _ in range(PRELUDE):  # no camera_info yet: answered empty, counted as no_camera_info
        h.send(good, rng)
        h.spin_until(lambda: False, 0.1)

    @settings(max_examples=N_EXAMPLES, phases=[Phase.generate], derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(frames())
    def publish(frame):
        h.send(frame)
        for _ in range(3):
            h.spin(0.0)
        time.sleep(0.006)  # pace the sender a little: the node's executor must take every message (no DDS loss)
        if h.sent_images % 10 == 0:  # and never run far ahead of it (its input history is 20 deep)
            h.alive()
            assert h.spin_until(lambda: h.latest("images_in") >= h.sent_images - 5, 30), h.log()

    publish()
    sent = h.sent_images
    t_sent = time.monotonic() - t_start
    assert sent >= N_EXAMPLES + PRELUDE - 5  # hypothesis may stop a few short of max_examples on duplicates
    for pub in (h.pub_image, h.pub_depth, h.pub_info):
        from rclpy.duration import Duration

        pub.wait_for_all_acked(Duration(seconds=10.0))

    # wait until every image has been taken and every frame handled
    last: dict = {}

    def settled():
        nonlocal last
        last = h.counters()
        return int(last["images_in"]) == sent and last["frames_pending"] == "0" and \
            len(h.answers) == int(last["frames_processed"])

    assert h.spin_until(settled, 90), f"the node did not account for {sent} images: {last}\n{h.log()}"
    h.alive()
    c = {k: int(v) for k, v in last.items() if not k.startswith("_") and v.lstrip("-").isdigit()}
    rejected = {k: n for k, n in c.items() if k.startswith("rejected_")}
    outcomes = c["frames_inferred"] + sum(rejected.values()) + c["no_camera_info"] + c["failed"]

    # every image is accounted for exactly once
    assert c["images_in"] == sent and c["depth_in"] == h.sent_depth
    assert c["frames_rejected"] == sum(rejected.values())
    assert outcomes + c["dropped_stale"] + c["sync_unmatched"] + c["sync_pending"] == sent, c
    assert c["frames_in"] == outcomes + c["dropped_stale"]
    assert c["frames_processed"] == outcomes == len(h.answers)  # one answer per handled frame
    assert c.get("publish_failed", 0) == 0 and c["failed"] == 0, f"inference failed on fuzzed input:\n{h.log()}"
    assert c["no_camera_info"] >= 1

    # the fuzzer reached every input check (else the strategies are too narrow to mean much)
    for reason in ("bad_encoding", "bad_step", "empty_image", "bad_intrinsics", "size_mismatch",
                   "depth_size_mismatch", "depth_all_zero", "stamp_backwards"):
        assert rejected.get(f"rejected_{reason}", 0) > 0, f"no frame was rejected for {reason}: {c}"
    assert c["frames_inferred"] > 0 and c["depth_nonfinite_pixels"] > 0 and c["sync_unmatched"] > 0

    # everything published is valid, and answers the header of an image sent
    for msg in h.answers:
        check_answer(msg, h.headers)
    assert any(m.detections for m in h.answers), "the random net published nothing at threshold 0"

    print(f"\nfuzz: {sent} images ({h.sent_depth} depth, {h.sent_info} camera_info) sent in {t_sent:.1f} s, "
          f"settled after {time.monotonic() - t_start:.1f} s; {len(h.answers)} answers; "
          f"inferred {c['frames_inferred']}, rejected {c['frames_rejected']} {rejected}, "
          f"no_camera_info {c['no_camera_info']}, dropped_stale {c['dropped_stale']}, "
          f"sync_unmatched {c['sync_unmatched']}, sync_pending {c['sync_pending']}")

    # the node is alive and shuts down cleanly
    h.proc.send_signal(signal.SIGINT)
    assert h.proc.wait(timeout=30) == 0, h.log()
