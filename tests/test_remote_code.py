"""Hub remote code: a saved folder loads in a fresh process that cannot import this repo."""

import json
import os

import pytest
import torch
from transformers import ChineseCLIPConfig, ChineseCLIPModel, CLIPConfig, CLIPModel, T5Config, T5ForConditionalGeneration

from configuration_flexmuse import FlexMuseConfig
from helpers import make_model, open_clip_topic_ids, run_fresh, topic_ids
from modeling_flexmuse import FlexMuseForConditionalGeneration, FlexMuseMemoryOutput

@pytest.mark.parametrize("backend", ["transformers", "open_clip"])
def test_fresh_process_round_trip(backend, tmp_path):
    model = make_model(encoder_backend=backend)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    files = set(os.listdir(model_dir))
    assert {"config.json", "model.safetensors", "configuration_flexmuse.py", "modeling_flexmuse.py"} <= files
    auto_map = json.loads((model_dir / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForSeq2SeqLM"}

    ids, mask = (open_clip_topic_ids if backend == "open_clip" else topic_ids)([5, 6, 7])
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    keep = torch.tensor([True, False, True])
    forward = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, gate_keep=keep,
                   decoder_input_ids=torch.tensor([[0, 5, 9]] * 3))
    generate = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, gate_keep=keep, max_new_tokens=10)
    # compared with the package's class on the same file: weights read from it sit at other addresses than
    # the model's own, and the CPU kernels may round a last bit differently there (the logits moved by 1e-6)
    model = FlexMuseForConditionalGeneration.from_pretrained(model_dir).eval()
    with torch.no_grad():
        expected_logits = model(**forward).logits
    expected_generated = model.generate(**generate)

    results = run_fresh(model_dir, {"forward": forward, "generate": generate}, tmp_path)
    for name, got in results.items():
        diff = (got["logits"] - expected_logits).abs().max().item()
        assert torch.equal(got["logits"], expected_logits), (name, diff)  # bit-identical
        assert torch.equal(got["generated"], expected_generated), name


TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "image_size": 32, "patch_size": 8}
TINY_TEXT = {"vocab_size": 120, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "max_position_embeddings": 32, "pad_token_id": 0, "bos_token_id": 118,
             "eos_token_id": 119}


@pytest.mark.parametrize("encoder_kind", ["clip", "chinese_clip"])
@pytest.mark.parametrize("tied", [True, False])
def test_from_components_with_local_checkpoints(encoder_kind, tied, tmp_path):
    torch.manual_seed(0)
    if encoder_kind == "clip":
        clip = CLIPModel(CLIPConfig(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=16))
    else:
        text = {k: v for k, v in TINY_TEXT.items() if not k.endswith("s_token_id")}
        clip = ChineseCLIPModel(ChineseCLIPConfig(text_config=text, vision_config=TINY_VISION, projection_dim=16))
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=200, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                             num_heads=4, decoder_start_token_id=0, tie_word_embeddings=tied,
                                             feed_forward_proj="relu" if tied else "gated-gelu")).eval()
    if not tied:  # T5 v1.1 / flan-t5 checkpoints carry an LM head of their own
        t5.lm_head.weight = torch.nn.Parameter(torch.randn_like(t5.lm_head.weight))
    clip.save_pretrained(tmp_path / "clip")
    t5.save_pretrained(tmp_path / "t5")

    model = FlexMuseForConditionalGeneration.from_components(str(tmp_path / "clip"), str(tmp_path / "t5")).eval()
    assert model.config.encoder.model_type == encoder_kind
    assert model.config.tie_word_embeddings == tied
    assert (model.lm_head.weight is model.decoder.embed_tokens.weight) == tied
    for key, value in clip.state_dict().items():
        assert torch.equal(model.encoder.clip.state_dict()[key], value), key
    assert not any(p.requires_grad for p in model.encoder.parameters())

    # the writer is T5's decoder exactly: same logits for the same memory
    memory = torch.randn(2, 7, 32)
    memory_mask = torch.ones(2, 7, dtype=torch.long)
    memory_mask[1, 5:] = 0
    decoder_input_ids = torch.tensor([[0, 4, 8, 15], [0, 16, 23, 42]])
    with torch.no_grad():
        ours = model(encoder_outputs=FlexMuseMemoryOutput(last_hidden_state=memory),
                     attention_mask=memory_mask, decoder_input_ids=decoder_input_ids).logits
        theirs = t5(encoder_outputs=(memory,), attention_mask=memory_mask, decoder_input_ids=decoder_input_ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)

    # and the composite saves and reloads to the same outputs
    model.save_pretrained(tmp_path / "flexmuse")
    reloaded = FlexMuseForConditionalGeneration.from_pretrained(tmp_path / "flexmuse").eval()
    ids = torch.tensor([[118, 5, 6, 119]]) if encoder_kind == "clip" else torch.tensor([[101, 5, 6, 102]])
    pixels = torch.randn(2, 3, 32, 32)
    inputs = dict(input_ids=ids, pixel_values=pixels, decoder_input_ids=decoder_input_ids, gate_mode="open")
    saved = reloaded.state_dict()
    assert all(torch.equal(saved[key], value) for key, value in model.state_dict().items())
    with torch.no_grad():  # the same weights at other addresses: the CPU kernels may round a last bit apart
        assert torch.allclose(model(**inputs).logits, reloaded(**inputs).logits, atol=1e-5, rtol=0)


def test_from_components_rejects_a_non_clip_encoder(tmp_path):
    T5ForConditionalGeneration(T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                        num_heads=2)).save_pretrained(tmp_path / "t5")
    with pytest.raises(ValueError, match="not a CLIP-style dual encoder"):
        FlexMuseForConditionalGeneration.from_components(str(tmp_path / "t5"), str(tmp_path / "t5"))


def test_config_round_trip(tmp_path):
    config = FlexMuseConfig.tiny(gate_mode="open", gate_low=0.1, gate_high=0.9, fusion_heads=2)
    config.save_pretrained(tmp_path)
    again = FlexMuseConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()
