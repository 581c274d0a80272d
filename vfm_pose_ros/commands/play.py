"""replay a rosbag2 into ROS (recorded timing, or lockstep with the pose node)

    vfm-pose play BAG [--rate R] [--loop] [--lockstep TOPIC] [--lockstep-timeout S]
                      [--start-delay S] [--topics ...] [--qos sensor|reliable] [--summary FILE]

The same node as the `bag_player` entry point; see vfm_pose_ros/ros/player.py for the details
(frame grouping, QoS, the ~/done topic, the summary).
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..ros.player import add_arguments as player_arguments  # no rclpy import at this point

    player_arguments(parser)


def run(args) -> int:
    from ..ros.player import run as play

    return play(args)
