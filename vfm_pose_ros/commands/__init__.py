"""Subcommands of the `vfm-pose` command, one module each (see vfm_pose_ros/cli.py)."""
