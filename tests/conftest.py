"""The suite's set-up and shared fixtures; what tests import is in helpers.py."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # the suite runs under pytest-xdist: one thread per worker

import images_flexmuse  # noqa: E402
from helpers import make_model  # noqa: E402


@pytest.fixture
def tiny_model():
    return make_model()


@pytest.fixture
def pixels():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def normalised(monkeypatch):
    """The sizes of the images normalised (`images_flexmuse._normalize`), one entry each time one is."""
    sizes, normalize = [], images_flexmuse._normalize

    def counting(img, max_side):
        sizes.append(img.size)
        return normalize(img, max_side)

    monkeypatch.setattr(images_flexmuse, "_normalize", counting)
    return sizes
