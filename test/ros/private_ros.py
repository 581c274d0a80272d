"""A test's own rclpy context, node and executor, so a test process can talk to the node under test and shut its
side down without touching rclpy's global context."""
from __future__ import annotations


def private_node(name: str):
    """(context, node, executor) with the node added to the executor."""
    import rclpy
    import rclpy.executors

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(name, context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    return ctx, node, executor


def close_private_node(ctx, node, executor) -> None:
    import rclpy

    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def stop_process(proc, timeout_s: float = 30.0) -> None:
    """SIGINT a node process (its clean shutdown path), then kill it if it has not ended after ``timeout_s``."""
    import signal
    import subprocess

    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
