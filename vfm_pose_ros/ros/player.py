"""bag_player: replay a rosbag2 into ROS 2, with its recorded timing or in lockstep with a consumer.

Usage (also ``vfm-pose play``)::

    bag_player BAG [--rate R] [--loop] [--topics T ...] [--qos reliable|sensor]
    bag_player BAG --lockstep /vfm_pose/detections [--lockstep-timeout 10] [--summary out.json]

* Timed mode publishes every message at its recorded log time divided by ``--rate``.
* Lockstep mode (``--lockstep TOPIC``) sends one frame, then waits until a message on TOPIC
  answers it before sending the next, or until ``--lockstep-timeout`` passes (counted and
  reported). An answer with a ``header`` (e.g. the pose node's Detection3DArray, whose header
  is the image's) answers the frame with the same stamp; answers to other stamps are counted
  as late; an answer without a header answers whatever frame is out. TOPIC's type is
  discovered from the graph, or given with ``--lockstep-type pkg/msg/Type``.
* A frame is the run of messages sharing a header stamp (:func:`vfm_pose_ros.data.rosbag.frame_groups`);
  they go out together, camera_info and ground truth first, the image last.
* Messages are published as the bag's CDR bytes (rclpy's raw ``publish(bytes)``), so nothing
  is decoded or re-encoded; the rclpy message classes are needed only for type support.
* ``/tf_static`` is published reliable and transient-local (late subscribers still get it);
  other topics reliable (default, lossless) or best-effort sensor-data QoS (``--qos sensor``).
* Before the first frame the player waits for ``--wait-for-subscribers N`` subscribers on the
  image topic (default 1; ``--wait-topics`` adds others, e.g. the ground truth for the evaluator)
  for at most ``--wait-timeout`` seconds, so no frame is lost at start (in lockstep a missing
  subscriber is an error; a timed replay starts anyway, with a warning); ``--start-delay`` adds a
  pause after that (a consumer's warm-up).
* When done it publishes ``~/done`` (``/bag_player/done``, std_msgs/String, reliable and
  transient-local) holding the run summary as JSON, so downstream nodes (the evaluator) can
  finalize; it prints the summary (frames sent, answered, timeouts, wall time, fps) and writes
  it with ``--summary FILE``.

Stamps are replayed as recorded (with ``--loop`` they repeat each pass, as ``ros2 bag play`` does).

Exit status: 0 (every frame sent, and in lockstep answered), 1 (set-up error: no bag, no subscriber),
3 (:data:`LOCKSTEP_TIMEOUT_STATUS`: the bag was sent but some frames got no answer in lockstep),
130 (interrupted by SIGINT or SIGTERM: the player stops between frames, still publishes ``~/done``
and prints its summary).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

NODE_NAME = "bag_player"
LOCKSTEP_TIMEOUT_STATUS = 3  # exit status: replayed, but some frames were never answered in lockstep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 directory (or a .mcap/.db3 file)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback speed factor in timed mode (default 1; 0 = as fast as possible)")
    parser.add_argument("--loop", action="store_true", help="replay until interrupted")
    parser.add_argument("--lockstep", metavar="TOPIC", default=None,
                        help="send the next frame only after a message on TOPIC answers the current one")
    parser.add_argument("--lockstep-type", metavar="TYPE", default=None,
                        help="TOPIC's type (pkg/msg/Type); discovered from the graph when omitted")
    parser.add_argument("--lockstep-timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for an answer before sending the next frame (default 10)")
    parser.add_argument("--start-delay", type=float, default=0.0, metavar="S",
                        help="pause after subscribers are found, before the first frame")
    parser.add_argument("--topics", nargs="+", default=None, metavar="TOPIC", help="publish only these topics")
    parser.add_argument("--image-topic", default=None,
                        help="the topic that makes a frame (default /camera/color/image_raw)")
    parser.add_argument("--qos", choices=("reliable", "sensor"), default="reliable",
                        help="QoS of the data topics: reliable (default, lossless) or sensor (best effort)")
    parser.add_argument("--wait-for-subscribers", type=int, default=1, metavar="N",
                        help="subscribers to wait for on the image topic before the first frame (default 1; "
                             "0 = start at once). In lockstep, not finding them is an error; in timed mode the "
                             "replay starts anyway after --wait-timeout")
    parser.add_argument("--wait-topics", nargs="+", default=(), metavar="TOPIC",
                        help="also wait for one subscriber on each of these topics (e.g. /ground_truth/detections "
                             "for the evaluator)")
    parser.add_argument("--wait-timeout", type=float, default=30.0, metavar="S",
                        help="how long to wait for subscribers and the lockstep topic (default 30)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--summary", type=Path, default=None, metavar="FILE", help="write the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def message_class(msgtype: str):
    """The rclpy message class for ``pkg/msg/Name`` (or ``pkg/Name``), with an error that says what to install."""
    parts = msgtype.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ValueError(f"message type must look like pkg/msg/Name, got {msgtype!r}")
    pkg, sub, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{sub}"), name)
    except (ImportError, AttributeError) as exc:
        hint = (" (build the package's interfaces: see `vfm-pose doctor`)" if pkg in ("vision_msgs", "tf2_msgs")
                else f" (install ros-{pkg.replace('_', '-')} or source a ROS 2 install)")
        raise ImportError(f"message type {msgtype} is not importable: {exc}{hint}") from exc


def _answer_stamp(msg) -> int | None:
    header = getattr(msg, "header", None)
    stamp = getattr(header, "stamp", None) if header is not None else getattr(msg, "stamp", None)
    if stamp is None or not hasattr(stamp, "nanosec"):
        return None
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class _Lockstep:
    """Answers seen on the lockstep topic, matched to the frame currently out (thread-safe)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.current: int | None = None
        self.answered = False
        self.late = 0
        self.received = 0

    def expect(self, stamp: int) -> None:
        with self.cond:
            self.current, self.answered = stamp, False

    def on_message(self, msg) -> None:
        stamp = _answer_stamp(msg)
        with self.cond:
            self.received += 1
            if self.current is not None and not self.answered and (stamp is None or stamp == self.current):
                self.answered = True
                self.cond.notify_all()
            else:
                self.late += 1

    def wait(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.answered, timeout)


def _percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {}
    a = np.asarray(values_ms)
    return {"mean": round(float(a.mean()), 3), "p50": round(float(np.percentile(a, 50)), 3),
            "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}


def _selected_topics(args, bag: Path, info) -> tuple[str, dict]:
    """(image topic, {topic: type} to publish); a topic or lockstep setting the bag cannot serve is a ValueError."""
    from ..data.rosbag import TOPIC_IMAGE

    image_topic = args.image_topic or TOPIC_IMAGE
    topics = {t: typ for t, (typ, _) in info.topics.items() if args.topics is None or t in args.topics}
    if args.topics:
        missing = sorted(set(args.topics) - set(info.topics))
        if missing:
            raise ValueError(f"topics not in {bag}: {', '.join(missing)}; it has: {', '.join(sorted(info.topics))}")
    if args.lockstep is not None and image_topic not in topics:
        raise ValueError(f"lockstep needs the image topic {image_topic} in the bag (it has: {', '.join(topics)}); "
                         "set --image-topic")
    return image_topic, topics


def _own_node(rclpy_args: list[str] | None):
    """A player node of its own, rclpy initialised without its signal handlers (``_INTERRUPT`` handles them)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from .env import configure_ros_env

    configure_ros_env()
    _INTERRUPT.install()
    if not rclpy.ok():
        rclpy.init(args=rclpy_args, signal_handler_options=SignalHandlerOptions.NO)
    return rclpy.create_node(NODE_NAME)


def _publishers(node, topics: dict, args, latched, log) -> tuple[dict, dict]:
    """({topic: publisher}, {topic: why skipped}): a topic whose message type is not importable is skipped."""
    from rclpy.qos import QoSProfile, qos_profile_sensor_data

    from ..data.rosbag import TOPIC_TF_STATIC

    data_qos = qos_profile_sensor_data if args.qos == "sensor" else QoSProfile(depth=10)
    pubs, skipped = {}, {}
    for topic, msgtype in topics.items():
        try:
            cls = message_class(msgtype)
        except ImportError as exc:
            skipped[topic] = str(exc)
            log.warning(f"not publishing {topic}: {exc}")
            continue
        pubs[topic] = node.create_publisher(cls, topic, latched if topic == TOPIC_TF_STATIC else data_qos)
    return pubs, skipped


def _wait_then_replay(args, bag: Path, node, pubs: dict, image_topic: str, summary: dict, n_frames, log) -> None:
    """Wait for the answerer (lockstep) and the subscribers, then replay the bag."""
    ls = None
    if args.lockstep is not None:
        ls = _Lockstep()
        cls, qos = _lockstep_subscription(node, args)
        answers = node.create_subscription(cls, args.lockstep, ls.on_message, qos)
        _wait_for_answerer(answers, args.wait_timeout)
    n_wait = max(0, int(args.wait_for_subscribers))
    waits = {image_topic: n_wait} if n_wait > 0 and image_topic in pubs else {}
    for topic in args.wait_topics:
        if topic not in pubs:
            raise ValueError(f"--wait-topics {topic}: not a published topic of {bag} ({', '.join(pubs)})")
        waits[topic] = max(waits.get(topic, 0), 1)
    try:
        _wait_for_subscribers({pubs[t]: n for t, n in waits.items()}, args.wait_timeout)
    except TimeoutError as exc:
        if ls is not None:
            raise
        log.warning(f"{exc}; replaying anyway")
        summary["subscriber_wait_timed_out"] = True
    if args.start_delay > 0:
        time.sleep(args.start_delay)
    _replay(args, bag, pubs, ls, image_topic, summary, n_frames, log)


def _announce_done(node, pubs: dict, done_pub, summary: dict) -> None:
    """Publish the summary on ``~/done`` and let reliable subscribers receive everything before we leave."""
    from rclpy.duration import Duration
    from std_msgs.msg import String

    if not node.context.ok():
        return
    try:
        done_pub.publish(String(data=json.dumps(summary)))
        for pub in [*pubs.values(), done_pub]:
            pub.wait_for_all_acked(Duration(seconds=2.0))
    except KeyboardInterrupt:  # a graph that already has its report stops us while we flush: the replay is done
        summary["flush_interrupted"] = True


def play(args, node=None, rclpy_args: list[str] | None = None) -> dict:
    """Replay ``args.bag`` (options as in :func:`add_arguments`); returns the summary dict.

    Creates its own node (initialising rclpy with ``rclpy_args``) unless one is given.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    from ..data.rosbag import bag_info

    bag = Path(args.bag)
    if not bag.exists():
        raise FileNotFoundError(f"bag not found: {bag}")
    info = bag_info(bag)
    image_topic, topics = _selected_topics(args, bag, info)
    own = node is None
    if own:
        node = _own_node(rclpy_args)
    log = node.get_logger()
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs, skipped = _publishers(node, topics, args, latched, log)
    done_pub = node.create_publisher(String, "~/done", latched)
    summary: dict = {"bag": str(bag), "mode": "timed" if args.lockstep is None else "lockstep", "rate": args.rate,
                     "frames_sent": 0, "frames_answered": 0, "timeouts": 0, "timed_out_stamps": [],
                     "late_answers": 0, "messages_sent": 0, "loops": 0, "skipped_topics": skipped}
    try:
        _INTERRUPT.arm()
        _wait_then_replay(args, bag, node, pubs, image_topic, summary, info.frames, log)
    except KeyboardInterrupt:
        summary["interrupted"] = True
    finally:
        _INTERRUPT.disarm()
        summary["interrupted"] = summary.get("interrupted") or _INTERRUPT.pending
        summary["timed_out_stamps"] = summary["timed_out_stamps"][:1000]
        _announce_done(node, pubs, done_pub, summary)
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)  # no spinning thread may outlive the node (aborts the process at exit)
        if own:
            node.destroy_node()
            if rclpy.ok():
                rclpy.shutdown()
    return summary


class _Interrupt:
    """SIGINT / SIGTERM stop the replay (KeyboardInterrupt in the main thread) only while it is armed: one
    during start-up is held until the replay begins, which then stops at once; one while the player
    publishes ~/done and flushes lets it finish; later signals are ignored. rclpy's own handler would
    instead shut the context down under the spinning thread (a traceback) and leave the replay running."""

    def __init__(self):
        self.armed = self.pending = False

    def install(self) -> None:
        import signal

        from . import spin

        self.pending = self.pending or spin.stop_requested()  # arrived while importing (ros.start held it)
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, self._on_signal)

    def _on_signal(self, _signum, _frame):
        import signal

        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        self.pending = True
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt

    def arm(self) -> None:
        self.armed = True
        if self.pending:
            self.armed = False
            raise KeyboardInterrupt

    def disarm(self) -> None:
        self.armed = False


_INTERRUPT = _Interrupt()


def _lockstep_subscription(node, args):
    """The lockstep topic's class and a QoS that matches its publishers (best effort if any of them is)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    deadline = time.monotonic() + args.wait_timeout
    msgtype = args.lockstep_type
    best_effort = False
    while True:
        infos = node.get_publishers_info_by_topic(args.lockstep)
        if infos:
            msgtype = msgtype or infos[0].topic_type
            best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
            break
        if msgtype and time.monotonic() > deadline:
            break  # type given: subscribe anyway, the answerer may come later
        if time.monotonic() > deadline:
            raise TimeoutError(f"no publisher on the lockstep topic {args.lockstep} after {args.wait_timeout:.0f} s "
                               "(is the pose node running? or give --lockstep-type to subscribe anyway)")
        time.sleep(0.05)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE)
    return message_class(msgtype), qos


def _wait_for_answerer(sub, timeout: float, grace: float = 0.25) -> None:
    """Wait until the lockstep subscription has matched a publisher, plus a grace period.

    Matching is per side: our reader may know the answerer's writer a moment before that
    writer knows our reader, and an answer sent in between is lost (a spurious first-frame
    timeout). The grace period covers that; no answerer at all is left to the timeouts.
    """
    deadline = time.monotonic() + timeout
    while sub.get_publisher_count() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    if sub.get_publisher_count() >= 1:
        time.sleep(grace)


def _wait_for_subscribers(wanted: dict, timeout: float) -> None:
    """Block until each publisher has matched its number of subscribers (so no frame is lost at start)."""
    deadline = time.monotonic() + timeout
    for pub, n in wanted.items():
        while pub.get_subscription_count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pub.get_subscription_count()} of {n} subscriber(s) on {pub.topic_name} after "
                                   f"{timeout:.0f} s: start the consumer (pose node, evaluator) first, or lower "
                                   "--wait-for-subscribers / drop --wait-topics")
            time.sleep(0.02)


def _replay(args, bag, pubs, ls, image_topic, summary, n_frames, log) -> None:
    """The publishing loop; fills ``summary``."""
    from tqdm import tqdm

    from ..data.rosbag import frame_groups, iter_messages

    latencies: list[float] = []
    problems: list[str] = []
    t_start = time.monotonic()
    loop_offset = 0.0
    bar = tqdm(total=n_frames if not args.loop else None, unit="frame", desc="play", disable=args.quiet)
    try:
        while True:
            first_ts = None
            for stamp, group in frame_groups(iter_messages(bag, topics=list(pubs), on_problem=problems.append),
                                             image_topic):
                ts = group[0].timestamp
                first_ts = ts if first_ts is None else first_ts
                if ls is None and args.rate > 0:  # timed: sleep until the recorded time
                    due = t_start + loop_offset + (ts - first_ts) / 1e9 / args.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                is_frame = any(m.topic == image_topic for m in group)
                if is_frame and ls is not None:
                    ls.expect(stamp)
                for m in group:
                    pubs[m.topic].publish(m.data)
                summary["messages_sent"] += len(group)
                if not is_frame:
                    continue
                summary["frames_sent"] += 1
                bar.update(1)
                if ls is not None:
                    t0 = time.monotonic()
                    if ls.wait(args.lockstep_timeout):
                        summary["frames_answered"] += 1
                        latencies.append((time.monotonic() - t0) * 1e3)
                    else:
                        summary["timeouts"] += 1
                        summary["timed_out_stamps"].append(stamp)
                        log.warning(f"no answer on {args.lockstep} for frame {stamp} within "
                                    f"{args.lockstep_timeout:g} s; sending the next")
                if args.max_frames is not None and summary["frames_sent"] >= args.max_frames:
                    break
            summary["loops"] += 1
            if first_ts is None:
                raise ValueError(f"{bag} holds no messages on the published topics")
            if not args.loop or (args.max_frames is not None and summary["frames_sent"] >= args.max_frames):
                break
            loop_offset = time.monotonic() - t_start  # the next pass starts now
    finally:
        bar.close()
        wall = time.monotonic() - t_start
        summary["wall_s"] = round(wall, 3)
        summary["fps"] = round(summary["frames_sent"] / wall, 2) if wall > 0 else 0.0
        if ls is not None:
            summary["late_answers"] = ls.late
            summary["answer_latency_ms"] = _percentiles(latencies)
        if problems:
            summary["bag_problems"] = problems


def format_summary(s: dict) -> str:
    lines = [f"played {s['bag']} ({s['mode']}): {s['frames_sent']} frames, {s['messages_sent']} messages "
             f"in {s.get('wall_s', 0):.2f} s ({s.get('fps', 0):.1f} frames/s)"]
    if s["mode"] == "lockstep":
        lat = s.get("answer_latency_ms") or {}
        lines.append(f"  answered {s['frames_answered']}, timeouts {s['timeouts']}, late answers {s['late_answers']}"
                     + (f"; answer latency mean {lat['mean']:.1f} ms, p95 {lat['p95']:.1f} ms" if lat else ""))
        if s["timeouts"]:
            lines.append(f"  timed-out frame stamps (ns): {s['timed_out_stamps'][:10]}")
    for topic, why in s.get("skipped_topics", {}).items():
        lines.append(f"  NOT published {topic}: {why}")
    for p in s.get("bag_problems", []):
        lines.append(f"  bag problem: {p}")
    if s.get("interrupted"):
        lines.append("  interrupted")
    return "\n".join(lines)


def run(args, rclpy_args: list[str] | None = None) -> int:
    """Play and report; the exit status of the module docstring."""
    from rosbags.rosbag2 import ReaderError

    try:
        summary = play(args, rclpy_args=rclpy_args)
    except (FileNotFoundError, ValueError, TimeoutError, ImportError, ReaderError) as exc:
        print(f"bag_player: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2))
        print(f"summary written to {args.summary}")
    if summary.get("interrupted"):
        return 130
    if summary["timeouts"]:
        print(f"bag_player: {summary['timeouts']} of {summary['frames_sent']} frames got no answer on {args.lockstep} "
              f"within {args.lockstep_timeout:g} s (lockstep timeouts; exit status {LOCKSTEP_TIMEOUT_STATUS})",
              file=sys.stderr)
        return LOCKSTEP_TIMEOUT_STATUS
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``bag_player`` (ROS arguments such as ``--ros-args -r ...`` are accepted)."""
    try:
        from rclpy.utilities import remove_ros_args

        argv = list(sys.argv if argv is None else argv)
        parser = argparse.ArgumentParser(prog="bag_player", description=__doc__.splitlines()[0])
        add_arguments(parser)
        args = parser.parse_args(remove_ros_args(argv)[1:])
        return run(args, rclpy_args=argv)
    except KeyboardInterrupt:  # SIGINT before play() handles it (still importing: the launcher stopping the graph)
        print("bag_player: interrupted while starting; nothing played", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
