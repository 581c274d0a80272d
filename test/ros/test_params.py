"""One parameter table per node (vfm_pose_ros.ros.params), checked the same way at start and at run time.

A bad value at start ends the node with one line naming the parameter and its range, before any
model is loaded (the checkpoint in these start-up tests does not even exist); the same value set
while the node runs is refused with the same text.
"""
from __future__ import annotations

import pytest

from vfm_pose_ros.ros.graph import graph_nodes, load_pose_defaults
from vfm_pose_ros.ros.params import EVALUATOR_PARAMS, POSE_PARAMS, check_value, check_values

BAD = [("sync_tolerance_ms", -5.0, "[0, 10000]"), ("score_threshold", -1.0, "[0, 1]"),
       ("diagnostics_period_s", -1.0, "(0, 3600]"), ("queue_size", 0, "[1, 1000]"), ("backend", "yolo", "one of"),
       ("grasp_frames", "some", "one of"), ("min_distance_m", -0.1, "[0, 1000]"),
       ("depth_tolerance_m", -1.0, "[0, 100]")]


def test_the_table_and_config_pose_yaml_name_the_same_parameters():
    defaults = load_pose_defaults()
    assert set(defaults) == set(POSE_PARAMS)
    assert check_values(POSE_PARAMS, defaults) == []
    for name, value in defaults.items():
        assert isinstance(value, POSE_PARAMS[name].type), name
        assert POSE_PARAMS[name].description
    assert check_values(EVALUATOR_PARAMS, {n: p.default for n, p in EVALUATOR_PARAMS.items()}) == []


@pytest.mark.parametrize("name, value, words", BAD)
def test_a_bad_value_is_refused_alike_at_start_and_at_run_time(name, value, words):
    defaults = load_pose_defaults()
    at_start = check_values(POSE_PARAMS, {**defaults, name: value})
    at_run = check_value(POSE_PARAMS, name, value, defaults)
    assert at_start == [at_run] and name in at_run and words in at_run and "\n" not in at_run


def test_the_working_range_must_not_be_empty():
    d = load_pose_defaults()
    assert "min_distance_m" in check_value(POSE_PARAMS, "min_distance_m", 6.0, d)
    assert check_value(POSE_PARAMS, "max_distance_m", 0.0, {**d, "min_distance_m": 6.0}) is None  # 0 = no maximum


def test_launch_refuses_a_bad_pose_parameter_before_starting_anything():
    with pytest.raises(ValueError, match=r"sync_tolerance_ms.*\[0, 10000\]"):
        graph_nodes({"sync_tolerance_ms": "-5"}, "pose")


@pytest.mark.ros
@pytest.mark.parametrize("module, args, name", [
    ("vfm_pose_ros.ros.pose_node", ["-p", "diagnostics_period_s:=-1.0"], "diagnostics_period_s"),
    ("vfm_pose_ros.ros.pose_node", ["-p", "sync_tolerance_ms:=-5.0"], "sync_tolerance_ms"),
    ("vfm_pose_ros.ros.pose_node", ["-p", "score_threshold:=-1.0"], "score_threshold"),
    ("vfm_pose_ros.ros.pose_node", ["-p", "score_threshold:=1"], "score_threshold"),  # an integer: wrong type
    ("vfm_pose_ros.ros.evaluator_node", ["-p", "summary_period_s:=-1.0"], "summary_period_s"),
    ("vfm_pose_ros.ros.evaluator_node", ["-p", "match_timeout_s:=0.0"], "match_timeout_s"),
])
def test_a_bad_value_at_start_exits_with_one_line(spawn_python, tmp_path, module, args, name):
    proc = spawn_python("-m", module, "--ros-args", "-p", f"checkpoint:={tmp_path / 'not_there.pt'}", *args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert name in lines[0] and "must be" in lines[0] and "checkpoint" not in lines[0]


def test_config_pose_yaml_marks_exactly_the_dynamic_parameters():
    """A parameter's comment in config/pose.yaml (or its section's header) says "(dynamic)" exactly when the
    table lets it change while the node runs."""
    import re

    from vfm_pose_ros.paths import SOURCE_ROOT

    section_dynamic, marked = False, {}
    for line in (SOURCE_ROOT / "config" / "pose.yaml").read_text().splitlines():
        if re.match(r"\s*# ---", line):
            section_dynamic = "(dynamic)" in line
        elif m := re.match(r"\s+(\w+):\s*[^#\s][^#]*(#.*)?$", line):
            if m.group(1) in POSE_PARAMS:
                marked[m.group(1)] = section_dynamic or "(dynamic" in (m.group(2) or "")
    assert set(marked) == set(POSE_PARAMS)
    assert {n for n, d in marked.items() if d} == {n for n, p in POSE_PARAMS.items() if p.dynamic}
