"""`vfm-pose train` then `vfm-pose predict` on a tiny synthetic BOP dataset; results read back as BOP CSV."""
import json

import numpy as np
import pytest
import yaml

from vfm_pose_ros import cli
from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.types import ObjectPose
from vfm_pose_ros.data.bop import BopDataset, read_results_csv
from vfm_pose_ros.paths import default_catalogue_dir

TINY = {
    "backend": "dinov2", "base": "small",
    "arch_overrides": {"embed_dim": 48, "depth": 2, "num_heads": 2, "init_values": None},
    "img_size": 56, "head_channels": 16, "detail_channels": [8, 16], "vote_hypotheses": 32, "icp_starts": 1,
    "train": {"batch_size": 4, "lr": 1e-3, "val_frames": 1},
}


@pytest.fixture(scope="module")
def tiny_bop(tmp_path_factory):
    from vfm_pose_ros.data.scenes import LMO_K, SceneConfig, SceneGenerator, write_split

    root = tmp_path_factory.mktemp("bop")
    cat = Catalogue.from_dir(default_catalogue_dir())
    K = LMO_K.copy()
    K[:2] *= 0.25
    gen = SceneGenerator(list(cat), SceneConfig(width=160, height=120, K=K, distance=(0.5, 0.8), distractors=0,
                                                min_visib_pixels=20), seed=2)
    write_split(gen, root, "train", 4, 0, progress=False)
    write_split(gen, root, "test", 2, 1, progress=False)
    return root


def test_train_then_predict(tmp_path, tiny_bop):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    ckpt = tmp_path / "m.pt"
    rc = cli.main(["train", "--backend", "dinov2", "--config", str(cfg), "--dataset", str(tiny_bop),
                   "--val-dataset", str(tiny_bop), "--val-split", "test", "--objects", "driller_like,can_like",
                   "--epochs", "1", "--out", str(ckpt), "--quiet"])
    assert rc == 0 and ckpt.is_file()
    summary = json.loads(ckpt.with_name("m.pt.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] == 2 and summary["val"]["n_gt"] == 2

    out = tmp_path / "res.csv"
    rc = cli.main(["predict", "--backend", "dinov2", "--checkpoint", str(ckpt), "--dataset", str(tiny_bop),
                   "--split", "test", "--out", str(out), "--quiet"])
    assert rc == 0 and out.is_file()
    rows = read_results_csv(out)  # an untrained net may find nothing; the file must still be valid BOP
    assert all(r.obj_id in (1, 2) for r in rows)


def test_train_config_errors(tmp_path, tiny_bop, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"epoch": 3}}))
    assert cli.main(["train", "--backend", "dinov2", "--config", str(bad), "--dataset", str(tiny_bop),
                     "--epochs", "1", "--out", str(tmp_path / "x.pt")]) == 2
    assert "unknown keys" in capsys.readouterr().err
    assert cli.main(["train", "--backend", "dinov2", "--config", str(tmp_path / "none.yaml"), "--dataset",
                     str(tiny_bop), "--out", str(tmp_path / "x.pt")]) == 2
    assert "config file not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown keys"):  # --debug: the exception itself
        cli.main(["--debug", "train", "--backend", "dinov2", "--config", str(bad), "--dataset", str(tiny_bop),
                  "--epochs", "1", "--out", str(tmp_path / "x.pt")])


class _GroundTruthEstimator:
    """Stands in for a trained model: returns each frame's ground truth (looked up by image content)."""

    backend, device, precision = "dinov2", "cpu", "fp32"

    def __init__(self, root):
        self.catalogue = Catalogue.from_dir(default_catalogue_dir())
        ds = BopDataset(root, "test", catalogue=self.catalogue)
        self.gt = {hash(sf.rgb.tobytes()): sf.gts for sf in ds}

    def predict(self, frame):
        return [ObjectPose(g.name, g.R, g.t, score=0.9, timings_ms={"total": 1.0})
                for g in self.gt[hash(frame.rgb.tobytes())]]


def test_predict_writes_bop_results(tmp_path, tiny_bop, monkeypatch):
    """Names map to BOP obj_ids, metres to millimetres: the CSV scores perfectly with `vfm-pose eval`."""
    import vfm_pose_ros.models as models

    monkeypatch.setattr(models, "load_estimator", lambda *a, **k: _GroundTruthEstimator(tiny_bop))
    out = tmp_path / "gt.csv"
    assert cli.main(["predict", "--checkpoint", "unused.pt", "--dataset", str(tiny_bop), "--out", str(out),
                     "--quiet"]) == 0
    rows = read_results_csv(out)
    ds = BopDataset(tiny_bop, "test", catalogue=Catalogue.from_dir(default_catalogue_dir()))
    assert len(rows) == sum(len(sf.gts) for sf in ds)
    for r in rows:
        g = next(g for g in ds.frame(r.scene_id, r.im_id).gts if g.obj_id == r.obj_id)
        assert np.allclose(r.R, g.R, atol=1e-9) and np.allclose(r.t, g.t, atol=1e-9)
    if "eval" in cli.COMMANDS:
        report = tmp_path / "report.json"
        assert cli.main(["eval", "--dataset", str(tiny_bop), "--results", str(out), "--objects-dir",
                         str(default_catalogue_dir()), "--out", str(report), "--quiet"]) == 0
        assert json.loads(report.read_text())["overall"]["add_s_01d_acc"] == 1.0


class _PromptedGroundTruthEstimator(_GroundTruthEstimator):
    """Ground truth again, now following the prompt the way a working CLIP backend must: the named object
    first, with the named grasp frame; ``obey=False`` ignores the prompt (the first object always)."""

    backend = "clip"

    def __init__(self, root, obey: bool = True):
        super().__init__(root)
        self.obey = obey

    def predict(self, frame):
        from vfm_pose_ros.models.clip_data import canonical_prompt

        poses = super().predict(frame)
        if not self.obey or not frame.prompt:
            return poses
        for p in poses:
            obj = self.catalogue[p.name]
            for part in [None, *obj.grasp_frames]:
                if frame.prompt == canonical_prompt(obj, part):
                    p.grasp_frame = part
                    return [p] + [q for q in poses if q is not p]
        return poses


@pytest.mark.parametrize("obey", [True, False])
def test_predict_prompt_check(tmp_path, tiny_bop, monkeypatch, obey):
    """--prompt-check scores prompt selection: perfect for an estimator that follows prompts, half right for one
    that always returns the same object first."""
    import vfm_pose_ros.models as models

    monkeypatch.setattr(models, "load_estimator", lambda *a, **k: _PromptedGroundTruthEstimator(tiny_bop, obey))
    out = tmp_path / "gt.csv"
    assert cli.main(["predict", "--checkpoint", "unused.pt", "--dataset", str(tiny_bop), "--out", str(out),
                     "--prompt-check", "--quiet"]) == 0
    rep = json.loads(out.with_suffix(".prompts.json").read_text())
    assert rep["prompts"] >= 2 and rep["grasp_checks"] >= 1
    if obey:
        assert rep["name_acc"] == rep["selection_acc"] == rep["grasp_frames_all_right"] == 1.0
    else:
        assert rep["name_acc"] == rep["selection_acc"] == 0.5 and rep["grasp_frames_all_right"] == 0.0
