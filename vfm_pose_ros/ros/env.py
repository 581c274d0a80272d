"""ROS 2 environment set-up shared by the nodes, the tests and the `vfm-pose` command (no rclpy import).

Package file lookup lives in :mod:`vfm_pose_ros.paths` (every layer needs it) and is re-exported here.

Call :func:`configure_ros_env` before ``rclpy.init()``: DDS reads these variables when the first
participant is created. Variables the user set are left alone, so a robot's own DDS configuration wins.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..paths import PACKAGE_NAME, find_package_file, package_share_dir  # noqa: F401 - re-exported

FASTDDS_PROFILE = "config/fastdds.xml"


def configure_ros_env(domain_id: int | None = None) -> dict[str, str]:
    """Set the DDS environment this package expects, keeping anything the user already set.

    * ``FASTDDS_DEFAULT_PROFILES_FILE``: the package's config/fastdds.xml (16 MB shared memory,
      UDP on loopback only), without which sensor-data QoS images are mostly lost between processes.
    * ``RMW_IMPLEMENTATION``: rmw_fastrtps_cpp (the profile above is a Fast DDS profile).
    * ``ROS_AUTOMATIC_DISCOVERY_RANGE``: LOCALHOST (set SUBNET yourself to reach other machines).
    * ``OMP_WAIT_POLICY``: PASSIVE (idle inference threads sleep rather than spin on a shared CPU).
    * ``AMENT_PREFIX_PATH``: this Python environment's prefix, when it holds an ament index (ROS 2 from
      PyPI wheels, interface packages built into the venv) and nothing was sourced.
    * ``ROS_DOMAIN_ID``: set to ``domain_id`` when given (an explicit argument overrides the environment).

    Returns the values in effect for these variables afterwards (unset ones omitted).
    """
    if "FASTDDS_DEFAULT_PROFILES_FILE" not in os.environ:
        try:
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(find_package_file(FASTDDS_PROFILE))
        except FileNotFoundError:
            pass  # Fast DDS defaults then; `vfm-pose doctor` reports the missing profile.
    os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    # Idle OpenMP threads sleep instead of spinning: on a shared CPU spinning made the ViT-B/14 backbone
    # 2-3x slower (bench: 1050-1982 ms vs 612 ms). Takes effect when set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if not os.environ.get("AMENT_PREFIX_PATH") and (Path(sys.prefix) / "share" / "ament_index").is_dir():
        os.environ["AMENT_PREFIX_PATH"] = sys.prefix
    if domain_id is not None:
        if not 0 <= int(domain_id) <= 232:
            raise ValueError(f"ROS_DOMAIN_ID must be in 0..232 (0..101 on Linux is safest), got {domain_id}")
        os.environ["ROS_DOMAIN_ID"] = str(int(domain_id))
    keys = ("FASTDDS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID",
            "AMENT_PREFIX_PATH")
    return {k: os.environ[k] for k in keys if k in os.environ}


# RIHS01 type hashes of upstream ROS 2 vision_msgs 4.x and tf2_msgs (taken from their generated code), which
# the project's own interfaces/ definitions must reproduce so its messages interoperate with a real ROS 2 system.
UPSTREAM_TYPE_HASHES = {
    "vision_msgs/msg/BoundingBox2D": "RIHS01_008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "vision_msgs/msg/BoundingBox3D": "RIHS01_bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "vision_msgs/msg/Detection2D": "RIHS01_0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "vision_msgs/msg/Detection2DArray": "RIHS01_214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "vision_msgs/msg/Detection3D": "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "vision_msgs/msg/Detection3DArray": "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "vision_msgs/msg/LabelInfo": "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "vision_msgs/msg/ObjectHypothesis": "RIHS01_51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "vision_msgs/msg/ObjectHypothesisWithPose":
        "RIHS01_41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "vision_msgs/msg/Point2D": "RIHS01_eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "vision_msgs/msg/Pose2D": "RIHS01_b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "vision_msgs/msg/VisionClass": "RIHS01_1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "vision_msgs/msg/VisionInfo": "RIHS01_95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
    "tf2_msgs/msg/TF2Error": "RIHS01_db2485e7d6a0ec75bf087e058ee45df682acc3a621ca7780503d10aac141809a",
    "tf2_msgs/msg/TFMessage": "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
}


def installed_type_hash(type_name: str) -> str | None:
    """RIHS01 hash of an installed message type (``pkg/msg/Name``), read from the type description
    (``share/<pkg>/msg/<Name>.json``) that rosidl installs beside it; None when not found."""
    import json

    pkg, _, name = type_name.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        path = Path(prefix) / "share" / pkg / "msg" / f"{name}.json"
        if path.is_file():
            for entry in json.loads(path.read_text()).get("type_hashes", []):
                if entry.get("type_name") == type_name:
                    return entry.get("hash_string")
    return None
