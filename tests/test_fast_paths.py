"""The fast paths stay on: SDPA attention, the KV cache in generation, half precision kept half."""

import pytest
import torch

from helpers import make_model, topic_ids
from modeling_flexmuse import FlexMuseForConditionalGeneration


def attention_implementations(model):
    return {model.decoder.config._attn_implementation, model.encoder.clip.config._attn_implementation,
            model.encoder.clip.config.text_config._attn_implementation,
            model.encoder.clip.config.vision_config._attn_implementation}


def test_sdpa_by_default_and_same_result_as_eager(tmp_path, pixels):
    make_model().save_pretrained(tmp_path)
    sdpa = FlexMuseForConditionalGeneration.from_pretrained(tmp_path).eval()
    eager = FlexMuseForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert attention_implementations(sdpa) == {"sdpa"}
    assert attention_implementations(eager) == {"eager"}

    ids, mask = topic_ids([70, 80, 90, 100, 110])
    labels = torch.randint(3, 200, (3, 9), generator=torch.Generator().manual_seed(0))
    inputs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels, gate_mode="open")
    with torch.no_grad():
        torch.testing.assert_close(sdpa(**inputs).logits, eager(**inputs).logits, atol=1e-5, rtol=1e-4)


def test_generation_uses_the_kv_cache(tiny_model, pixels, monkeypatch):
    ids, mask = topic_ids([70, 80, 90])
    decode = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, gate_mode="open", max_new_tokens=6,
                  min_new_tokens=6, do_sample=False)
    lengths = []
    forward = type(tiny_model.decoder).forward

    def record(decoder, input_ids=None, **kwargs):
        lengths.append(input_ids.shape[1])
        return forward(decoder, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(type(tiny_model.decoder), "forward", record)
    with torch.no_grad():
        cached = tiny_model.generate(**decode)
    # with the cache every step feeds the decoder one new token, not the whole prefix again
    assert lengths == [1] * 6
    lengths.clear()
    with torch.no_grad():
        uncached = tiny_model.generate(**decode, use_cache=False)
    assert lengths == list(range(1, 7))
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_not_upcast(dtype, pixels):
    model = make_model().to(dtype)
    ids, mask = topic_ids([70, 80, 90])
    labels = torch.randint(3, 200, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        memory = model.get_memory(input_ids=ids, pixel_values=pixels, attention_mask=mask, gate_mode="open")  # float32 pixels, as processors give them
        out = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels, gate_mode="open")
    assert memory.last_hidden_state.dtype == dtype
    assert out.logits.dtype == dtype
    # the gate's similarity is float32 on purpose (Eq. 1 compares it with u to three decimals)
    assert memory.gate_similarity.dtype == torch.float32
    assert torch.isfinite(out.loss)
