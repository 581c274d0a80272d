"""Running a node until Ctrl-C / SIGTERM without interrupting a callback half-way.

rclpy's own signal handler chains to Python's, which raises KeyboardInterrupt wherever the
main thread happens to be, e.g. in the middle of scoring a frame. The nodes here install a
flag-setting handler instead, finish the callback in progress, take the messages that have
already arrived (``drain_s``), and then shut down, so a report written on exit is complete.
"""
from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable

_stop = threading.Event()
_why = {"reason": ""}


def _on_signal(signum, _frame):
    _why["reason"] = signal.Signals(signum).name
    _stop.set()


def install_handlers() -> None:
    """From now on SIGINT/SIGTERM only record a stop request (see :mod:`.start`)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _on_signal)


def stop_requested() -> bool:
    """Whether a SIGINT/SIGTERM has arrived since :func:`install_handlers`."""
    return _stop.is_set()


def init(args: list[str] | None = None) -> None:
    """rclpy.init without rclpy's signal handlers; from now on SIGINT/SIGTERM only ask :func:`spin` to stop
    (a signal during start-up, e.g. while a model loads, is kept and honoured once spinning starts)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    install_handlers()
    rclpy.init(args=args if args is not None else sys.argv, signal_handler_options=SignalHandlerOptions.NO)


def spin(node, drain_s: float = 0.0, should_stop: Callable[[], bool] | None = None) -> str:
    """Spin ``node`` until SIGINT/SIGTERM, ``should_stop()`` or rclpy shutdown; returns why it stopped.

    Then keeps taking already-received work for ``drain_s`` seconds.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    stop, why = _stop, _why
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not stop.is_set() and node.context.ok():
            executor.spin_once(timeout_sec=0.1)
            if should_stop is not None and should_stop():
                why["reason"] = "finished"
                break
        end = time.monotonic() + drain_s
        while node.context.ok() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
    except ExternalShutdownException:
        why["reason"] = why["reason"] or "shutdown"
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)
    if not rclpy.ok(context=node.context):
        why["reason"] = why["reason"] or "shutdown"
    return why["reason"] or "stopped"


def shutdown(node=None) -> None:
    """Destroy ``node`` (when given) and shut rclpy down unless something else already did."""
    import rclpy

    if node is not None:
        node.destroy_node()
    if rclpy.ok():
        rclpy.shutdown()
