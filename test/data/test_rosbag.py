"""BOP dataset -> rosbag2 -> frames: identical images, intrinsics and ground truth; truncated bags read to the cut."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue, ObjectModel
from vfm_pose_ros.core.transforms import axis_angle_to_matrix, quat_to_matrix
from vfm_pose_ros.core.types import GroundTruthPose
from vfm_pose_ros.data import messages
from vfm_pose_ros.data import rosbag as rb
from vfm_pose_ros.data.bop import BopDataset, BopWriter, write_models_info

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("cv2")

H, W = 48, 64
K = np.array([[60.0, 0.0, 31.5], [0.0, 61.0, 24.5], [0.0, 0.0, 1.0]])
# (scene_id, im_id) of the tiny test split: two scenes, five frames
KEYS = [(1, 0), (1, 1), (1, 2), (2, 0), (2, 5)]


def _catalogue() -> Catalogue:
    """Two box objects whose model boxes are off-centre, so box centre and object origin differ."""
    objs = []
    for cid, name, ext, shift in ((1, "driller_like", (0.05, 0.1, 0.2), (0.0, 0.01, 0.03)),
                                  (2, "can_like", (0.06, 0.06, 0.1), (0.0, 0.0, 0.05))):
        box = trimesh.creation.box(extents=ext)
        objs.append(ObjectModel(name, cid, np.asarray(box.vertices) + shift, faces=np.asarray(box.faces)))
    return Catalogue(objs)


def _gts(rng) -> list[GroundTruthPose]:
    gts = []
    for obj_id, name in ((1, "driller_like"), (2, "can_like"), (1, "driller_like")):  # 2 instances of object 1
        R = axis_angle_to_matrix(rng.normal(size=3))
        t = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.5, 1.0)])
        gts.append(GroundTruthPose(obj_id, name, R, np.round(t, 6), visib_fract=float(rng.uniform(0.2, 1.0))))
    return gts


@pytest.fixture(scope="module")
def bop(tmp_path_factory) -> Path:
    """A tiny BOP test split written with BopWriter: random images, depth (mm-exact), 2 objects, 3 instances."""
    root = tmp_path_factory.mktemp("bop")
    cat = _catalogue()
    write_models_info(root / "models", cat)
    rng = np.random.default_rng(7)
    with BopWriter(root, "test", K_default=K, catalogue=cat) as writer:
        for sid, iid in KEYS:
            rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            depth = rng.integers(300, 3000, (H, W)).astype(np.float32) / 1000.0  # whole millimetres
            depth[0, :5] = 0.0  # no measurement
            writer.add_frame(sid, iid, rgb, depth, K, _gts(rng), depth_scale=1.0)
    return root


def _storage_file(bag: Path) -> Path:
    files = [*bag.glob("*.mcap"), *bag.glob("*.db3")]
    assert len(files) == 1
    return files[0]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_identical_frames(bop, tmp_path, storage):
    ds = BopDataset(bop, "test")
    summary = rb.write_bag(ds, tmp_path / "bag", storage=storage, fps=30, progress=False)
    assert summary.frames == len(KEYS) and summary.messages == 1 + 4 * len(KEYS)
    assert summary.bytes > len(KEYS) * H * W * 5  # rgb + 16-bit depth per frame

    frames = list(rb.read_bag(tmp_path / "bag"))
    assert [(f.scene_id, f.im_id) for f in frames] == KEYS
    assert [f.stamp_ns for f in frames] == [rb.frame_stamp(i, 30) for i in range(len(KEYS))]
    assert len({f.stamp_ns for f in frames}) == len(KEYS)
    for src, got in zip(ds, frames):
        np.testing.assert_array_equal(got.rgb, src.rgb)
        np.testing.assert_array_equal(got.K, src.K)
        np.testing.assert_array_equal(got.depth, src.depth)  # mm-exact depth survives 16UC1 exactly
        assert got.frame_id == rb.OPTICAL_FRAME
        assert [(g.obj_id, g.name) for g in got.gts] == [(g.obj_id, g.name) for g in src.gts]
        for a, b in zip(src.gts, got.gts):
            np.testing.assert_allclose(b.R, a.R, atol=1e-9)
            np.testing.assert_allclose(b.t, a.t, atol=1e-12)
            assert b.visib_fract == pytest.approx(a.visib_fract, abs=1e-4)


def test_compressed_bags_read_back(bop, tmp_path):
    ds = BopDataset(bop, "test")
    for storage in ("mcap", "sqlite3"):
        rb.write_bag(ds, tmp_path / storage, storage=storage, compress=True, progress=False)
        frames = list(rb.read_bag(tmp_path / storage))
        assert len(frames) == len(KEYS)
        np.testing.assert_array_equal(frames[-1].rgb, ds.frame(*KEYS[-1]).rgb)


def test_messages_follow_the_bag_layout(bop, tmp_path):
    ds = BopDataset(bop, "test")
    cat = ds.load_catalogue()
    rb.write_bag(ds, tmp_path / "bag", scene=1, progress=False)
    msgs = list(rb.iter_messages(tmp_path / "bag"))
    by_topic: dict[str, list] = {}
    for m in msgs:
        by_topic.setdefault(m.topic, []).append(m)
    assert {t: len(v) for t, v in by_topic.items()} == {
        rb.TOPIC_TF_STATIC: 1, rb.TOPIC_CAMERA_INFO: 3, rb.TOPIC_GT: 3, rb.TOPIC_DEPTH: 3, rb.TOPIC_IMAGE: 3}

    img = by_topic[rb.TOPIC_IMAGE][0].decode()
    assert (img.encoding, img.height, img.width, img.step) == ("rgb8", H, W, 3 * W)
    depth = by_topic[rb.TOPIC_DEPTH][0].decode()
    assert (depth.encoding, depth.step) == ("16UC1", 2 * W)
    info = by_topic[rb.TOPIC_CAMERA_INFO][0].decode()
    assert info.distortion_model == "plumb_bob" and not np.any(info.d)
    np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), K)
    np.testing.assert_array_equal(np.reshape(info.r, (3, 3)), np.eye(3))
    np.testing.assert_array_equal(np.reshape(info.p, (3, 4)), np.hstack([K, np.zeros((3, 1))]))
    for m in (info, depth):
        assert (m.header.stamp, m.header.frame_id) == (img.header.stamp, img.header.frame_id)

    src = ds.frame(1, 0)
    det = by_topic[rb.TOPIC_GT][0].decode()
    assert (det.header.stamp, det.header.frame_id) == (img.header.stamp, rb.OPTICAL_FRAME)
    assert [d.id for d in det.detections] == ["driller_like_0", "can_like_0", "driller_like_1"]
    for d, g in zip(det.detections, src.gts):
        assert d.header == det.header
        assert d.results[0].hypothesis.class_id == g.name and d.results[0].hypothesis.score == 1.0
        obj = cat[g.name]
        c = d.bbox.center.position
        np.testing.assert_allclose([c.x, c.y, c.z], g.R @ obj.bbox_center + g.t, atol=1e-9)
        q = d.bbox.center.orientation
        np.testing.assert_allclose(quat_to_matrix([q.x, q.y, q.z, q.w]), g.R, atol=1e-9)
        np.testing.assert_allclose([d.bbox.size.x, d.bbox.size.y, d.bbox.size.z], obj.bbox_size, atol=1e-9)

    tf = by_topic[rb.TOPIC_TF_STATIC][0].decode().transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == (rb.BASE_FRAME, rb.OPTICAL_FRAME)
    r = tf.transform.rotation
    R = quat_to_matrix([r.x, r.y, r.z, r.w])  # optical axes expressed in camera_link
    np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=1e-12)  # optical z (forward) = link x
    np.testing.assert_allclose(R @ [1, 0, 0], [0, -1, 0], atol=1e-12)  # optical x (right) = -link y
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=1e-12)  # optical y (down) = -link z


def test_frame_groups_put_camera_info_and_gt_first_and_the_image_last(bop, tmp_path):
    rb.write_bag(BopDataset(bop, "test"), tmp_path / "bag", storage="sqlite3", progress=False)
    groups = list(rb.frame_groups(rb.iter_messages(tmp_path / "bag")))
    assert [m.topic for m in groups[0][1]] == [rb.TOPIC_TF_STATIC]
    assert len(groups) == 1 + len(KEYS)
    for stamp, group in groups[1:]:
        assert [m.topic for m in group] == [rb.TOPIC_CAMERA_INFO, rb.TOPIC_GT, rb.TOPIC_DEPTH, rb.TOPIC_IMAGE]
        assert all(m.timestamp == stamp for m in group)


def test_depth_is_16uc1_millimetres():
    d = np.array([[0.0, np.nan, 0.51234], [1.00049, 70.0, -1.0]], dtype=np.float32)
    msg = messages.depth_to_image(rb.bag_messages(), d, rb.make_header(5))
    assert (msg.encoding, msg.step) == ("16UC1", 6)
    back = messages.image_to_depth(msg)
    np.testing.assert_allclose(back, [[0, 0, 0.512], [1.0, 0, 0]], atol=1e-7)  # 0 = no measurement
    assert np.abs(back[0, 2] - d[0, 2]) <= 0.5e-3


def test_scene_selection_and_errors(bop, tmp_path):
    ds = BopDataset(bop, "test")
    rb.write_bag(ds, tmp_path / "s2", scene=2, progress=False)
    assert [(f.scene_id, f.im_id) for f in rb.read_bag(tmp_path / "s2")] == [(2, 0), (2, 5)]
    with pytest.raises(ValueError, match="scene 9 is not in"):
        rb.write_bag(ds, tmp_path / "s9", scene=9, progress=False)
    assert not (tmp_path / "s9").exists()
    with pytest.raises(FileExistsError, match="exists already"):
        rb.write_bag(ds, tmp_path / "s2", progress=False)
    with pytest.raises(KeyError, match="unknown object 'driller_like'"):
        rb.write_bag(ds, tmp_path / "nocat", catalogue=_catalogue().subset(["can_like"]), progress=False)
    assert not (tmp_path / "nocat").exists()  # a failed write leaves nothing behind


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("keep", [0.45, 0.8])
def test_truncated_bag_is_read_up_to_the_cut(bop, tmp_path, storage, keep):
    ds = BopDataset(bop, "test")
    rb.write_bag(ds, tmp_path / "bag", storage=storage, progress=False)
    full = list(rb.read_bag(tmp_path / "bag"))
    f = _storage_file(tmp_path / "bag")
    os.truncate(f, int(f.stat().st_size * keep))

    with pytest.warns(rb.BagReadWarning, match=r"read partly: \d+ of 5 frames read") as rec:
        cut = list(rb.read_bag(tmp_path / "bag"))
    assert 1 <= len(cut) < len(full)
    assert "salvaged" in str(rec[0].message)
    for a, b in zip(full, cut):  # what was read is exactly the start of the bag
        assert a.stamp_ns == b.stamp_ns and (a.scene_id, a.im_id) == (b.scene_id, b.im_id)
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.depth, b.depth)
        assert [g.name for g in a.gts] == [g.name for g in b.gts]


def test_bag_without_metadata_reads_its_storage_file(bop, tmp_path):
    rb.write_bag(BopDataset(bop, "test"), tmp_path / "bag", progress=False)
    (tmp_path / "bag" / "metadata.yaml").unlink()  # as a crashed `ros2 bag record` leaves it
    with pytest.warns(rb.BagReadWarning, match="no metadata.yaml"):
        frames = list(rb.read_bag(tmp_path / "bag"))
    assert len(frames) == len(KEYS) and frames[0].scene_id is None  # BOP ids live in the metadata
    assert [g.name for g in frames[0].gts] == ["driller_like", "can_like", "driller_like"]


def test_make_bag_command(bop, tmp_path, capsys):
    from vfm_pose_ros.cli import main

    out = tmp_path / "cli_bag"
    assert main(["make-bag", "--dataset", str(bop), "--scene", "1", "--storage", "sqlite3", "--fps", "10",
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "wrote 3 frames" in text and rb.TOPIC_GT in text
    frames = list(rb.read_bag(out))
    assert [f.stamp_ns for f in frames] == [rb.START_NS, rb.START_NS + 100_000_000, rb.START_NS + 200_000_000]
    assert main(["make-bag", "--dataset", str(bop), "--out", str(out), "--quiet"]) == 2  # never overwrites
    assert "exists already" in capsys.readouterr().err
    empty = tmp_path / "empty_ds"
    shutil.copytree(bop, empty)
    shutil.rmtree(empty / "models")
    assert main(["make-bag", "--dataset", str(empty), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--objects-dir" in capsys.readouterr().err
