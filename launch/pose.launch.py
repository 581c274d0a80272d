"""Pose estimation on a camera stream (or a replayed bag), optionally with the evaluator and RViz.

    ros2 launch vfm_pose_ros pose.launch.py checkpoint:=models/dinov2_small.pt prompt:="the driller"
    ros2 launch vfm_pose_ros pose.launch.py bag:=bags/scene0 lockstep:=true evaluate:=true rviz:=true

Arguments: `ros2 launch vfm_pose_ros pose.launch.py --show-args`. The node list, parameters and
arguments come from vfm_pose_ros.ros.graph (the same description `vfm-pose launch pose` starts
where launch_ros is not installed); keep this file thin.
"""
from vfm_pose_ros.ros.graph import launch_description


def generate_launch_description():
    return launch_description("pose")
