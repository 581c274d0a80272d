"""vfm_pose_ros.ros.env: DDS environment defaults that respect the user, and package file lookup."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import vfm_pose_ros
from vfm_pose_ros.ros import env

REPO = Path(__file__).resolve().parents[2]
VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")


def test_defaults_when_unset(monkeypatch):
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    result = env.configure_ros_env()
    assert result["FASTDDS_DEFAULT_PROFILES_FILE"] == str(REPO / "config" / "fastdds.xml")
    assert result["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    assert result["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert "ROS_DOMAIN_ID" not in result


def test_user_settings_win_but_explicit_domain_overrides(monkeypatch):
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/etc/robot/dds.xml")
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_cyclonedds_cpp")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    monkeypatch.setenv("ROS_DOMAIN_ID", "7")
    result = env.configure_ros_env(domain_id=42)
    assert result["FASTDDS_DEFAULT_PROFILES_FILE"] == "/etc/robot/dds.xml"
    assert result["RMW_IMPLEMENTATION"] == "rmw_cyclonedds_cpp"
    assert result["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    assert result["ROS_DOMAIN_ID"] == "42"
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID"):
        env.configure_ros_env(domain_id=300)


def test_find_package_file(monkeypatch):
    assert env.find_package_file("config/fastdds.xml") == REPO / "config" / "fastdds.xml"
    with pytest.raises(FileNotFoundError, match="no/such.file.*searched"):
        env.find_package_file("no/such.file")
    # Installed layout (colcon): not in the source tree, found in the ament share directory instead.
    from vfm_pose_ros import paths

    share = REPO / "config"
    monkeypatch.setattr(paths, "SOURCE_ROOT", Path("/nonexistent"))
    monkeypatch.setattr(paths, "package_share_dir", lambda: share.parent)
    assert env.find_package_file("config/fastdds.xml") == share / "fastdds.xml"


def test_fastdds_profile_is_the_default_shm_plus_loopback_profile():
    import xml.etree.ElementTree as ET

    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(REPO / "config" / "fastdds.xml").getroot()
    shm = root.find(".//d:transport_descriptor[d:type='SHM']", ns)
    udp = root.find(".//d:transport_descriptor[d:type='UDPv4']", ns)
    assert int(shm.find("d:segment_size", ns).text) >= 16 * 1024 * 1024
    assert [a.text for a in udp.findall("d:interfaceWhiteList/d:address", ns)] == ["127.0.0.1"]
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.find("d:rtps/d:useBuiltinTransports", ns).text == "false"
    used = {t.text for t in participant.findall("d:rtps/d:userTransports/d:transport_id", ns)}
    assert used == {shm.find("d:transport_id", ns).text, udp.find("d:transport_id", ns).text}


def test_package_xml_version_matches_python_package():
    version = re.search(r"<version>([^<]+)</version>", (REPO / "package.xml").read_text()).group(1)
    assert version == vfm_pose_ros.__version__
