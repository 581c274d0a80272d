"""Typed settings read from config dicts (core.settings), and the image affines both backends share."""
import numpy as np
import pytest

from vfm_pose_ros.core.affine import crop_affine, invert_affine, letterbox_affine, window_affine
from vfm_pose_ros.core.icp import DepthStageConfig
from vfm_pose_ros.models.dinov2 import DEFAULT_CONFIG, InferenceConfig


def test_depth_stage_reads_its_prefixed_keys_and_casts():
    cfg = DepthStageConfig.from_config({"use_depth": False, "icp_starts": 3.0, "icp_min_fitness": 1,
                                        "icp_global_rotations": None, "starts": 99, "instance_nms": 0.5})
    assert cfg.use_depth is False and cfg.starts == 3 and isinstance(cfg.starts, int)
    assert cfg.min_fitness == 1.0 and isinstance(cfg.min_fitness, float)
    assert cfg.global_rotations == DepthStageConfig().global_rotations  # None keeps the default
    assert DepthStageConfig.from_config(cfg.as_config()) == cfg  # as_config writes the keys it reads


def test_bad_value_names_its_key():
    with pytest.raises(ValueError, match="'icp_starts' must be a int; got 'many'"):
        DepthStageConfig.from_config({"icp_starts": "many"})


def test_defaults_live_in_the_dataclasses():
    """DEFAULT_CONFIG's inference and depth keys are the dataclasses' defaults, so a checkpoint without them
    reads the same values as the estimator's own defaults."""
    assert InferenceConfig.from_config(DEFAULT_CONFIG) == InferenceConfig()
    assert DepthStageConfig.from_config(DEFAULT_CONFIG) == DepthStageConfig()
    assert DEFAULT_CONFIG["instance_nms"] == InferenceConfig().instance_nms
    assert DEFAULT_CONFIG["icp_starts"] == DepthStageConfig().starts


@pytest.mark.parametrize("A", [crop_affine((100.3, 50.7), 77.1, 112), letterbox_affine(480, 640, 224),
                               window_affine((10.0, 20.0), 33.0, 160), np.array([[0.0, 2.0, 1.0], [3.0, 0.5, -4.0]])])
def test_invert_affine_is_opencvs_to_the_bit(A):
    cv2 = pytest.importorskip("cv2")
    assert np.array_equal(invert_affine(A), cv2.invertAffineTransform(A))
    round_trip = np.vstack([invert_affine(A), [0, 0, 1]]) @ np.vstack([A, [0, 0, 1]])
    assert np.allclose(round_trip, np.eye(3))


def test_crop_and_window_conventions():
    """Pixel centres (DINOv2 crops) put the centre on (size - 1) / 2; pixel corners (CLIP windows) on size / 2."""
    c = np.array([100.0, 50.0, 1.0])
    assert np.allclose(crop_affine(c[:2], 64, 112) @ c, [55.5, 55.5])
    assert np.allclose(window_affine(c[:2], 64, 112) @ c, [56.0, 56.0])
