import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # the suite runs under pytest-xdist: one thread per worker

from configuration_flexmuse import FlexMuseConfig  # noqa: E402
from modeling_flexmuse import FlexMuseForConditionalGeneration  # noqa: E402

# the tiny CLIP text tower reads ByT5 byte ids: 0 = padding, 1 = EOS (see FlexMuseConfig.tiny)
EOS = 1


def topic_ids(*topics):
    """Topic token rows as the tiny topic tokenizer gives them: content, EOS, padding."""
    length = max(len(t) for t in topics) + 1
    ids = torch.zeros(len(topics), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(topics):
        seq = [*tokens, EOS]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return ids, mask


def open_clip_topic_ids(*topics):
    """open_clip's tokenizer layout: SOT 49406, content, EOT 49407, zero padding."""
    length = max(len(t) for t in topics) + 2
    ids = torch.zeros(len(topics), length, dtype=torch.long)
    for row, tokens in enumerate(topics):
        seq = [49406, *tokens, 49407]
        ids[row, : len(seq)] = torch.tensor(seq)
    return ids, (ids != 0).long()


def make_model(seed=0, **config_kwargs):
    torch.manual_seed(seed)
    return FlexMuseForConditionalGeneration(FlexMuseConfig.tiny(**config_kwargs)).eval()


@pytest.fixture
def tiny_model():
    return make_model()


@pytest.fixture
def pixels():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
