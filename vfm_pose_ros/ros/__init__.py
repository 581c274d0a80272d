"""ROS 2 edge of the package: nodes, message conversion, launch helpers. The only layer that imports rclpy.

Importing this package itself does not import rclpy: ``vfm_pose_ros.ros.env`` (environment set-up and
package file lookup) is used by the CLI and tests before any ROS 2 context exists.
"""
from vfm_pose_ros.ros.env import configure_ros_env, find_package_file, package_share_dir

__all__ = ["configure_ros_env", "find_package_file", "package_share_dir"]
