"""Quantized loading (quantization_flexmuse): torchao int8 weight-only through `quantization_config=`."""

import os

import pytest
import torch
from PIL import Image

from helpers import make_pipeline, make_model, run_fresh, topic_ids
from modeling_flexmuse import FlexMuseForConditionalGeneration
from quantization_flexmuse import KEEP_FULL_PRECISION, QUANTIZATIONS, quantization_config, weight_bytes

pytest.importorskip("torchao")
from torchao.quantization import Int8Tensor  # noqa: E402


def _inputs():
    ids, mask = topic_ids([5, 6, 7])
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([True, False, True])
    forward = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, gate_keep=keep,
                   decoder_input_ids=torch.tensor([[0, 5, 9]] * 3))
    generate = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, gate_keep=keep, max_new_tokens=10)
    return forward, generate


def _linear_weights(model):
    return {name: type(module.weight) for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def test_int8_quantizes_every_linear_but_the_head_and_round_trips_through_save(tmp_path):
    make_model().save_pretrained(tmp_path / "fp32")
    fp32 = FlexMuseForConditionalGeneration.from_pretrained(tmp_path / "fp32").eval()
    model = FlexMuseForConditionalGeneration.from_pretrained(
        tmp_path / "fp32", quantization_config=quantization_config("int8")).eval()
    kinds = _linear_weights(model)
    assert {name for name, kind in kinds.items() if kind is not Int8Tensor} == set(KEEP_FULL_PRECISION)
    assert len(kinds) > 40  # CLIP's, the gate's, the fusion's and the decoder's linears
    assert model.lm_head.weight is model.get_input_embeddings().weight  # still tied, stored once
    assert weight_bytes(model) < 0.5 * weight_bytes(fp32)  # the tiny model's embeddings are a large share

    forward, generate = _inputs()
    with torch.no_grad():
        logits, reference = model(**forward).logits, fp32(**forward).logits
    error = (logits - reference).abs().max() / reference.abs().max()
    assert 0 < error < 0.05  # quantized (not the fp32 weights), and close to them
    generated = model.generate(**generate)

    model.save_pretrained(tmp_path / "int8")
    reloaded = FlexMuseForConditionalGeneration.from_pretrained(tmp_path / "int8").eval()  # quantized by config
    assert _linear_weights(reloaded) == kinds
    with torch.no_grad():
        assert torch.equal(reloaded(**forward).logits, logits)
    assert torch.equal(reloaded.generate(**generate), generated)
    assert os.path.getsize(tmp_path / "int8" / "model.safetensors") < 0.6 * os.path.getsize(
        tmp_path / "fp32" / "model.safetensors")  # int8 data, scales and torchao's metadata

    for name, got in run_fresh(tmp_path / "int8", {"forward": forward, "generate": generate}, tmp_path).items():
        assert torch.equal(got["logits"], logits), name  # trust_remote_code, where the repo is not importable
        assert torch.equal(got["generated"], generated), name


def test_the_pipeline_loads_a_pipeline_folder_or_a_model_quantized(tmp_path):
    from pipeline_flexmuse import FlexMusePipeline

    pipe = make_pipeline(with_t2i=False)
    pipe.save_pretrained(tmp_path / "pipe")
    pipe.model.save_pretrained(tmp_path / "model")
    pipe.processor.save_pretrained(tmp_path / "model")
    images = [Image.new("RGB", (32, 32), colour) for colour in ((200, 10, 10), (10, 10, 200))]
    for path in ("pipe", "model"):
        loaded = FlexMusePipeline.load(str(tmp_path / path), quantize="int8")
        assert type(loaded.model.decoder.block[0].layer[0].SelfAttention.q.weight) is Int8Tensor, path
        assert len(loaded("海边", images=images, max_new_tokens=6).paragraphs) == 2


def test_unknown_quantization_is_refused_and_the_cli_offers_the_modules_choices():
    from flexmuse_cli import build_parser

    with pytest.raises(ValueError, match="int4.*int8"):
        quantization_config("int4")
    write = build_parser()._subparsers._group_actions[0].choices["write"]
    choices = next(action.choices for action in write._actions if "--quantize" in action.option_strings)
    assert tuple(choices) == QUANTIZATIONS
