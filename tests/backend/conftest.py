"""Tiny randomly initialised models of the real provider architectures (``backend.models.random_init``), saved
once per session and loaded by the tests through the same provider code as real weights."""

import pytest

from backend.models.random_init import save_depth_anything, save_sd2_inpainting, save_segformer


@pytest.fixture(scope="session")
def tiny_depth_anything(tmp_path_factory):
    return save_depth_anything(tmp_path_factory.mktemp("tiny-depth-anything"), "tiny")


@pytest.fixture(scope="session")
def tiny_segformer(tmp_path_factory):
    return save_segformer(tmp_path_factory.mktemp("tiny-segformer"), "tiny")


@pytest.fixture(scope="session")
def tiny_sd2_inpainting(tmp_path_factory):
    return save_sd2_inpainting(tmp_path_factory.mktemp("tiny-sd2-inpainting"), "tiny")
