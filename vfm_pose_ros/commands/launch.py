"""start the ROS graph (pose node, player, evaluator) without launch_ros

    vfm-pose launch pose checkpoint:=models/dinov2_small.pt prompt:="the driller"
    vfm-pose launch benchmark bag:=bags/scene0 checkpoint:=models/dinov2_small.pt output_dir:=out/bench

Starts the processes of vfm_pose_ros.ros.graph.graph_nodes (the list the launch files start)
as subprocesses with the package's DDS environment (config/fastdds.xml, loopback discovery
unless set otherwise). Ctrl-C (or SIGTERM) is forwarded to every process as SIGINT, and the
command waits for them to shut down cleanly (the evaluator writes its report then); a process
still running after --grace seconds is terminated. The benchmark graph stops by itself when
the player has sent the whole bag.

When a process dies (an exit status other than its normal ones, e.g. the pose node killed), the
graph is stopped, one line says which process died and how, and the exit status is its status
(128 + the signal number when a signal killed it); in the benchmark graph the evaluator's report
then says ``incomplete`` (frames played / frames in the bag) and counts the unplayed frames as
failures. A player that sent the whole bag but saw lockstep timeouts makes the exit status 3.
Otherwise the exit status is 0.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", nargs="?", default="pose", choices=("pose", "benchmark"),
                        help="pose (default) or benchmark")
    parser.add_argument("assignments", nargs="*", metavar="KEY:=VALUE",
                        help="launch arguments (see --show-args) or pose node parameters of config/pose.yaml")
    parser.add_argument("--show-args", action="store_true", help="list the launch arguments and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser.add_argument("--grace", type=float, default=15.0, metavar="S",
                        help="seconds to wait for a clean shutdown before terminating (default 15)")


def parse_assignments(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition(":=")
        if not sep or not key:
            raise ValueError(f"{item!r}: arguments are KEY:=VALUE (e.g. prompt:=\"the driller\")")
        out[key] = value
    return out


class Graph:
    """Running processes of a graph, with Ctrl-C forwarding and clean shutdown."""

    def __init__(self, specs, grace: float = 15.0, out=sys.stdout):
        self.specs = specs
        self.grace = grace
        self.out = out
        self.procs: list[tuple[object, subprocess.Popen]] = []
        self.stopping = False
        self.died: tuple[object, int] | None = None  # (spec, exit status) of the first process that died
        self.finished_with: dict[str, int] = {}  # node name -> a non-zero status it finished with (player timeouts)
        self.started_at = time.monotonic()
        self._tmp = tempfile.TemporaryDirectory(prefix="vfm_pose_launch_")

    def start(self) -> None:
        for spec in self.specs:
            params = None
            if spec.parameters:
                params = Path(self._tmp.name) / f"{spec.name}.yaml"
                params.write_text(spec.params_yaml())
            cmd = spec.command(params)
            if cmd is None:
                if spec.optional:
                    print(f"[launch] {spec.executable} not found: {spec.name} not started", file=self.out)
                    continue
                raise FileNotFoundError(f"{spec.executable} ({spec.package}) is not installed")
            # own session: a terminal's Ctrl-C reaches only us, and we forward it exactly once
            proc = subprocess.Popen(cmd, env=os.environ.copy(), start_new_session=True)
            print(f"[launch] started {spec.name} (pid {proc.pid})", file=self.out, flush=True)
            self.procs.append((spec, proc))

    def stop(self, *_):
        """Forward SIGINT to every running process (once)."""
        if self.stopping:
            return
        self.stopping = True
        for _spec, proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGINT)
                except ProcessLookupError:
                    pass

    def wait(self) -> int:
        """Run until Ctrl-C, a shutdown_on_exit process ending, or a process failing; returns the exit status."""
        status = 0
        finished: set[int] = set()
        while True:
            for spec, proc in self.procs:
                code = proc.poll()
                if code is None or proc.pid in finished:
                    continue
                finished.add(proc.pid)
                print(f"[launch] {spec.name} exited with status {code}", file=self.out, flush=True)
                normal = getattr(spec, "finished_statuses", (0,))
                ended = code in normal or code in (-signal.SIGINT, 130)
                if code and code in normal:
                    self.finished_with[spec.name] = code
                if not ended and not self.stopping:
                    self.died = self.died or (spec, code)
                    status = status or exit_status(code)
                    self.stop()
                elif spec.shutdown_on_exit and not self.stopping:
                    print(f"[launch] {spec.name} finished: shutting down the graph", file=self.out, flush=True)
                    self.stop()
            if len(finished) == len(self.procs):
                break
            if self.stopping:
                self._reap(finished)
                break
            time.sleep(0.1)
        self._tmp.cleanup()
        return status

    def death_line(self, graph: str) -> str | None:
        """One line saying which process died, how and when (None when none did)."""
        if self.died is None:
            return None
        spec, code = self.died
        how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.Signals._value2member_map_ \
            else f"exit status {code}"
        line = (f"{spec.name} died ({how}) {time.monotonic() - self.started_at:.0f} s after the start; the graph was "
                "stopped")
        if graph == "benchmark":
            line += ": the evaluator's report is incomplete (frames played / frames in the bag; unplayed frames " \
                    "count as failures)"
        return line

    def _reap(self, finished: set[int]) -> None:
        from ..ros.graph import terminate

        deadline = time.monotonic() + self.grace
        for spec, proc in self.procs:
            if proc.pid in finished:
                continue
            try:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                print(f"[launch] {spec.name} exited with status {code}", file=self.out, flush=True)
            except subprocess.TimeoutExpired:
                print(f"[launch] {spec.name} did not stop in {self.grace:g} s: terminating", file=self.out)
                terminate(proc)


def exit_status(code: int) -> int:
    """A child's status as a shell reports it: 128 + N for a process killed by signal N."""
    return 128 - code if code < 0 else code


def run(args: argparse.Namespace) -> int:
    from ..ros.env import configure_ros_env
    from ..ros.graph import graph_nodes, launch_arguments

    if args.show_args:
        for a in launch_arguments(args.graph):
            print(f"{a.name}:={a.default!r}\n    {a.description}")
        return 0
    try:
        specs = graph_nodes(parse_assignments(args.assignments), args.graph, strict=True)
    except (ValueError, FileNotFoundError) as exc:
        print(f"vfm-pose launch: {exc}", file=sys.stderr)
        return 2
    env = configure_ros_env()
    if args.dry_run:
        for k, v in env.items():
            print(f"export {k}={v}")
        for spec in specs:
            cmd = spec.command(f"<{spec.name}.yaml>")
            print(" ".join(cmd) if cmd else f"# {spec.executable} not installed: {spec.name} skipped")
            if spec.parameters:
                print("    " + spec.params_yaml().replace("\n", "\n    ").rstrip())
        return 0
    graph = Graph(specs, grace=args.grace)
    old = {s: signal.signal(s, graph.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        graph.start()
        status = graph.wait()
    except FileNotFoundError as exc:
        graph.stop()
        graph.wait()
        print(f"vfm-pose launch: {exc}", file=sys.stderr)
        return 1
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    died = graph.death_line(args.graph)
    if died:
        print(f"vfm-pose launch: {died}", file=sys.stderr, flush=True)
        return status
    if status == 0 and graph.finished_with:
        status = max(graph.finished_with.values())  # e.g. the player's lockstep timeouts (it said how many)
    print(f"[launch] done (status {status})")
    return status
