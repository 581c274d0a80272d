"""The per-frame path every consumer shares (pose node, predict, compare, bench); ROS-free, see frame.py."""
from vfm_pose_ros.pipeline.frame import CameraFrame, FramePipeline, FrameResult, PipelineSettings
from vfm_pose_ros.pipeline.selection import Selection, select_poses

__all__ = ["CameraFrame", "FramePipeline", "FrameResult", "PipelineSettings", "Selection", "select_poses"]
