"""FlexMuseForConditionalGeneration: forward, gradients, batched generation, gate, bad input."""

import pytest
import torch

from configuration_flexmuse import FlexMuseConfig
from helpers import make_model, topic_ids
from modeling_flexmuse import FlexMuseForConditionalGeneration


def test_forward_loss_and_shapes(tiny_model, pixels):
    ids, mask = topic_ids([5, 6, 7])
    labels = torch.randint(3, 384, (3, 9))
    labels[0, -2:] = -100
    out = tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels, gate_mode="open")
    assert out.logits.shape == (3, 9, 384)
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(out.loss, expected)
    assert out.gate_keep.tolist() == [True, True, True]
    # the default memory: Z^F and Z̃^T, one vector each, as in the paper
    assert out.encoder_last_hidden_state.shape == (3, 2, 64)


def test_loss_with_num_items_in_batch_and_tuple_output(tiny_model, pixels):
    """Trainer's `num_items_in_batch` turns the loss into this batch's token sum over that count."""
    ids, mask = topic_ids([5, 6, 7])
    labels = torch.randint(3, 384, (3, 7), generator=torch.Generator().manual_seed(0))
    labels[1, -3:] = -100
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels, gate_mode="open")
    out = tiny_model(**inputs)
    summed = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), reduction="sum")
    for count in (40, torch.tensor(40)):
        assert torch.allclose(tiny_model(**inputs, num_items_in_batch=count).loss, summed / 40)
    as_tuple = tiny_model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.loss) and torch.equal(as_tuple[1], out.logits)


def test_shift_right_is_t5s(tiny_model):
    from transformers.models.t5.modeling_t5 import T5PreTrainedModel

    labels = torch.tensor([[5, 6, 7, -100], [8, -100, -100, -100]])
    expected = T5PreTrainedModel._shift_right(tiny_model, labels)
    assert torch.equal(tiny_model.shift_right(labels), expected)
    assert torch.equal(tiny_model.prepare_decoder_input_ids_from_labels(labels=labels), expected)


def test_memory_options_reach_the_memory_from_forward_and_generate(tiny_model, pixels):
    ids, mask = topic_ids([5, 6, 7], [8, 9])
    index, gate_u = torch.tensor([0, 1, 1]), torch.tensor([0.0, 0.5, 1.0])
    memory = tiny_model.get_memory(input_ids=ids, pixel_values=pixels, attention_mask=mask, topic_index=index,
                                   gate_u=gate_u)
    out = tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels, topic_index=index, gate_u=gate_u,
                     decoder_input_ids=torch.zeros(3, 1, dtype=torch.long))
    assert torch.equal(out.gate_keep, memory.gate_keep) and torch.equal(out.encoder_last_hidden_state,
                                                                         memory.last_hidden_state)
    pooled, tokens, _ = tiny_model.encode_topics(ids, mask)
    decode = dict(max_new_tokens=5, gate_mode="open", topic_index=index)
    direct = tiny_model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, **decode)
    cached = tiny_model.generate(attention_mask=mask, topic_features=(pooled, tokens),
                                 image_features=tiny_model.encode_images(pixels), **decode)
    assert torch.equal(direct, cached)
    with pytest.raises(TypeError, match="gate_moed"):
        tiny_model.get_memory(input_ids=ids, pixel_values=pixels, attention_mask=mask, gate_moed="open")


def test_gradients_reach_trainable_parts_not_frozen_encoder(pixels):
    model = make_model().train()
    ids, mask = topic_ids([5, 6, 7], [8, 9])
    labels = torch.randint(3, 384, (3, 6))
    out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, topic_index=torch.tensor([0, 1, 1]),
                labels=labels, gate_mode="open")
    out.loss.backward()
    for name in ("fusion.w_q", "fusion.w_k", "fusion.w_v", "fusion.w_lambda", "memory.visual_proj.weight",
                 "memory.text_proj.weight", "decoder.block.0.layer.0.SelfAttention.q.weight",
                 "decoder.block.1.layer.1.EncDecAttention.k.weight", "lm_head.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())


def test_unfrozen_encoder_gets_gradients(pixels):
    model = make_model(freeze_encoder=False).train()
    ids, mask = topic_ids([5, 6])
    model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=torch.randint(3, 384, (3, 4)),
          gate_mode="open").loss.backward()
    assert model.encoder.clip.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert model.encoder.clip.text_model.embeddings.token_embedding.weight.grad.abs().sum() > 0


def _pad_to(rows, length):
    return torch.stack([torch.nn.functional.pad(r, (0, length - len(r))) for r in rows])


def test_batched_article_equals_one_by_one(tiny_model, pixels):
    ids, mask = topic_ids([5, 6, 7])
    kwargs = dict(max_new_tokens=12, do_sample=False, gate_mode="open")
    batched = tiny_model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, **kwargs)
    single = [tiny_model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels[i : i + 1], **kwargs)[0]
              for i in range(3)]
    length = max(batched.shape[1], max(len(s) for s in single))
    assert torch.equal(_pad_to(list(batched), length), _pad_to(single, length))


def test_beam_search_and_sampling_run(tiny_model, pixels):
    ids, mask = topic_ids([5, 6, 7])
    beams = tiny_model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, num_beams=3,
                                num_return_sequences=2, max_new_tokens=6)
    assert beams.shape[0] == 6
    torch.manual_seed(0)
    sampled = tiny_model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, do_sample=True,
                                  top_p=0.9, temperature=1.5, max_new_tokens=6)
    assert sampled.shape[0] == 3


def test_text_tower_runs_once_per_article(tiny_model, pixels, monkeypatch):
    calls = []
    original = tiny_model.encoder.text_features
    monkeypatch.setattr(tiny_model.encoder, "text_features", lambda ids, m: calls.append(ids.shape) or original(ids, m))
    ids, mask = topic_ids([5, 6, 7])
    tiny_model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=4)
    assert calls == [torch.Size([1, 4])]
    # two articles in one batch: one call, one row per topic
    calls.clear()
    ids, mask = topic_ids([5, 6, 7], [8])
    tiny_model.generate(input_ids=ids, attention_mask=mask, pixel_values=torch.cat([pixels, pixels]),
                        topic_index=torch.tensor([0, 0, 0, 1, 1, 1]), max_new_tokens=4)
    assert calls == [torch.Size([2, 4])]


def test_gate_masked_topic_is_absent_from_decoder_memory(tiny_model, pixels):
    a_ids, a_mask = topic_ids([5, 6, 7])
    b_ids, b_mask = topic_ids([40, 41, 42])
    labels = torch.randint(3, 384, (3, 5))
    closed = [tiny_model(input_ids=i, attention_mask=m, pixel_values=pixels, labels=labels, gate_mode="closed")
              for i, m in ((a_ids, a_mask), (b_ids, b_mask))]
    text_part = closed[0].encoder_attention_mask[:, 17:]
    assert not text_part.any()  # masked through the attention mask, not only zeroed
    assert torch.allclose(closed[0].logits, closed[1].logits, atol=1e-6)  # so the topic cannot matter
    opened = [tiny_model(input_ids=i, attention_mask=m, pixel_values=pixels, labels=labels, gate_mode="open")
              for i, m in ((a_ids, a_mask), (b_ids, b_mask))]
    assert not torch.allclose(opened[0].logits, opened[1].logits, atol=1e-4)


def test_sampled_gate_is_reproducible_in_generate(tiny_model, pixels):
    ids, mask = topic_ids([5, 6, 7])
    memory = [tiny_model.get_memory(input_ids=ids, pixel_values=pixels, attention_mask=mask, gate_mode="sample",
                                    generator=torch.Generator().manual_seed(s)) for s in (3, 3)]
    assert torch.equal(memory[0].gate_keep, memory[1].gate_keep)
    assert torch.equal(memory[0].last_hidden_state, memory[1].last_hidden_state)


def test_token_fusion_mode_and_ablations(pixels):
    ids, mask = topic_ids([5, 6, 7])
    for kwargs in ({"fusion_tokens": "token"}, {"use_fusion": False}, {"use_gate": False},
                   {"fusion_heads": 4}):
        model = make_model(**kwargs)
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=torch.ones(3, 4).long())
        assert torch.isfinite(out.loss)
        if kwargs.get("fusion_tokens") == "token":
            # 1 CLS + 16 patches (32 px / 8 px) + the 4 topic tokens (3 + EOS)
            assert out.encoder_last_hidden_state.shape[1] == 17 + 4
        if "use_fusion" in kwargs:
            assert model.fusion is None
        if "use_gate" in kwargs:
            closed = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, gate_mode="closed",
                           labels=torch.ones(3, 4).long())
            assert closed.gate_keep.all()


def test_bad_inputs_raise_clear_errors(tiny_model, pixels):
    ids, mask = topic_ids([5], [6])
    with pytest.raises(ValueError, match="2 topics and 3 images"):
        tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=torch.ones(3, 2).long())
    ids, mask = topic_ids([5])
    with pytest.raises(ValueError, match=r"pixel_values must have shape \(num_images, 3, 32, 32\)"):
        tiny_model(input_ids=ids, attention_mask=mask, pixel_values=torch.randn(3, 3, 16, 16))
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        tiny_model(input_ids=ids, attention_mask=mask, pixel_values=torch.randn(3, 32, 32))
    empty, empty_mask = topic_ids([5], [])
    with pytest.raises(ValueError, match=r"empty topic: topic rows \[1\]"):
        tiny_model(input_ids=empty, attention_mask=empty_mask, pixel_values=pixels[:2])
    with pytest.raises(ValueError, match="topic_index has 2 entries for 3 images"):
        tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels, topic_index=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="topic_index must lie in"):
        tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels, topic_index=torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="needs input_ids"):
        tiny_model(input_ids=ids, labels=torch.ones(1, 2).long())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fusion_heads": 3}, "fusion_heads=3 must divide the encoder projection dimension 32"),
        ({"gate_low": 0.8, "gate_high": 0.2}, "gate_low <= gate_high"),
        ({"gate_mode": "always"}, "gate_mode must be one of"),
        ({"fusion_tokens": "patches"}, "fusion_tokens must be one of"),
    ],
)
def test_inconsistent_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlexMuseConfig.tiny(**kwargs)


def test_open_clip_backend_needs_its_config():
    with pytest.raises(ValueError, match="open_clip_config"):
        FlexMuseConfig(encoder_backend="open_clip")
    with pytest.raises(ValueError, match="encoder_backend must be one of"):
        FlexMuseConfig(encoder_backend="jax")


@pytest.mark.parametrize("preset, encoder_type, vocab", [("base", "chinese_clip", 21128), ("base-en", "clip", 49408)])
def test_base_presets_have_the_real_sizes(preset, encoder_type, vocab):
    config = FlexMuseConfig.from_preset(preset)
    assert config.encoder.model_type == encoder_type
    assert config.encoder.text_config.vocab_size == vocab
    assert config.projection_dim == 512
    assert (config.decoder.d_model, config.decoder.vocab_size, config.decoder.num_decoder_layers) == (768, 32128, 12)
    assert not config.tie_word_embeddings  # T5 v1.1 / flan-t5 keep their own LM head
    with torch.device("meta"):
        model = FlexMuseForConditionalGeneration(config)
    n_params = sum(p.numel() for p in model.parameters())
    assert 300e6 < n_params < 360e6
    assert model.lm_head.weight is not model.decoder.embed_tokens.weight


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        FlexMuseConfig.from_preset("huge")


def test_precomputed_features_give_the_same_output(tiny_model, pixels):
    ids, mask = topic_ids([5, 6, 7], [8, 9])
    index = torch.tensor([0, 1, 1])
    labels = torch.randint(3, 384, (3, 6))
    direct = tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels, topic_index=index, labels=labels,
                        gate_mode="open")
    pooled, tokens, _ = tiny_model.encode_topics(ids, mask)
    cached = tiny_model(attention_mask=mask, topic_features=(pooled, tokens),
                        image_features=tiny_model.encode_images(pixels), topic_index=index, labels=labels,
                        gate_mode="open")
    assert torch.equal(direct.logits, cached.logits) and torch.equal(direct.loss, cached.loss)


def test_generate_leaves_a_given_memory_unchanged(tiny_model, pixels):
    """Beam search expands `encoder_outputs` by assigning into it; the caller's memory must keep its
    one row per image, so that it can be reused and its gate figures stay per image."""
    ids, mask = topic_ids([5, 6, 7])
    memory = tiny_model.get_memory(input_ids=ids, pixel_values=pixels, attention_mask=mask, gate_mode="sample",
                                   generator=torch.Generator().manual_seed(0))
    before = {key: value.clone() for key, value in memory.items()}
    first = tiny_model.generate(encoder_outputs=memory, num_beams=2, max_new_tokens=5)
    second = tiny_model.generate(encoder_outputs=memory, num_beams=2, max_new_tokens=5)
    assert first.shape[0] == second.shape[0] == 3
    assert torch.equal(first, second)
    assert memory.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(memory[key], value), key


def test_article_gate_figures_do_not_depend_on_the_beam_count():
    from PIL import Image

    from processing_flexmuse import FlexMuseProcessor
    from writing_flexmuse import write_articles

    model, processor = make_model(), FlexMuseProcessor.tiny()
    images = [Image.new("RGB", (32, 32), colour) for colour in ("red", "blue", "green", "yellow")]
    figures = {}
    for beams in (1, 2, 4):
        article = write_articles(model, processor, ["海边的书店"], [images], gate_seed=7, decode_seed=0,
                                 num_beams=beams, max_new_tokens=4)[0]
        figures[beams] = [(s.metadata["gate_similarity"], s.metadata["gate_keep"]) for s in article.sections]
    assert len({sigma for sigma, _ in figures[1]}) == 4  # four images, four different similarities
    assert figures[1] == figures[2] == figures[4]
