"""User errors end every vfm-pose command with one line (what is wrong, how to fix it) and status 2;
--debug shows the traceback instead."""
from __future__ import annotations

import pytest

from vfm_pose_ros import cli


def _one_line_error(capsys, argv, *words):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"vfm-pose {argv[0]}: ")
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_predict_missing_checkpoint(capsys, tmp_path):
    _one_line_error(capsys, ["predict", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset", str(tmp_path),
                             "--out", str(tmp_path / "r.csv"), "--quiet"], "checkpoint not found", "vfm-pose train")


def test_predict_without_checkpoint_or_backend(capsys, tmp_path):
    _one_line_error(capsys, ["predict", "--dataset", str(tmp_path), "--out", str(tmp_path / "r.csv"), "--quiet"],
                    "--checkpoint FILE", "--backend")


def test_predict_defaults_to_the_backends_shipped_checkpoint(capsys, tmp_path):
    """Without --checkpoint the shipped models/dinov2_small.pt loads (so the error is the missing dataset's)."""
    from vfm_pose_ros.commands.predict import checkpoint_path
    from vfm_pose_ros.paths import find_package_file

    assert checkpoint_path(None, "dinov2") == str(find_package_file("models/dinov2_small.pt"))
    assert checkpoint_path("mine.pt", "dinov2") == "mine.pt"
    _one_line_error(capsys, ["predict", "--backend", "dinov2", "--dataset", str(tmp_path / "nods"),
                             "--out", str(tmp_path / "r.csv"), "--quiet", "--device", "cpu"], "nods")


def test_predict_truncated_checkpoint(capsys, tmp_path, clip_checkpoint):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(clip_checkpoint.read_bytes()[:1000])
    _one_line_error(capsys, ["predict", "--checkpoint", str(cut), "--dataset", str(tmp_path),
                             "--out", str(tmp_path / "r.csv"), "--quiet", "--device", "cpu"], str(cut))


def test_predict_checkpoint_of_another_backend(capsys, tmp_path, clip_checkpoint):
    _one_line_error(capsys, ["predict", "--backend", "dinov2", "--checkpoint", str(clip_checkpoint), "--dataset",
                             str(tmp_path), "--out", str(tmp_path / "r.csv"), "--quiet", "--device", "cpu"],
                    "'clip' checkpoint")


def test_predict_missing_dataset(capsys, tmp_path, clip_checkpoint):
    _one_line_error(capsys, ["predict", "--checkpoint", str(clip_checkpoint), "--dataset", str(tmp_path / "nods"),
                             "--out", str(tmp_path / "r.csv"), "--quiet", "--device", "cpu"], "nods")


def test_predict_prompt_naming_nothing_is_refused_with_the_closest_candidates(capsys, tmp_path, clip_checkpoint):
    line = _one_line_error(capsys, ["predict", "--checkpoint", str(clip_checkpoint), "--dataset", str(tmp_path),
                                    "--prompt", "the banana", "--out", str(tmp_path / "r.csv"), "--quiet",
                                    "--device", "cpu"], "names nothing in the catalogue", "closest")
    assert "driller_like" in line and "can_like" in line


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="checkpoint not found"):
        cli.main(["--debug", "predict", "--checkpoint", str(tmp_path / "nope.pt"), "--dataset", str(tmp_path),
                  "--out", str(tmp_path / "r.csv")])


def test_eval_missing_dataset_is_status_2(capsys, tmp_path):
    _one_line_error(capsys, ["eval", "--dataset", str(tmp_path / "nope"), "--results", str(tmp_path / "x.csv")])
