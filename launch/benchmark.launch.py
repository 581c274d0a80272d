"""Benchmark replay: bag player (lockstep) -> pose node -> evaluator; ends when the bag has been sent.

    ros2 launch vfm_pose_ros benchmark.launch.py bag:=bags/scene0 checkpoint:=models/dinov2_small.pt \
        output_dir:=out/benchmark

The evaluator writes report.json (the keys of `vfm-pose eval`), frames.csv and report.md to
output_dir. The node list comes from vfm_pose_ros.ros.graph (shared with `vfm-pose launch
benchmark`); keep this file thin.
"""
from vfm_pose_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description("benchmark")
