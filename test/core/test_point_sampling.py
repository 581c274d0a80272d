"""Consistent subsampling: the depth stage's thinned clouds change by a point when the cloud does."""
import numpy as np

from vfm_pose_ros.core.icp import clean_cloud
from vfm_pose_ros.core.point_sampling import consistent_subsample


def _cloud(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * 0.05 + [0.0, 0.0, 0.8]


def _rows(points):
    return {tuple(p) for p in np.asarray(points)}


def test_one_point_more_changes_the_subset_by_at_most_that_point():
    cloud = _cloud(5000)
    a = _rows(cloud[consistent_subsample(cloud, 600)])
    for extra in _cloud(20, seed=1):
        b = _rows(np.vstack([cloud, extra])[consistent_subsample(np.vstack([cloud, extra]), 600)])
        assert len(a - b) <= 1 and len(b - a) <= 1
    fewer = np.delete(cloud, 17, axis=0)
    c = _rows(fewer[consistent_subsample(fewer, 600)])
    assert len(a ^ c) <= 2


def test_order_does_not_matter_and_sizes_nest():
    cloud = _cloud(3000)
    perm = np.random.default_rng(5).permutation(len(cloud))
    a = cloud[consistent_subsample(cloud, 500)]
    b = cloud[perm][consistent_subsample(cloud[perm], 500)]
    np.testing.assert_array_equal(a, b)  # the same points, in the same (key) order
    small = _rows(cloud[consistent_subsample(cloud, 100)])
    assert small <= _rows(a)
    assert len(consistent_subsample(cloud[:50], 500)) == 50


def test_the_kept_points_are_spread_like_the_cloud():
    """Not biased to a region: each octant around the centroid keeps its share (binomial, 8 sigma)."""
    cloud = _cloud(20000)
    kept = cloud[consistent_subsample(cloud, 2000)]
    c = cloud.mean(0)
    octant = lambda p: ((p - c) > 0).astype(int) @ [1, 2, 4]  # noqa: E731
    share = np.bincount(octant(cloud), minlength=8) / len(cloud)
    got = np.bincount(octant(kept), minlength=8)
    sigma = np.sqrt(2000 * share * (1 - share))
    assert np.all(np.abs(got - 2000 * share) < 8 * sigma)


def test_clean_cloud_keeps_the_same_points_when_a_few_join():
    """The depth stage's own thinning (max_observed): a mask one cell larger keeps the rest of the subset."""
    cloud = _cloud(6000)
    a = _rows(clean_cloud(cloud, diameter=0.3, max_observed=2500))
    b = _rows(clean_cloud(np.vstack([cloud, _cloud(3, seed=9)]), diameter=0.3, max_observed=2500))
    assert len(a ^ b) <= 6
