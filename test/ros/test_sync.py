"""The hand-written approximate time synchroniser (used where message_filters is not installed)."""
from __future__ import annotations

from vfm_pose_ros.ros.sync import ApproximateSync

MS = 1_000_000


def _sync(tol_ms=10, n=2, queue=10):
    out = []
    return ApproximateSync(n, tol_ms * MS, lambda *m: out.append(m), queue_size=queue), out


def test_pairs_within_tolerance_whatever_arrives_first():
    s, out = _sync()
    s.add(0, 100 * MS, "img100")
    assert out == []  # waits for depth
    s.add(1, 104 * MS, "dep104")
    s.add(1, 133 * MS, "dep133")  # depth first this time
    s.add(0, 133 * MS, "img133")
    assert out == [("img100", "dep104"), ("img133", "dep133")]
    assert s.unmatched == 0 and s.pending == 0


def test_too_far_apart_is_not_a_pair_and_older_images_lose_to_newer_sets():
    s, out = _sync(tol_ms=5)
    s.add(0, 100 * MS, "img100")
    s.add(1, 120 * MS, "dep120")  # 20 ms away: no pair
    assert out == []
    s.add(0, 121 * MS, "img121")
    assert out == [("img121", "dep120")]
    assert s.unmatched == 1 and s.pending == 0  # img100 will never be used


def test_bounded_queue_counts_dropped_images():
    s, out = _sync(queue=3)
    for i in range(5):
        s.add(0, i * 100 * MS, f"img{i}")
    assert out == [] and s.pending == 3 and s.unmatched == 2
    s.tolerance_ns = 1 * MS  # the pose node changes it at run time (sync_tolerance_ms)
    s.add(1, 400 * MS, "dep4")
    assert out == [("img4", "dep4")]


def test_single_stream_passes_through():
    s, out = _sync(n=1)
    s.add(0, 5, "a")
    s.add(0, 6, "b")
    assert out == [("a",), ("b",)]
