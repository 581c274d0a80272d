"""The CLIP-vs-DINOv2 comparison report (the paper's Table I and Figures 3 to 5).

* :mod:`vfm_pose_ros.report.tables`: the metrics report as a text or Markdown table.
* :mod:`vfm_pose_ros.report.figures`: matplotlib (Agg) and Open3D offscreen figures as PNG.
* :mod:`vfm_pose_ros.report.compare`: per-backend metrics through the core
  ``PoseEvaluator``, latency and throughput, and the report files
  (``results.json``, ``table.csv``, ``report.md``, ``report.html``).

Both import matplotlib and Open3D lazily-enough to stay out of the ROS nodes.
"""
