"""Temporal filtering (outliers, SO(3) smoothing, timeout, instances) and tracking mode (warm-started ICP)."""
import numpy as np
import pytest

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.core.metrics import add
from vfm_pose_ros.core.tracking import PoseFilter, PoseTracker, TrackingConfig, closest_symmetric_pose, warm_start_icp
from vfm_pose_ros.core.transforms import axis_angle_to_matrix, rotation_angle_deg
from vfm_pose_ros.core.types import Frame, ObjectPose
from vfm_pose_ros.paths import default_catalogue_dir


def pose(name="obj", R=None, t=(0.0, 0.0, 1.0), **kw) -> ObjectPose:
    return ObjectPose(name=name, R=np.eye(3) if R is None else np.asarray(R, float), t=np.asarray(t, float), **kw)


def quat_slerp(q0, q1, a):
    """Textbook quaternion slerp, written out independently of the filter's rotation-vector form."""
    q0, q1 = np.asarray(q0, float), np.asarray(q1, float)
    if np.dot(q0, q1) < 0:
        q1 = -q1
    th = np.arccos(np.clip(np.dot(q0, q1), -1, 1))
    return (np.sin((1 - a) * th) * q0 + np.sin(a * th) * q1) / np.sin(th)


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


def test_rotation_smoothing_is_slerp_on_so3():
    from scipy.spatial.transform import Rotation

    f = PoseFilter(TrackingConfig(smoothing=0.7, velocity_gain=0.0, max_jump_deg=90))
    R0 = axis_angle_to_matrix([0.2, -0.4, 0.1])
    R1 = axis_angle_to_matrix([0.5, 0.1, -0.3])  # 36 degrees away: per-component averaging would be visibly off
    f.update(0.0, [pose(R=R0, t=[0.0, 0.0, 1.0])])
    out = f.update(0.1, [pose(R=R1, t=[0.01, -0.02, 1.0])])
    assert len(out) == 1
    q = quat_slerp(Rotation.from_matrix(R0).as_quat(), Rotation.from_matrix(R1).as_quat(), 0.3)
    expected = Rotation.from_quat(q).as_matrix()
    assert np.allclose(out[0].R, expected, atol=1e-9)
    assert np.allclose(out[0].t, [0.003, -0.006, 1.0])  # exponential smoothing: 30 % of the way
    naive = 0.7 * R0 + 0.3 * R1  # what component-wise smoothing gives (not even a rotation)
    assert abs(np.linalg.det(naive) - 1) > 1e-3 and abs(np.linalg.det(out[0].R) - 1) < 1e-9


def test_outlier_rejected_then_reset_when_it_persists():
    cfg = TrackingConfig(smoothing=0.0, velocity_gain=0.0, max_jump_mm=30, max_jump_diameter=0.0, reset_after=3)
    f = PoseFilter(cfg)
    for k in range(5):
        assert len(f.update(0.1 * k, [pose(t=[0.001 * k, 0, 1.0])])) == 1
    jump = pose(t=[0.2, 0, 1.0])
    assert f.update(0.5, [jump]) == [] and f.stats.rejected == 1  # a 20 cm jump is an outlier
    back = f.update(0.6, [pose(t=[0.006, 0, 1.0])])
    assert len(back) == 1 and back[0].instance == 0 and np.allclose(back[0].t, [0.006, 0, 1.0])
    flip = pose(R=axis_angle_to_matrix([0, np.pi / 2, 0]), t=[0.007, 0, 1.0])
    assert f.update(0.7, [flip]) == []  # a 90 degree flip as well
    # the estimator insists on a new place: after reset_after consecutive rejections that agree with each other
    # the track restarts there (the flip before them does not count: it disagrees)
    assert f.update(0.8, [pose(t=[0.3, 0, 1.0])]) == [] and f.update(0.9, [pose(t=[0.3, 0, 1.0])]) == []
    out = f.update(1.0, [pose(t=[0.3, 0, 1.0])])
    assert len(out) == 1 and np.allclose(out[0].t, [0.3, 0, 1.0]) and f.stats.resets == 1


def test_scattered_outliers_never_reset_the_track():
    f = PoseFilter(TrackingConfig(smoothing=0.0, velocity_gain=0.0, max_jump_mm=30, max_jump_diameter=0.0,
                                  reset_after=2))
    f.update(0.0, [pose(t=[0, 0, 1.0])])
    for k, x in enumerate([0.3, -0.3, 0.6, -0.6]):
        assert f.update(0.1 * (k + 1), [pose(t=[x, 0, 1.0])]) == []
    assert f.stats.resets == 0 and f.stats.rejected >= 2  # (the farthest start unconfirmed tracks instead)
    assert len(f.tracks) <= 2
    assert np.allclose(f.update(0.5, [pose(t=[0.001, 0, 1.0])])[0].t, [0.001, 0, 1.0])


def test_jump_threshold_grows_with_time_since_last_update():
    cfg = TrackingConfig(smoothing=0.0, velocity_gain=0.0, max_jump_mm=30, max_jump_diameter=0.0, timeout_s=2.0)
    f = PoseFilter(cfg)
    for k in range(4):
        f.update(0.1 * k, [pose(t=[0, 0, 1.0])])
    assert f.update(0.4, [pose(t=[0.05, 0, 1.0])]) == []  # 50 mm in one frame period: rejected
    assert len(f.update(0.7, [pose(t=[0.05, 0, 1.0])])) == 1  # 50 mm after three frame periods: plausible


def test_jump_threshold_scales_with_diameter(catalogue):
    cfg = TrackingConfig(smoothing=0.0, velocity_gain=0.0, max_jump_mm=10, max_jump_diameter=0.2)
    f = PoseFilter(cfg, catalogue)
    d = catalogue["driller_like"].diameter
    f.update(0.0, [pose("driller_like", t=[0, 0, 1.0])])
    assert len(f.update(0.1, [pose("driller_like", t=[0.15 * d, 0, 1.0])])) == 1
    assert f.update(0.2, [pose("driller_like", t=[0.15 * d + 0.3 * d, 0, 1.0])]) == []


def test_track_timeout():
    f = PoseFilter(TrackingConfig(smoothing=0.5, velocity_gain=0.0, timeout_s=0.5, max_jump_diameter=0.0))
    f.update(0.0, [pose(t=[0, 0, 1.0])])
    f.update(0.1, [pose(t=[0, 0, 1.0])])
    assert len(f.tracks) == 1 and len(f.predicted(0.3)) == 1
    f.prune(0.7)
    assert not f.tracks and f.stats.expired == 1 and f.predicted(0.7) == []
    out = f.update(0.8, [pose(t=[0.3, 0, 1.0])])  # far away, but the old track is gone: a fresh start, unsmoothed
    assert len(out) == 1 and np.allclose(out[0].t, [0.3, 0, 1.0])


def test_constant_velocity_tracked_without_lag():
    f = PoseFilter(TrackingConfig(smoothing=0.6, velocity_gain=0.3))
    w = np.array([0.0, 0.0, 0.5])  # rad/s
    for k in range(60):
        s = 0.05 * k
        out = f.update(s, [pose(R=axis_angle_to_matrix(w * s), t=[0.2 * s, 0, 1.0])])
    assert np.linalg.norm(out[0].t - [0.2 * s, 0, 1.0]) < 1e-4
    assert rotation_angle_deg(out[0].R, axis_angle_to_matrix(w * s)) < 0.05


def test_instances_keep_their_ids_and_new_ones_are_confirmed():
    f = PoseFilter(TrackingConfig(smoothing=0.0, velocity_gain=0.0, confirm_hits=2, max_jump_diameter=0.0))
    a, b = [0.0, 0, 1.0], [0.3, 0, 1.0]
    f.update(0.0, [pose(t=a)])
    out = f.update(0.1, [pose(t=b, instance=0), pose(t=a, instance=1)])  # numbering from the estimator may swap
    assert [tuple(p.t) for p in out] == [tuple(a)]  # the new copy is not published on its first sighting
    out = f.update(0.2, [pose(t=b), pose(t=a)])
    ids = {tuple(np.round(p.t, 3)): p.instance for p in out}
    assert ids == {tuple(a): 0, tuple(b): 1}
    out = f.update(0.3, [pose(t=a), pose(t=b)])
    assert {tuple(np.round(p.t, 3)): p.instance for p in out} == ids


def test_symmetric_equivalents_are_not_jumps(catalogue):
    can = catalogue["can_like"]
    R = axis_angle_to_matrix([0.4, 0.2, 0.1])
    t = np.array([0.0, 0.0, 0.8])
    a = np.asarray(can.symmetry.axis, float)
    R_sym, t_sym = closest_symmetric_pose(can, R, R @ axis_angle_to_matrix(a * 1.3), t)
    assert np.allclose(R_sym, R, atol=1e-9) and np.allclose(t_sym, t)
    f = PoseFilter(TrackingConfig(smoothing=0.5, velocity_gain=0.0, max_jump_deg=10), catalogue)
    f.update(0.0, [pose("can_like", R=R, t=t)])
    out = f.update(0.1, [pose("can_like", R=R @ axis_angle_to_matrix(a * 1.3), t=t)])
    assert len(out) == 1 and np.allclose(out[0].R, R, atol=1e-9)


# -- tracking mode on rendered depth ----------------------------------------------------------------


def _render(catalogue, R, t):
    from vfm_pose_ros.data.render import Renderer
    from vfm_pose_ros.data.scenes import LMO_K

    return Renderer(640, 480, K=LMO_K).render([(catalogue["driller_like"], R, t)]), LMO_K


def _surface(obj):
    from vfm_pose_ros.core.catalogue import surface_samples

    return surface_samples(obj, 2000)


def test_warm_start_icp_converges_on_moved_object(catalogue):
    obj = catalogue["driller_like"]
    pts, normals = _surface(obj)
    R0, t0 = axis_angle_to_matrix([0.3, -0.6, 0.2]), np.array([0.02, 0.01, 0.8])
    R1 = axis_angle_to_matrix([0, 0.1, 0.03]) @ R0  # 6 degrees and 15 mm later
    t1 = t0 + np.array([0.012, -0.006, 0.006])
    res1, K = _render(catalogue, R1, t1)
    ev = obj.eval_points(500)
    assert add(R0, t0, R1, t1, ev) > 0.01
    out = warm_start_icp(R0, t0, pts, normals, obj.diameter, res1.depth, K)
    assert out is not None and out.coverage > 0.85 and out.fitness > 0.7
    assert add(out.R, out.t, R1, t1, ev) < 0.002
    empty = np.zeros_like(res1.depth)  # the object left the view
    gone = warm_start_icp(R0, t0, pts, normals, obj.diameter, empty, K)
    assert gone is None


def test_tracker_holds_the_track_and_falls_back(catalogue):
    """PoseTracker: one full estimation, then ICP warm starts while fitness holds; the object leaves -> full."""
    import torch

    from vfm_pose_ros.models import dinov2

    class GtEstimator(dinov2.Estimator):  # full estimation = the truth plus a 5 mm error; track() is the real one
        calls = 0

        def predict(self, frame):
            GtEstimator.calls += 1
            return [pose("driller_like", R=frame.gt[0], t=frame.gt[1] + 0.005, score=0.9)] if frame.gt else []

    torch.manual_seed(0)
    tiny = {**dinov2.SMALL_CONFIG, "arch_overrides": {"embed_dim": 48, "depth": 1, "num_heads": 2,
                                                      "init_values": None}, "img_size": 56, "head_channels": 16,
            "detail_channels": [8, 16]}
    est = GtEstimator(dinov2.build_net(tiny, catalogue), catalogue, device="cpu")
    tracker = PoseTracker(est, TrackingConfig(smoothing=0.3, velocity_gain=0.3, min_fitness=0.6,
                                              redetect_every=100))
    ev = catalogue["driller_like"].eval_points(500)
    R0 = axis_angle_to_matrix([0.3, -0.6, 0.2])
    for k in range(6):
        R = axis_angle_to_matrix([0, 0.03 * k, 0]) @ R0
        t = np.array([0.005 * k, 0.0, 0.8])
        res, K = _render(catalogue, R, t)
        frame = Frame(rgb=res.rgb, K=K, depth=res.depth, stamp_ns=int(1e9 + k * 1e8))
        frame.gt = (R, t)
        out = tracker.step(frame)
        assert len(out) == 1
        assert tracker.last_mode == ("full" if k == 0 else "track")
        if k >= 2:  # ICP on the depth removes the full estimate's 5 mm error
            assert add(out[0].R, out[0].t, R, t, ev) < 0.003, k
        assert out[0].score == 0.9 and out[0].icp_fitness is not None or k == 0
    assert GtEstimator.calls == 1 and tracker.stats.tracked == 5
    empty = Frame(rgb=res.rgb, K=K, depth=np.zeros_like(res.depth), stamp_ns=int(1.6e9))
    empty.gt = None
    assert tracker.step(empty) == [] and tracker.last_mode == "full"
    assert GtEstimator.calls == 2 and tracker.stats.fallbacks == 1


def test_tracker_restarts_when_time_goes_backwards_or_prompt_changes():
    class Fixed:  # no track(): per-frame estimation through the filter
        def predict(self, frame):
            return [pose(t=[0.0, 0.0, 1.0 + 0.01 * frame.stamp_ns * 1e-9])]

    tr = PoseTracker(Fixed(), TrackingConfig(smoothing=0.5, velocity_gain=0.0, max_jump_diameter=0.0))
    for k in range(3):
        tr.step(Frame(rgb=np.zeros((4, 4, 3), np.uint8), K=np.eye(3), stamp_ns=int(5e9 + k * 1e8)))
    assert tr.filter.stats.accepted == 2 and tr.last_mode == "full"
    tr.step(Frame(rgb=np.zeros((4, 4, 3), np.uint8), K=np.eye(3), stamp_ns=int(1e9)))  # a replay restarted
    assert len(tr.filter.tracks) == 1 and tr.filter.stats.new_tracks == 2
    tr.step(Frame(rgb=np.zeros((4, 4, 3), np.uint8), K=np.eye(3), stamp_ns=int(1.1e9), prompt="the can"))
    assert tr.filter.stats.new_tracks == 3


def test_tracker_reuses_the_tracks_boxes_without_depth(catalogue):
    """RGB only: after one full estimation the tracks' boxes (the estimator's own, else the 3D box projected at
    the predicted pose) reach the estimator as external detections (one crop pass instead of detection +
    crops); losing the object, or the periodic re-detection, runs the full estimation again."""
    from vfm_pose_ros.core.transforms import project_object

    R = axis_angle_to_matrix([0.3, -0.6, 0.2])
    t = np.array([0.05, -0.02, 0.8])
    K = np.array([[570.0, 0, 320], [0, 570, 240], [0, 0, 1]])
    seen = []

    class Recorder:  # answers with the truth while the object is "visible"; records what it was given
        visible = True

        def predict(self, frame):
            seen.append(None if frame.boxes_2d is None else {n: np.array(b) for n, b in frame.boxes_2d.items()})
            return [pose("driller_like", R=R, t=t, score=0.9)] if Recorder.visible else []

    tr = PoseTracker(Recorder(), TrackingConfig(smoothing=0.0, velocity_gain=0.0, redetect_every=4),
                     catalogue=catalogue)
    rgb = np.zeros((480, 640, 3), np.uint8)
    modes = []
    for k in range(5):
        out = tr.step(Frame(rgb=rgb, K=K, stamp_ns=int(1e9 + k * 1e8)))
        modes.append(tr.last_mode)
        assert len(out) == 1
    # full, then the box of the confirmed track (confirm_hits: a lone object's track is confirmed at once)
    assert modes == ["full", "roi", "roi", "roi", "full"]  # redetect_every=4: a full estimation every 4th frame
    uv = project_object(K, R, t, catalogue["driller_like"].box_corners())
    np.testing.assert_allclose(seen[1]["driller_like"], [*uv.min(0), *uv.max(0)], atol=1e-6)
    assert seen[0] is None and seen[4] is None
    Recorder.visible = False  # gone from its box: the same frame is estimated in full
    n = len(seen)
    assert tr.step(Frame(rgb=rgb, K=K, stamp_ns=int(1.5e9))) == []
    assert seen[n] is not None and seen[n + 1] is None and tr.last_mode == "full"
    assert tr.stats.roi == 3 and tr.stats.full == 3
    # detections that come with the frame (a 2D detector) are never replaced
    Recorder.visible = True
    given = {"driller_like": np.array([1.0, 2.0, 50.0, 60.0])}
    tr.step(Frame(rgb=rgb, K=K, stamp_ns=int(1.6e9), boxes_2d=given))
    np.testing.assert_array_equal(seen[-1]["driller_like"], given["driller_like"])
    # a measurement that carries the estimator's own 2D box: that box is reused, not the projection
    tr.filter.tracks[next(iter(tr.filter.tracks))].last.box_2d = np.array([100.0, 110.0, 300.0, 320.0])
    tr.step(Frame(rgb=rgb, K=K, stamp_ns=int(1.7e9)))
    assert tr.last_mode == "roi"
    np.testing.assert_array_equal(seen[-1]["driller_like"], [100.0, 110.0, 300.0, 320.0])
