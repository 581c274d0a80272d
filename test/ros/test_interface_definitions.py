"""The project's interface packages reproduce upstream ROS 2 vision_msgs 4.x and tf2_msgs exactly.

RIHS01 type hashes cover every field name, type and order (recursively), so equal hashes mean a real
ROS 2 system accepts our messages and we accept its.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vfm_pose_ros.ros.env import UPSTREAM_TYPE_HASHES, installed_type_hash

INTERFACES = Path(__file__).resolve().parents[2] / "interfaces"


def test_msg_files_hash_like_upstream():
    """Hashes computed from our .msg text (rosbags implements REP-2011 hashing) equal upstream's."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)  # provides std_msgs/geometry_msgs as in ROS 2
    types = {}
    for pkg in ("vision_msgs", "tf2_msgs"):
        for msg in sorted((INTERFACES / pkg / "msg").glob("*.msg")):
            types.update(get_types_from_msg(msg.read_text(), f"{pkg}/msg/{msg.stem}"))
    store.register(types)
    assert sorted(types) == sorted(UPSTREAM_TYPE_HASHES), "message set differs from the upstream table"
    computed = {name: store.hash_rihs01(name) for name in types}
    assert computed == UPSTREAM_TYPE_HASHES


def test_msg_files_are_all_built():
    """Every .msg file is listed in its package's CMakeLists.txt (an unlisted one would silently not exist)."""
    for pkg in ("vision_msgs", "tf2_msgs"):
        cmake = (INTERFACES / pkg / "CMakeLists.txt").read_text()
        for msg in (INTERFACES / pkg / "msg").glob("*.msg"):
            assert f'"msg/{msg.name}"' in cmake, f"{pkg}: {msg.name} missing from CMakeLists.txt"


@pytest.mark.parametrize("type_name", sorted(UPSTREAM_TYPE_HASHES))
def test_installed_interfaces_hash_like_upstream(type_name):
    """The vision_msgs / tf2_msgs this environment imports (ours built by `make setup`, or a ROS 2 install's)
    carry upstream's type hashes."""
    installed = installed_type_hash(type_name)
    if installed is None:
        if os.environ.get("VFM_REQUIRE_ROS") == "1":
            pytest.fail(f"{type_name} is not installed: run `make setup` (scripts/build_interfaces.sh)")
        pytest.skip(f"{type_name} not installed (run `make setup`)")
    assert installed == UPSTREAM_TYPE_HASHES[type_name]
