"""Fixtures shared by the model tests: the package's default catalogue and one rendered scene of it."""
from __future__ import annotations

import pytest

from vfm_pose_ros.core.catalogue import Catalogue
from vfm_pose_ros.paths import default_catalogue_dir


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.from_dir(default_catalogue_dir())


@pytest.fixture(scope="module")
def scene(catalogue):
    """One 640x480 synthetic frame of both default objects, with visible masks and depth."""
    from vfm_pose_ros.data.scenes import SceneConfig, SceneGenerator

    gen = SceneGenerator(list(catalogue), SceneConfig(distractors=0, min_visib_fract=0.6), seed=3)
    fr = gen.frame(0)
    for g, m in zip(fr.gts, fr.masks_visib):
        g.mask = m
    return fr
