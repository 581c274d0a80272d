"""The benchmark harness behind ``vfm-pose bench`` / ``make bench`` (issues 9 and 10).

Measures, in one run, with warm-up and medians of repeats: each stage between an Image message
and published results for each backend, the backbone alone at the same input and precision (so
the end-to-end / backbone ratio comes from one run), fp32 against bf16 (CPU) or fp16 (CUDA),
latency and lockstep throughput through ROS with the pose node in its own process, the pose
node's peak RSS, VGA transport, the evaluator's and the renderer's throughput, and a soak run of
the whole graph (RSS growth, lost frames). Modules:

* :mod:`.common` statistics, machine facts, process memory, sections, synthetic test frames;
* :mod:`.pipeline` in-process stages and the backbone alone (torch);
* :mod:`.rosgraph` measurements through ROS 2 in separate processes (rclpy);
* :mod:`.throughput` evaluator and renderer;
* :mod:`.runner` the run, the printed tables, the targets and the JSON file.
"""
from __future__ import annotations

from .runner import SECTIONS, BenchOptions, format_tables, run_bench, targets

__all__ = ["SECTIONS", "BenchOptions", "format_tables", "run_bench", "targets"]
