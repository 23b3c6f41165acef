"""FlexMUSE: multi-modal creative writing with msaGate, cross-modality fusion and a T5 writer.

Paper §3. For each (topic T, image V_i) pair a CLIP encoder gives Z^T, Z^V (§3.1); the msaGate
(Eq. 1) may mask the topic; the cross-modality fusion (Eq. 2-4) enriches the visual features with
the (gated) topic; both are projected into the memory a T5 decoder cross-attends to while it writes
paragraph i. All paragraphs of an article are decoded as one batch, and the topic is encoded once.
"""

import copy
from dataclasses import dataclass
from typing import TypedDict, Unpack

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForSeq2SeqLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.loss.loss_utils import fixed_cross_entropy
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.models.t5.modeling_t5 import T5Stack
from transformers.utils import TransformersKwargs, can_return_tuple

try:
    from .configuration_flexmuse import GATE_MODES, FlexMuseConfig
except ImportError:  # imported as a top-level module from a checkout
    from configuration_flexmuse import GATE_MODES, FlexMuseConfig


@dataclass
class MsaGateOutput:
    """Result of the msaGate for a batch of (T, V) pairs."""

    similarity: torch.Tensor  # (B,) sigma of Eq. 1
    keep: torch.Tensor  # (B,) bool, True where the topic reaches the decoder (M = 1)


@dataclass
class FlexMuseMemoryOutput(BaseModelOutput):
    """
    The decoder memory built from the topic and the images.

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(num_images, memory_length, d_model)`):
            Fused visual tokens followed by the gated topic tokens.
        attention_mask (`torch.LongTensor` of shape `(num_images, memory_length)`):
            1 where the decoder may attend; a topic masked by the msaGate is 0 here.
        gate_similarity (`torch.FloatTensor` of shape `(num_images,)`): sigma of Eq. 1.
        gate_keep (`torch.BoolTensor` of shape `(num_images,)`): the msaGate decision (M = 1).
    """

    attention_mask: torch.LongTensor | None = None
    gate_similarity: torch.FloatTensor | None = None
    gate_keep: torch.BoolTensor | None = None


@dataclass
class FlexMuseSeq2SeqLMOutput(Seq2SeqLMOutput):
    """`Seq2SeqLMOutput` plus the memory mask and the msaGate decisions of this forward."""

    encoder_attention_mask: torch.LongTensor | None = None
    gate_similarity: torch.FloatTensor | None = None
    gate_keep: torch.BoolTensor | None = None


class FlexMuseMemoryKwargs(TypedDict, total=False):
    r"""
    How the decoder memory is built from the topics and the images: the keyword arguments that
    `get_memory`, `forward` and `generate` take besides `input_ids`, `attention_mask` and `pixel_values`.

    Attributes:
        topic_index (`torch.LongTensor` of shape `(num_images,)`):
            Topic row of each image, so that several articles go in one batch and each topic is encoded once.
        gate_mode (`str`):
            msaGate (Eq. 1) mode for this call, one of `GATE_MODES`; defaults to `config.gate_mode`.
        gate_keep (`torch.BoolTensor` of shape `(num_images,)`):
            A fixed msaGate decision, e.g. the policy's replayed in an mscDPO reference forward.
        generator (`torch.Generator`):
            Seeds the msaGate thresholds u.
        gate_u (`torch.FloatTensor` of shape `(num_images,)`):
            The msaGate's u in [0, 1), given instead of drawn, so that an example's decision is the same in
            several forwards (mscDPO's policy and reference).
        topic_features (`tuple[torch.Tensor, torch.Tensor]`):
            `(pooled, tokens)` from `encode_topics`, computed earlier (a frozen encoder's features can be
            cached); replaces `input_ids`.
        image_features (`tuple[torch.Tensor, torch.Tensor]`):
            `(pooled, tokens)` from `encode_images`, computed earlier; replaces `pixel_values`.
    """

    topic_index: torch.LongTensor | None
    gate_mode: str | None
    gate_keep: torch.BoolTensor | None
    generator: torch.Generator | None
    gate_u: torch.FloatTensor | None
    topic_features: tuple[torch.Tensor, torch.Tensor] | None
    image_features: tuple[torch.Tensor, torch.Tensor] | None


class FlexMuseKwargs(FlexMuseMemoryKwargs, TransformersKwargs, total=False):
    """`forward`'s keyword arguments: the memory's and transformers' (`num_items_in_batch`, ...)."""


def _split_memory_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """`kwargs` as (the `FlexMuseMemoryKwargs` among them, the others)."""
    memory_keys = FlexMuseMemoryKwargs.__optional_keys__
    memory = {key: value for key, value in kwargs.items() if key in memory_keys}
    return memory, {key: value for key, value in kwargs.items() if key not in memory_keys}


def dtype_kwargs(dtype: torch.dtype | None) -> dict:
    """`from_pretrained` keyword arguments that load in `dtype`; none for None, so that the library's default
    applies."""
    return {} if dtype is None else {"dtype": dtype}


def sequence_log_probs(logits: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
    """Sum over positions of log p(labels) under `logits` (M, T, vocab); -100 labels count 0. (M,)"""
    # float32: bf16 log-probs are off by ~0.01 per token, and DPO compares sums over whole paragraphs
    token_logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    return (token_logp * (labels != -100)).sum(-1)


class MsaGate(nn.Module):
    r"""
    Modality semantic alignment gate, paper Eq. 1.

    sigma = |Z^T . Z^V| / (||Z^T|| ||Z^V||); the topic is masked (M = 0) when sigma >= u with one
    u ~ U(low, high) per pair. Modes: `sample`, `open` (never mask), `closed` (always mask).
    """

    def __init__(self, low: float = 0.0, high: float = 1.0, eps: float = 1e-8):
        super().__init__()
        self.low, self.high, self.eps = low, high, eps

    def similarity(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        # float32: half-precision dot products of 512-d CLIP features lose the third decimal
        text_embeds, image_embeds = text_embeds.float(), image_embeds.float()
        dot = (text_embeds * image_embeds).sum(-1).abs()  # (B,)
        # eps keeps a zero vector at sigma = 0 instead of NaN
        return dot / (text_embeds.norm(dim=-1) * image_embeds.norm(dim=-1)).clamp_min(self.eps)

    def forward(
        self,
        text_embeds: torch.Tensor,  # (B, D)
        image_embeds: torch.Tensor,  # (B, D)
        mode: str = "sample",
        generator: torch.Generator | None = None,
        keep: torch.Tensor | None = None,
        u: torch.Tensor | None = None,
    ) -> MsaGateOutput:
        sigma = self.similarity(text_embeds, image_embeds)
        batch = sigma.shape[0]
        if keep is not None:
            # a decision made earlier (e.g. the policy's, replayed in a DPO reference forward)
            keep = torch.as_tensor(keep, device=sigma.device).bool().reshape(-1)
            if keep.shape[0] != batch:
                raise ValueError(f"gate_keep has {keep.shape[0]} entries for {batch} (topic, image) pairs")
        elif mode == "open":
            keep = torch.ones(batch, dtype=torch.bool, device=sigma.device)
        elif mode == "closed":
            keep = torch.zeros(batch, dtype=torch.bool, device=sigma.device)
        elif mode == "sample":
            if u is None:
                device = generator.device if generator is not None else sigma.device
                u = torch.rand(batch, generator=generator, device=device)
            # u in [0, 1) rescaled to U(low, high); a caller-given u fixes the decision per example
            keep = sigma < self.low + (self.high - self.low) * u.to(sigma.device).reshape(-1)
        else:
            raise ValueError(f"gate_mode must be one of {GATE_MODES}, got {mode!r}")
        return MsaGateOutput(similarity=sigma, keep=keep)


class CrossModalityFusion(nn.Module):
    r"""
    Cross-modality fusion, paper Eq. 2-4, over visual queries and (gated) topic keys/values.

    Q = W^Q ⊙ Z^V, K = W^K ⊙ Z̃^T, V = W^V ⊙ Z̃^T (Eq. 2, element-wise trainable vectors),
    Z^A = softmax(QK^T / sqrt(d_K)) V, lambda_t = sigmoid((W^λ · Z^A_t) Z^V_t) (Eq. 3),
    Z^F_t = (1 - lambda_t) ⊙ Z^A_t + lambda_t ⊙ Z^V_t (Eq. 4). With one token per side this is the
    paper's pooled formulation exactly; with token sequences the attention has something to choose.

    With `lambda_bias` (b), Eq. 3 becomes lambda_t = sigmoid((W^λ · Z^A_t) Z^V_t + b), b learned and
    starting at `lambda_bias`: a large b starts the fusion open, Z^F ≈ Z^V, as gated cross-attention
    in Flamingo starts closed, instead of replacing half of every visual token with topic-attended
    text before anything is learned (b absent: the paper's Eq. 3, lambda = 0.5 at initialisation).
    """

    def __init__(self, dim: int, num_heads: int = 1, lambda_bias: float | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion_heads={num_heads} must divide the feature dimension {dim}")
        self.num_heads = num_heads
        self.w_q = nn.Parameter(torch.ones(dim))
        self.w_k = nn.Parameter(torch.ones(dim))
        self.w_v = nn.Parameter(torch.ones(dim))
        self.w_lambda = nn.Parameter(torch.zeros(dim))
        self.lambda_bias = lambda_bias
        # shape (1,), not a scalar: FSDP's fully_shard refuses 0-d parameters
        self.b_lambda = None if lambda_bias is None else nn.Parameter(torch.full((1,), float(lambda_bias)))

    def forward(
        self,
        image_tokens: torch.Tensor,  # (B, P, D)  Z^V
        text_tokens: torch.Tensor,  # (B, L, D)  Z̃^T, zero where the gate masked the topic
        text_mask: torch.Tensor | None = None,  # (B, L) bool, False on padding
    ) -> torch.Tensor:
        batch, num_queries, dim = image_tokens.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = (self.w_q * image_tokens).view(batch, num_queries, heads, head_dim).transpose(1, 2)  # (B, h, P, d)
        k = (self.w_k * text_tokens).view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, h, L, d)
        v = (self.w_v * text_tokens).view(batch, -1, heads, head_dim).transpose(1, 2)  # (B, h, L, d)
        attn_mask = None if text_mask is None else text_mask[:, None, None, :].bool()  # (B, 1, 1, L)
        z_a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # Eq. 2, scale 1/sqrt(d)
        z_a = z_a.transpose(1, 2).reshape(batch, num_queries, dim)  # (B, P, D)
        corr = (z_a * self.w_lambda).sum(-1, keepdim=True)  # (B, P, 1)  W^λ · (Z^A)^T
        logits = corr * image_tokens if self.b_lambda is None else corr * image_tokens + self.b_lambda
        lam = torch.sigmoid(logits)  # (B, P, D)  Eq. 3
        return (1 - lam) * z_a + lam * image_tokens  # Eq. 4


class FlexMuseMemory(nn.Module):
    """Projects fused visual tokens and gated topic tokens (dim D) into the T5 decoder's memory."""

    def __init__(self, dim: int, d_model: int):
        super().__init__()
        self.visual_proj = nn.Linear(dim, d_model)
        self.text_proj = nn.Linear(dim, d_model)
        self.type_embeddings = nn.Embedding(2, d_model)  # 0: visual, 1: topic
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        visual_tokens: torch.Tensor,  # (B, P, D)
        text_tokens: torch.Tensor,  # (B, L, D)
        text_mask: torch.Tensor,  # (B, L) bool, already AND-ed with the gate decision
    ) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.visual_proj(visual_tokens) + self.type_embeddings.weight[0]  # (B, P, d_model)
        text = self.text_proj(text_tokens) + self.type_embeddings.weight[1]  # (B, L, d_model)
        memory = self.norm(torch.cat([visual, text], dim=1))  # (B, P + L, d_model)
        visual_mask = torch.ones(visual.shape[:2], dtype=torch.long, device=memory.device)
        mask = torch.cat([visual_mask, text_mask.long()], dim=1)  # (B, P + L)
        return memory, mask


class CLIPFeatureEncoder(nn.Module):
    """Multi-modal encoder from transformers (`CLIPModel` or `ChineseCLIPModel`), paper §3.1.

    Pooled embeddings live in CLIP's projection space; token states are projected there with the
    same projection so that Eq. 1-4 compare like with like.
    """

    # generation reads the encoder's input name when it differs from the model's; the topics are it
    main_input_name = "input_ids"

    def __init__(self, config: FlexMuseConfig):
        super().__init__()
        self.clip = AutoModel.from_config(config.encoder)
        text_config = config.encoder.text_config
        self.special_token_ids = {
            getattr(text_config, name, None) for name in ("pad_token_id", "bos_token_id", "eos_token_id")
        } - {None}
        self.image_size = config.encoder.vision_config.image_size

    def text_features(self, input_ids, attention_mask):
        out = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return out.pooler_output, self.clip.text_projection(out.last_hidden_state)  # (A, D), (A, L, D)

    def image_features(self, pixel_values):
        out = self.clip.get_image_features(pixel_values=pixel_values)
        tokens = self.clip.visual_projection(self.clip.vision_model.post_layernorm(out.last_hidden_state))
        return out.pooler_output, tokens  # (N, D), (N, 1 + patches, D)


class OpenCLIPFeatureEncoder(nn.Module):
    """Multi-modal encoder from open_clip (its plain `CLIP` architectures), built from the config."""

    main_input_name = "input_ids"  # as CLIPFeatureEncoder's

    def __init__(self, config: FlexMuseConfig):
        super().__init__()
        try:
            import open_clip
        except ImportError as err:
            raise ImportError("encoder_backend='open_clip' needs `pip install open_clip_torch`") from err
        cfg = copy.deepcopy(config.open_clip_config)
        if cfg.get("custom_text") or "hf_model_name" in cfg.get("text_cfg", {}):
            raise ValueError("open_clip models with a custom (Hugging Face) text tower are not supported")
        cfg.pop("custom_text", None)
        self.model = open_clip.model.CLIP(**cfg)
        self.model.visual.output_tokens = True
        self._text_global_pool = open_clip.transformer.text_global_pool
        self.special_token_ids = {0}  # open_clip's tokenizer pads with 0 and has no other "empty" token
        image_size = self.model.visual.image_size
        self.image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size

    def text_features(self, input_ids, attention_mask):
        model, length = self.model, input_ids.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(input_ids).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = model.ln_final(x)  # (A, L, width)
        pooled = self._text_global_pool(x, input_ids, model.text_pool_type, eos_token_id=model.text_eos_id)
        return self._project(pooled, model.text_projection), self._project(x, model.text_projection)

    def image_features(self, pixel_values):
        pooled, tokens = self.model.visual(pixel_values)  # pooled is projected, tokens are not
        return pooled, self._project(tokens, self.model.visual.proj)

    @staticmethod
    def _project(x, projection):
        if projection is None:
            return x
        return projection(x) if isinstance(projection, nn.Module) else x @ projection


class FlexMusePreTrainedModel(PreTrainedModel):
    config_class = FlexMuseConfig
    config: FlexMuseConfig
    base_model_prefix = "flexmuse"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["T5Block", "CLIPEncoderLayer", "ChineseCLIPVisionLayer", "ChineseCLIPTextLayer"]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, CrossModalityFusion):
            # identity-like element-wise weights: fusion starts as plain attention over the topic
            for weight in (module.w_q, module.w_k, module.w_v):
                init.ones_(weight)
            init.normal_(module.w_lambda, mean=0.0, std=self.config.initializer_range)
            if module.b_lambda is not None:
                init.constant_(module.b_lambda, module.lambda_bias)
        elif type(module).__module__.startswith("open_clip") and isinstance(getattr(module, "attn_mask", None),
                                                                           torch.Tensor):
            # open_clip's causal text mask is a non-persistent buffer: loading must rebuild it
            size = module.attn_mask.shape[-1]
            init.copy_(module.attn_mask, torch.full((size, size), float("-inf")).triu_(1))


class FlexMuseForConditionalGeneration(FlexMusePreTrainedModel, GenerationMixin):
    r"""
    FlexMUSE (paper Fig. 2): CLIP encoder → msaGate (Eq. 1) → cross-modality fusion (Eq. 2-4) →
    memory → T5 decoder writing one paragraph per (topic, image) pair.

    Inputs are a batch of topics `input_ids` (A, L) (CLIP tokenizer) and of images `pixel_values`
    (N, 3, H, W); `topic_index` (N,) says which topic each image belongs to, so that a topic is
    encoded once however many images it has. Without `topic_index`, A must equal N, or A = 1 (one
    article: the topic serves every image).
    """

    _tied_weights_keys = {"lm_head.weight": "decoder.embed_tokens.weight"}

    def __init__(self, config: FlexMuseConfig):
        super().__init__(config)
        if config.encoder_backend == "open_clip":
            self.encoder = OpenCLIPFeatureEncoder(config)
        else:
            self.encoder = CLIPFeatureEncoder(config)
        self.gate = MsaGate(config.gate_low, config.gate_high)
        self.fusion = (CrossModalityFusion(config.projection_dim, config.fusion_heads, config.fusion_lambda_bias)
                       if config.use_fusion else None)
        self.memory = FlexMuseMemory(config.projection_dim, config.decoder.d_model)

        decoder_config = copy.deepcopy(config.decoder)
        decoder_config.is_decoder = True
        decoder_config.num_layers = decoder_config.num_decoder_layers
        self.decoder = T5Stack(decoder_config)
        self.lm_head = nn.Linear(config.decoder.d_model, config.decoder.vocab_size, bias=False)
        self.post_init()
        self.set_encoder_trainable(not config.freeze_encoder)

    def get_input_embeddings(self):
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value):
        self.decoder.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    # ------------------------------------------------------------------ encoding
    @property
    def encoder_trainable(self) -> bool:
        """Whether the CLIP encoder receives gradients (`config.freeze_encoder` is the opposite)."""
        return any(p.requires_grad for p in self.encoder.parameters())

    def set_encoder_trainable(self, trainable: bool) -> None:
        """Freeze (the paper's setting) or unfreeze the CLIP encoder, and record it in the config so
        that a saved model loads the same way. The one place the encoder's trainability is set."""
        self.encoder.requires_grad_(trainable)
        self.config.freeze_encoder = not trainable

    def _encoder_grad(self) -> bool:
        return torch.is_grad_enabled() and self.encoder_trainable

    def encode_topics(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None):
        """CLIP text tower, once per topic. Returns pooled Z^T (A, D), tokens (A, L, D), mask (A, L)."""
        if input_ids is None or input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError("input_ids must be a (num_topics, length) tensor of topic token ids")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        content = attention_mask.bool() & ~torch.isin(
            input_ids, torch.tensor(sorted(self.encoder.special_token_ids), device=input_ids.device)
        )
        empty = (~content.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"empty topic: topic rows {empty} hold no token besides special/padding tokens")
        with torch.set_grad_enabled(self._encoder_grad()):
            pooled, tokens = self.encoder.text_features(input_ids, attention_mask)
        return pooled, tokens, attention_mask.bool()

    def encode_images(self, pixel_values: torch.FloatTensor):
        """CLIP vision tower. Returns pooled Z^V (N, D) and projected patch tokens (N, P, D)."""
        size = self.encoder.image_size
        if pixel_values is None or pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(f"pixel_values must have shape (num_images, 3, {size}, {size}), got {shape}")
        pixel_values = pixel_values.to(self.dtype)
        with torch.set_grad_enabled(self._encoder_grad()):
            return self.encoder.image_features(pixel_values)

    @staticmethod
    def _resolve_topic_index(num_topics: int, num_images: int, topic_index, device) -> torch.LongTensor:
        if topic_index is None:
            if num_topics == num_images:
                return torch.arange(num_images, device=device)
            if num_topics == 1:
                return torch.zeros(num_images, dtype=torch.long, device=device)
            raise ValueError(
                f"got {num_topics} topics and {num_images} images: give one topic per image, one topic for all, "
                "or topic_index"
            )
        topic_index = torch.as_tensor(topic_index, device=device).long().reshape(-1)
        if topic_index.shape[0] != num_images:
            raise ValueError(f"topic_index has {topic_index.shape[0]} entries for {num_images} images")
        if topic_index.numel() and (topic_index.min() < 0 or topic_index.max() >= num_topics):
            raise ValueError(f"topic_index must lie in [0, {num_topics}), got {topic_index.tolist()}")
        return topic_index

    def get_memory(
        self,
        *,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[FlexMuseMemoryKwargs],
    ) -> FlexMuseMemoryOutput:
        """Encode topics `input_ids` (A, L) and images `pixel_values` (N, 3, H, W) and build the decoder
        memory, one row per image. `kwargs`: [`FlexMuseMemoryKwargs`]."""
        unknown = kwargs.keys() - FlexMuseMemoryKwargs.__optional_keys__
        if unknown:
            raise TypeError(f"get_memory() got unexpected keyword arguments {sorted(unknown)}")
        topic_features, image_features = kwargs.get("topic_features"), kwargs.get("image_features")
        if topic_features is None:
            topic_pooled, topic_tokens, topic_mask = self.encode_topics(input_ids, attention_mask)
        else:
            topic_pooled, topic_tokens = (t.to(self.dtype) for t in topic_features)
            topic_mask = torch.ones(topic_tokens.shape[:2], dtype=torch.bool, device=topic_tokens.device) \
                if attention_mask is None else attention_mask.bool()
        if image_features is None:
            if pixel_values is None:
                raise ValueError("FlexMUSE needs pixel_values (images) or image_features")
            image_pooled, image_tokens = self.encode_images(pixel_values)
        else:
            image_pooled, image_tokens = (t.to(self.dtype) for t in image_features)
        index = self._resolve_topic_index(topic_pooled.shape[0], image_pooled.shape[0], kwargs.get("topic_index"),
                                          topic_pooled.device)
        z_t, t_tokens, t_mask = topic_pooled[index], topic_tokens[index], topic_mask[index]  # per image

        if self.config.use_gate:
            gate = self.gate(z_t, image_pooled, mode=kwargs.get("gate_mode") or self.config.gate_mode,
                             generator=kwargs.get("generator"), keep=kwargs.get("gate_keep"), u=kwargs.get("gate_u"))
        else:
            gate = MsaGateOutput(similarity=self.gate.similarity(z_t, image_pooled),
                                 keep=torch.ones(z_t.shape[0], dtype=torch.bool, device=z_t.device))
        keep = gate.keep.to(t_tokens.dtype)

        if self.config.fusion_tokens == "pooled":
            visual, text = image_pooled[:, None], (z_t * keep[:, None])[:, None]  # (N, 1, D) each
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        else:
            visual, text, text_mask = image_tokens, t_tokens * keep[:, None, None], t_mask
        if self.fusion is not None:
            # the fusion reads the gated topic Z̃^T = M ⊙ Z^T (a masked topic contributes zeros)
            visual = self.fusion(visual, text, text_mask)
        # a masked topic is removed from the memory through the attention mask, not only zeroed
        memory, memory_mask = self.memory(visual, text, text_mask & gate.keep[:, None])
        return FlexMuseMemoryOutput(
            last_hidden_state=memory,
            attention_mask=memory_mask,
            gate_similarity=gate.similarity,
            gate_keep=gate.keep,
        )

    # ------------------------------------------------------------------ decoding
    # Public: the mscDPO trainer shifts the labels it pads itself.
    # Copied from transformers.models.t5.modeling_t5.T5PreTrainedModel._shift_right with _shift_right->shift_right
    def shift_right(self, input_ids):
        decoder_start_token_id = self.config.decoder_start_token_id
        pad_token_id = self.config.pad_token_id

        if decoder_start_token_id is None:
            raise ValueError(
                "self.model.config.decoder_start_token_id has to be defined. In T5 it is usually set to the pad_token_id. "
                "See T5 docs for more information."
            )

        shifted_input_ids = input_ids.new_zeros(input_ids.shape)
        shifted_input_ids[..., 1:] = input_ids[..., :-1].clone()
        shifted_input_ids[..., 0] = decoder_start_token_id

        if pad_token_id is None:
            raise ValueError("self.model.config.pad_token_id has to be defined.")
        # replace possible -100 values in labels by `pad_token_id`
        shifted_input_ids.masked_fill_(shifted_input_ids == -100, pad_token_id)

        return shifted_input_ids

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor):
        return self.shift_right(labels)

    def _decoder_memory(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.FloatTensor | None,
        encoder_outputs: FlexMuseMemoryOutput | None,
        memory_index: torch.LongTensor | None,
        memory_kwargs: FlexMuseMemoryKwargs,
    ) -> tuple[FlexMuseMemoryOutput, torch.Tensor, torch.Tensor]:
        """`encoder_outputs` (built by `get_memory` when not given), and the memory (M, S, d_model) and
        mask (M, S) the decoder rows cross-attend to."""
        if encoder_outputs is None:
            if (input_ids is None and memory_kwargs.get("topic_features") is None) or (
                pixel_values is None and memory_kwargs.get("image_features") is None
            ):
                raise ValueError("FlexMUSE needs input_ids (topics) and pixel_values (images), or encoder_outputs")
            encoder_outputs = self.get_memory(input_ids=input_ids, pixel_values=pixel_values,
                                              attention_mask=attention_mask, **memory_kwargs)
            memory_mask = encoder_outputs.attention_mask
        else:
            # generation passes the memory's mask expanded for beams, as T5 does
            memory_mask = attention_mask if attention_mask is not None else encoder_outputs.attention_mask
        memory = encoder_outputs.last_hidden_state  # (N, S, d_model)
        if memory_index is not None:
            # each image's memory is built once however many paragraphs are scored against it
            memory, memory_mask = memory[memory_index], memory_mask[memory_index]  # (M, S, d_model), (M, S)
        return encoder_outputs, memory, memory_mask

    @staticmethod
    def _loss(logits: torch.Tensor, labels: torch.LongTensor, num_items_in_batch=None) -> torch.Tensor:
        """Token cross-entropy of `logits` (M, T, vocab) against `labels` (M, T), -100 ignored: the mean,
        or the sum divided by `num_items_in_batch`, since Trainer, which passes the label-token count of the
        whole accumulated (and gathered) batch, then neither divides by the accumulation steps nor averages
        over processes itself."""
        # float32 as in transformers' LM losses, whatever the weights' precision
        return fixed_cross_entropy(logits.float().flatten(0, 1), labels.to(logits.device).flatten(),
                                   num_items_in_batch=num_items_in_batch, ignore_index=-100)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: FlexMuseMemoryOutput | None = None,
        past_key_values: Cache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        memory_index: torch.LongTensor | None = None,
        **kwargs: Unpack[FlexMuseKwargs],
    ) -> FlexMuseSeq2SeqLMOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(num_topics, topic_length)`):
                Topic tokens from the CLIP tokenizer.
            attention_mask (`torch.Tensor`):
                The topics' mask `(num_topics, topic_length)`; when `encoder_outputs` is given (as
                during generation) it is the memory's mask `(num_images, memory_length)`, as in T5.
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, H, W)`): CLIP-processed images.
            decoder_input_ids (`torch.LongTensor` of shape `(num_rows, target_length)`, *optional*):
                Defaults to `labels` shifted right.
            encoder_outputs (`FlexMuseMemoryOutput`, *optional*): a memory from `get_memory`, used
                instead of encoding the inputs.
            labels (`torch.LongTensor` of shape `(num_rows, target_length)`, *optional*):
                Paragraph tokens; -100 is ignored by the loss.
            memory_index (`torch.LongTensor` of shape `(num_rows,)`, *optional*): decoder row m reads
                memory row `memory_index[m]`, so several paragraphs (mscDPO's chosen and rejected) are
                scored against one image's memory, built once.
            kwargs: the [`FlexMuseMemoryKwargs`] (`topic_index`, `gate_mode`, `gate_keep`, ...), and
                transformers' [`TransformersKwargs`]: with `num_items_in_batch`, the label tokens of the
                whole accumulated batch (`Trainer` passes it), the loss is this batch's token sum divided
                by it, so that gradient accumulation and several processes give the big batch's step.
        """
        memory_kwargs, decoder_kwargs = _split_memory_kwargs(kwargs)
        num_items_in_batch = decoder_kwargs.pop("num_items_in_batch", None)
        encoder_outputs, memory, memory_mask = self._decoder_memory(
            input_ids, attention_mask, pixel_values, encoder_outputs, memory_index, memory_kwargs
        )
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = self.shift_right(labels)  # (M, T)
        if use_cache is None:
            use_cache = labels is None and self.config.decoder.use_cache
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=memory,
            encoder_attention_mask=memory_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            **decoder_kwargs,
        )
        hidden = decoder_outputs.last_hidden_state  # (M, T, d_model)
        if getattr(self.config.decoder, "scale_decoder_outputs", False):
            hidden = hidden * (self.config.decoder.d_model**-0.5)  # original T5 with a tied head
        logits = self.lm_head(hidden)  # (M, T, vocab)
        loss = None if labels is None else self._loss(logits, labels, num_items_in_batch)

        return FlexMuseSeq2SeqLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=decoder_outputs.past_key_values,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_attention_mask=memory_mask,
            gate_similarity=getattr(encoder_outputs, "gate_similarity", None),
            gate_keep=getattr(encoder_outputs, "gate_keep", None),
        )

    def paragraph_log_probs(
        self,
        labels: torch.LongTensor,
        encoder_outputs: FlexMuseMemoryOutput,
        memory_index: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        r"""
        Sum of token log-probabilities of each paragraph in `labels` (M, T) (-100 = padding), given
        the memory row `memory_index[m]` (defaults to row m). Scoring several paragraphs against one
        memory (alignment accuracy, mscDPO's chosen and rejected) reuses the memory, no re-encoding.
        Returns (M,).
        """
        logits = self(encoder_outputs=encoder_outputs, attention_mask=encoder_outputs.attention_mask,
                      labels=labels, memory_index=memory_index, use_cache=False).logits  # (M, T, vocab)
        return sequence_log_probs(logits, labels)

    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        encoder_outputs: FlexMuseMemoryOutput | None = None,
        **kwargs,
    ):
        r"""
        Write one paragraph per image, all images of all articles decoded in one batch.

        Takes the inputs of `forward` with its [`FlexMuseMemoryKwargs`] (or a ready `encoder_outputs`
        from `get_memory`) and every option of [`~GenerationMixin.generate`] (`max_new_tokens`,
        `num_beams`, `do_sample`, ...). Returns what `GenerationMixin.generate` returns, one row per
        image (times `num_return_sequences`).
        """
        memory_kwargs, generate_kwargs = _split_memory_kwargs(kwargs)
        if encoder_outputs is None:
            with torch.no_grad():
                encoder_outputs = self.get_memory(input_ids=input_ids, pixel_values=pixel_values,
                                                  attention_mask=attention_mask, **memory_kwargs)
            attention_mask = None
        if attention_mask is None:
            attention_mask = encoder_outputs.attention_mask
        # GenerationMixin expands `encoder_outputs` for beams by assigning into it: a shallow copy keeps
        # the caller's memory (and its per-image gate figures) as it was
        encoder_outputs = type(encoder_outputs)(**encoder_outputs)
        return super().generate(encoder_outputs=encoder_outputs, attention_mask=attention_mask, **generate_kwargs)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_components(
        cls,
        encoder: str,
        decoder,
        dtype: torch.dtype | None = None,
        **config_kwargs,
    ) -> "FlexMuseForConditionalGeneration":
        r"""
        Build FlexMUSE from a pretrained CLIP / Chinese-CLIP checkpoint and a pretrained T5 checkpoint
        (hub ids or local directories; `decoder` may also be a `T5Config`, for a writer with random
        weights, as the tiny preset's). The fusion, memory projections are newly initialised; the
        T5 encoder is dropped.

        Example: `FlexMuseForConditionalGeneration.from_components("OFA-Sys/chinese-clip-vit-base-patch16",
        "Langboat/mengzi-t5-base")`.
        """
        from transformers import T5Config, T5ForConditionalGeneration

        load_kwargs = dtype_kwargs(dtype)
        clip = AutoModel.from_pretrained(encoder, **load_kwargs)
        if not (hasattr(clip, "get_text_features") and hasattr(clip, "get_image_features")):
            raise ValueError(f"{encoder!r} is a {type(clip).__name__}, not a CLIP-style dual encoder")
        if isinstance(decoder, T5Config):
            t5 = T5ForConditionalGeneration(decoder).to(clip.dtype)
        else:
            t5 = T5ForConditionalGeneration.from_pretrained(decoder, **load_kwargs)
        tied = t5.lm_head.weight.data_ptr() == t5.get_input_embeddings().weight.data_ptr()
        config = FlexMuseConfig(encoder=clip.config, decoder=t5.config, tie_word_embeddings=tied, **config_kwargs)
        with torch.device("meta"):
            model = cls(config)
        model.encoder.clip = clip
        model.decoder = t5.decoder
        model.lm_head = t5.lm_head
        del t5.encoder
        # only the new modules are on the meta device: materialise and initialise them
        for module in (model.fusion, model.memory):
            if module is not None:
                module.to_empty(device=clip.device)
                module.apply(model._init_weights)
        if dtype is not None:
            model.to(dtype)
        model.set_encoder_trainable(not config.freeze_encoder)
        model.config.name_or_path = ""
        return model


FlexMuseConfig.register_for_auto_class()
FlexMuseForConditionalGeneration.register_for_auto_class("AutoModel")
AutoModel.register(FlexMuseConfig, FlexMuseForConditionalGeneration, exist_ok=True)
AutoModelForSeq2SeqLM.register(FlexMuseConfig, FlexMuseForConditionalGeneration, exist_ok=True)

__all__ = [
    "CrossModalityFusion",
    "FlexMuseForConditionalGeneration",
    "FlexMuseMemoryKwargs",
    "FlexMuseMemoryOutput",
    "FlexMusePreTrainedModel",
    "MsaGate",
    "sequence_log_probs",
]
