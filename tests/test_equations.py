"""msaGate (Eq. 1) and cross-modality fusion (Eq. 2-4) against hand-computed values."""

import math

import pytest
import torch

from configuration_flexmuse import FlexMuseConfig
from modeling_flexmuse import CrossModalityFusion, FlexMuseForConditionalGeneration, MsaGate


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@pytest.mark.parametrize(
    "z_t, z_v, sigma",
    [
        ([3.0, 4.0], [4.0, 3.0], 24 / 25),  # cos = 24/25
        ([1.0, 0.0], [-1.0, 0.0], 1.0),  # |cos| : opposite directions are equally "aligned"
        ([3.0, 4.0], [-4.0, 3.0], 0.0),  # orthogonal
        ([1.0, 2.0, 2.0], [2.0, -1.0, 2.0], 4 / 9),  # dot 4, norms 3 and 3
    ],
)
def test_eq1_similarity(z_t, z_v, sigma):
    got = MsaGate().similarity(torch.tensor([z_t]), torch.tensor([z_v]))
    assert got.item() == pytest.approx(sigma, abs=1e-6)


def test_eq1_zero_vectors_give_no_nan():
    gate = MsaGate()
    zeros = torch.zeros(2, 4)
    out = gate(zeros, torch.randn(2, 4), mode="sample", generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.similarity).all() and (out.similarity == 0).all()
    assert out.keep.all()  # sigma = 0 < u: nothing redundant to mask


def _pairs_with_similarity(sigma, n):
    z_t = torch.tensor([[1.0, 0.0]]).repeat(n, 1)
    z_v = torch.tensor([[sigma, math.sqrt(1 - sigma**2)]]).repeat(n, 1)
    return z_t, z_v


@pytest.mark.parametrize("sigma, low, high", [(0.3, 0.0, 1.0), (0.7, 0.0, 1.0), (0.3, 0.2, 0.6)])
def test_gate_masking_rate_matches_sigma(sigma, low, high):
    n = 10_000
    z_t, z_v = _pairs_with_similarity(sigma, n)
    out = MsaGate(low, high)(z_t, z_v, mode="sample", generator=torch.Generator().manual_seed(123))
    expected = min(max((sigma - low) / (high - low), 0.0), 1.0)  # P(u <= sigma), u ~ U(low, high)
    bound = 4 * math.sqrt(expected * (1 - expected) / n)  # 4 binomial standard deviations
    rate = 1 - out.keep.float().mean().item()
    assert abs(rate - expected) <= bound, (rate, expected, bound)


def test_gate_sample_reproducible_with_generator():
    z_t, z_v = _pairs_with_similarity(0.5, 256)
    gate = MsaGate()
    a = gate(z_t, z_v, generator=torch.Generator().manual_seed(7)).keep
    b = gate(z_t, z_v, generator=torch.Generator().manual_seed(7)).keep
    c = gate(z_t, z_v, generator=torch.Generator().manual_seed(8)).keep
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_gate_open_and_closed():
    z_t, z_v = _pairs_with_similarity(0.99, 8)
    gate = MsaGate()
    assert gate(z_t, z_v, mode="open").keep.all()
    assert not gate(z_t, z_v, mode="closed").keep.any()
    with pytest.raises(ValueError, match=r"gate_mode must be one of \('sample', 'open', 'closed'\)"):
        gate(z_t, z_v, mode="sometimes")


def test_gate_replays_a_given_decision():
    z_t, z_v = _pairs_with_similarity(0.5, 3)
    keep = torch.tensor([True, False, True])
    assert torch.equal(MsaGate()(z_t, z_v, keep=keep).keep, keep)
    with pytest.raises(ValueError, match="gate_keep has 2 entries for 3"):
        MsaGate()(z_t, z_v, keep=keep[:2])


def _fusion(w_q, w_k, w_v, w_lambda, heads=1):
    fusion = CrossModalityFusion(len(w_q), heads)
    with torch.no_grad():
        for name, value in zip(("w_q", "w_k", "w_v", "w_lambda"), (w_q, w_k, w_v, w_lambda)):
            getattr(fusion, name).copy_(torch.tensor(value))
    return fusion


def test_eq2_4_pooled_by_hand():
    # one pooled vector per modality: softmax over one key is 1, so Z^A = W^V ⊙ Z^T (Eq. 2)
    z_v, z_t = [1.0, 2.0], [3.0, -1.0]
    w_q, w_k, w_v, w_l = [0.5, -1.0], [2.0, 1.0], [0.5, 2.0], [1.0, 0.0]
    fusion = _fusion(w_q, w_k, w_v, w_l)
    z_a = [w_v[0] * z_t[0], w_v[1] * z_t[1]]  # [1.5, -2.0]
    corr = w_l[0] * z_a[0] + w_l[1] * z_a[1]  # W^λ · (Z^A)^T = 1.5
    lam = [sigmoid(corr * z_v[0]), sigmoid(corr * z_v[1])]  # Eq. 3
    z_f = [(1 - lam[i]) * z_a[i] + lam[i] * z_v[i] for i in range(2)]  # Eq. 4
    assert z_f == pytest.approx([1.0912127, 1.8102964], abs=1e-6)
    got = fusion(torch.tensor([[z_v]]), torch.tensor([[z_t]]))
    assert got[0, 0].tolist() == pytest.approx(z_f, abs=1e-6)


def test_eq3_with_a_bias_by_hand_and_open_at_initialisation():
    z_v, z_t = [1.0, 2.0], [3.0, -1.0]
    fusion = CrossModalityFusion(2, lambda_bias=1.5)
    with torch.no_grad():
        for name, value in zip(("w_q", "w_k", "w_v", "w_lambda"), ([0.5, -1.0], [2.0, 1.0], [0.5, 2.0], [1.0, 0.0])):
            getattr(fusion, name).copy_(torch.tensor(value))
    z_a, corr = [1.5, -2.0], 1.5  # as in the pooled example above
    lam = [sigmoid(corr * z_v[i] + 1.5) for i in range(2)]  # Eq. 3 plus b
    z_f = [(1 - lam[i]) * z_a[i] + lam[i] * z_v[i] for i in range(2)]
    assert fusion(torch.tensor([[z_v]]), torch.tensor([[z_t]]))[0, 0].tolist() == pytest.approx(z_f, abs=1e-6)
    assert fusion.b_lambda.requires_grad  # learned

    # initialised in a model: the paper's form mixes half the topic in, b = 4 lets the image through
    torch.manual_seed(0)
    z_v, z_t = torch.randn(2, 5, 32), torch.randn(2, 3, 32)
    changed = {}
    for bias in (None, 4.0):
        model = FlexMuseForConditionalGeneration(FlexMuseConfig.tiny(fusion_lambda_bias=bias))
        changed[bias] = ((model.fusion(z_v, z_t) - z_v).norm() / z_v.norm()).item()
    assert changed[4.0] < 0.05 < 0.3 < changed[None]


def test_eq2_token_level_attention_by_hand():
    # one visual query over two topic tokens: the softmax now weighs the keys (Eq. 2)
    z_v = [1.0, 0.0]
    z_t = [[2.0, 0.0], [0.0, 1.0]]
    fusion = _fusion([1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.5, 0.5])
    scores = [sum(z_v[d] * z_t[k][d] for d in range(2)) / math.sqrt(2) for k in range(2)]
    weights = [math.exp(s) / sum(math.exp(x) for x in scores) for s in scores]
    z_a = [sum(weights[k] * z_t[k][d] for k in range(2)) for d in range(2)]
    corr = 0.5 * z_a[0] + 0.5 * z_a[1]
    lam = [sigmoid(corr * z_v[d]) for d in range(2)]
    z_f = [(1 - lam[d]) * z_a[d] + lam[d] * z_v[d] for d in range(2)]
    got = fusion(torch.tensor([[z_v]]), torch.tensor([z_t]))
    assert got[0, 0].tolist() == pytest.approx(z_f, abs=1e-6)


def test_padding_tokens_are_not_attended():
    fusion = _fusion([1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.5, 0.5])
    z_v = torch.tensor([[[1.0, 0.0]]])
    short = fusion(z_v, torch.tensor([[[2.0, 0.0]]]))
    padded = fusion(z_v, torch.tensor([[[2.0, 0.0], [9.0, 9.0]]]), torch.tensor([[True, False]]))
    assert torch.allclose(short, padded, atol=1e-6)


def test_token_level_with_one_token_equals_pooled():
    torch.manual_seed(0)
    dim = 8
    fusion = CrossModalityFusion(dim, num_heads=2)
    with torch.no_grad():
        for p in fusion.parameters():
            p.normal_()
    z_v, z_t = torch.randn(4, dim), torch.randn(4, dim)
    pooled_by_hand = []
    for v, t in zip(z_v, z_t):  # the paper's pooled equations, written out per pair
        z_a = fusion.w_v * t
        lam = torch.sigmoid((fusion.w_lambda @ z_a) * v)
        pooled_by_hand.append((1 - lam) * z_a + lam * v)
    got = fusion(z_v[:, None], z_t[:, None])[:, 0]
    assert torch.allclose(got, torch.stack(pooled_by_hand), atol=1e-6)


def test_fusion_heads_must_divide_dim():
    with pytest.raises(ValueError, match="must divide"):
        CrossModalityFusion(10, num_heads=3)
