"""FlexMUSE configuration.

A FlexMUSE model is a CLIP multi-modal encoder (paper §3.1), the msaGate (Eq. 1), the
cross-modality fusion (Eq. 2-4) and a T5 decoder that writes one paragraph per (topic, image) pair.
"""

import copy
from typing import Any

from transformers import AutoConfig, PretrainedConfig, T5Config
from transformers.configuration_utils import SubConfigSpec

GATE_MODES = ("sample", "open", "closed")
FUSION_TOKENS = ("token", "pooled")
ENCODER_BACKENDS = ("transformers", "open_clip")

# Hub checkpoints each preset is built from (README, "Presets"). The sizes below are those checkpoints'
# published configs written out, so a preset config (and a randomly initialised model of the
# real size, as the benchmarks use) needs no download.
PRESET_COMPONENTS = {
    "tiny": {"encoder": None, "decoder": None, "t2i": None},
    "base": {
        "encoder": "OFA-Sys/chinese-clip-vit-base-patch16",
        "decoder": "Langboat/mengzi-t5-base",
        "t2i": "IDEA-CCNL/Taiyi-Stable-Diffusion-1B-Chinese-v0.1",
    },
    "base-en": {
        "encoder": "openai/clip-vit-base-patch16",
        "decoder": "google/flan-t5-base",
        "t2i": "stabilityai/sd-turbo",
    },
}

AUTO_MAP = {
    "AutoConfig": "configuration_flexmuse.FlexMuseConfig",
    "AutoModel": "modeling_flexmuse.FlexMuseForConditionalGeneration",
    "AutoModelForSeq2SeqLM": "modeling_flexmuse.FlexMuseForConditionalGeneration",
}

_VIT_B16 = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 16,
    "projection_dim": 512,
}
_T5_BASE_V11 = {
    "vocab_size": 32128,
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 2048,
    "num_layers": 12,
    "num_decoder_layers": 12,
    "num_heads": 12,
    "feed_forward_proj": "gated-gelu",
    "tie_word_embeddings": False,
    "decoder_start_token_id": 0,
}


class FlexMuseConfig(PretrainedConfig):
    r"""
    Configuration of [`FlexMuseForConditionalGeneration`].

    Args:
        encoder (`dict` or `PretrainedConfig`, *optional*):
            Config of the multi-modal encoder when `encoder_backend="transformers"`: a `CLIPConfig` or a
            `ChineseCLIPConfig` (a dict needs its `model_type`). Defaults to a `CLIPConfig`.
        decoder (`dict` or `T5Config`, *optional*):
            Config of the T5 writer. Only its decoder stack and LM head are built.
        encoder_backend (`str`, *optional*, defaults to `"transformers"`):
            `"transformers"` (CLIP / Chinese-CLIP from transformers) or `"open_clip"` (open_clip_torch).
        open_clip_model_name (`str`, *optional*):
            open_clip architecture name (e.g. `"ViT-B-16"`), used for its tokenizer and as a label.
        open_clip_config (`dict`, *optional*):
            open_clip model config (`embed_dim`, `vision_cfg`, `text_cfg`), so open_clip builds the
            model without downloading anything. Required with the open_clip backend.
        gate_mode (`str`, *optional*, defaults to `"sample"`):
            msaGate (Eq. 1) mode: `"sample"` masks the topic when sigma >= u with u ~ U(gate_low, gate_high);
            `"open"` never masks; `"closed"` always masks.
        gate_low, gate_high (`float`, *optional*, defaults to 0 and 1):
            Bounds of the threshold distribution (the paper tunes it at inference).
        fusion_tokens (`str`, *optional*, defaults to `"pooled"`):
            `"pooled"`: the paper's Eq. 2-4 exactly, on one pooled vector per modality, and that is what
            the decoder's memory holds. `"token"`: the same equations over image-patch queries and
            topic-token keys/values, with the patch and topic tokens as the memory.
        fusion_heads (`int`, *optional*, defaults to 1):
            Attention heads of the fusion; must divide the projection dimension.
        fusion_lambda_bias (`float`, *optional*, defaults to 4.0):
            A learned bias b in Eq. 3's gate, λ = σ((W^λ·Z^A)·Z^V + b), starting at this value (4:
            λ ≈ 0.98, so the visual features pass through until the fusion has learned what to take
            from the topic, as Flamingo's gated cross-attention starts closed). None: the paper's Eq. 3
            exactly, λ = 0.5 at initialisation.

        Why these defaults (bench/RESULTS.md, bench_fusion: tiny preset, 3 seeds, 600 SFT steps on the
        frozen corpus-pretrained CLIP, 50 held-out articles): the pooled memory beat the patch tokens
        (all three attributes correct 0.966 against 0.857 without fusion); over the same memory the
        paper's start lost 0.040 (pooled) and 0.058 (token), within the spread of 3 seeds, and the
        open start nothing (pooled: +0.002 [-0.007, +0.012]). The fusion shows no gain on that corpus;
        the paper's form is one setting away (`fusion_lambda_bias=None`). For real photographs, of
        which one vector holds less, the token form is not measured here.
        use_gate, use_fusion (`bool`, *optional*, defaults to `True`):
            Ablation switches (paper Table 2). Without fusion the visual features reach the memory as
            they are.
        freeze_encoder (`bool`, *optional*, defaults to `True`):
            Keep the CLIP encoder frozen (paper setup).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal initialisation of the projections.
    """

    model_type = "flexmuse"
    sub_configs_defaults = {
        "encoder": SubConfigSpec(config_class=AutoConfig, model_type="clip", optional=True),
        "decoder": T5Config,
    }

    def __init__(
        self,
        encoder: Any | None = None,
        decoder: Any | None = None,
        encoder_backend: str = "transformers",
        open_clip_model_name: str | None = None,
        open_clip_config: dict | None = None,
        gate_mode: str = "sample",
        gate_low: float = 0.0,
        gate_high: float = 1.0,
        fusion_tokens: str = "pooled",
        fusion_heads: int = 1,
        fusion_lambda_bias: float | None = 4.0,
        use_gate: bool = True,
        use_fusion: bool = True,
        freeze_encoder: bool = True,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        if encoder_backend not in ENCODER_BACKENDS:
            raise ValueError(f"encoder_backend must be one of {ENCODER_BACKENDS}, got {encoder_backend!r}")
        if encoder_backend == "transformers" and encoder is None:
            encoder = {"model_type": "clip"}
        if encoder_backend == "open_clip":
            if not open_clip_config:
                raise ValueError("encoder_backend='open_clip' needs open_clip_config (embed_dim, vision_cfg, text_cfg)")
            encoder = None
        if gate_mode not in GATE_MODES:
            raise ValueError(f"gate_mode must be one of {GATE_MODES}, got {gate_mode!r}")
        if not 0.0 <= gate_low <= gate_high <= 1.0:
            raise ValueError(f"msaGate bounds need 0 <= gate_low <= gate_high <= 1, got ({gate_low}, {gate_high})")
        if fusion_tokens not in FUSION_TOKENS:
            raise ValueError(f"fusion_tokens must be one of {FUSION_TOKENS}, got {fusion_tokens!r}")

        self.encoder = encoder
        self.decoder = decoder
        self.encoder_backend = encoder_backend
        self.open_clip_model_name = open_clip_model_name
        self.open_clip_config = copy.deepcopy(open_clip_config)
        self.gate_mode = gate_mode
        self.gate_low = float(gate_low)
        self.gate_high = float(gate_high)
        self.fusion_tokens = fusion_tokens
        self.fusion_heads = int(fusion_heads)
        self.fusion_lambda_bias = None if fusion_lambda_bias is None else float(fusion_lambda_bias)
        self.use_gate = use_gate
        self.use_fusion = use_fusion
        self.freeze_encoder = freeze_encoder
        self.initializer_range = initializer_range
        tie_word_embeddings = kwargs.pop("tie_word_embeddings", None)
        kwargs["is_encoder_decoder"] = True
        # transformers records one auto class per model class; the model serves all three
        kwargs["auto_map"] = {**AUTO_MAP, **(kwargs.get("auto_map") or {})}
        super().__init__(**kwargs)

        # The writer's special tokens drive generation and label shifting, so they follow the T5 config.
        self.pad_token_id = self.decoder.pad_token_id
        self.eos_token_id = self.decoder.eos_token_id
        self.decoder_start_token_id = (
            self.decoder.decoder_start_token_id
            if getattr(self.decoder, "decoder_start_token_id", None) is not None
            else self.decoder.pad_token_id
        )
        self.vocab_size = self.decoder.vocab_size
        self.d_model = self.decoder.d_model
        # lm_head shares the token embedding unless the T5 checkpoint has its own head (T5 v1.1, flan-t5).
        if tie_word_embeddings is None:
            tie_word_embeddings = getattr(self.decoder, "scale_decoder_outputs", True)
        self.tie_word_embeddings = bool(tie_word_embeddings)
        if self.projection_dim % self.fusion_heads != 0:
            raise ValueError(
                f"fusion_heads={self.fusion_heads} must divide the encoder projection dimension {self.projection_dim}"
            )

    @property
    def projection_dim(self) -> int:
        """D, the dimension of CLIP's shared image-text space where Eq. 1-4 operate."""
        if self.encoder_backend == "open_clip":
            return int(self.open_clip_config["embed_dim"])
        return int(self.encoder.projection_dim)

    # ------------------------------------------------------------------ presets
    @classmethod
    def tiny(cls, encoder_backend: str = "transformers", **kwargs) -> "FlexMuseConfig":
        """A few-hundred-thousand-parameter model for tests and the CPU demo (random weights)."""
        decoder = T5Config(
            vocab_size=384,  # ByT5's byte vocabulary: no tokenizer files needed for the tiny writer
            d_model=64,
            d_kv=16,
            d_ff=128,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            dropout_rate=0.0,
            decoder_start_token_id=0,
            tie_word_embeddings=True,
        )
        if encoder_backend == "open_clip":
            open_clip_config = {
                "embed_dim": 32,
                "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
            }
            kwargs.setdefault("open_clip_model_name", "ViT-B-16")
            return cls(encoder_backend="open_clip", open_clip_config=open_clip_config, decoder=decoder, **kwargs)
        encoder = {
            "model_type": "clip",
            "projection_dim": 32,
            # byte-level text tower: the tiny processor tokenizes topics with ByT5's tokenizer (no vocab files)
            "text_config": {
                "vocab_size": 384,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "max_position_embeddings": 64,
                "pad_token_id": 0,
                "bos_token_id": 2,  # ByT5 has no BOS; its <unk> never leads a topic
                "eos_token_id": 1,
            },
            "vision_config": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 32,
                "patch_size": 8,
            },
        }
        return cls(encoder=encoder, decoder=decoder, **kwargs)

    @classmethod
    def base(cls, **kwargs) -> "FlexMuseConfig":
        """The paper's setup: Chinese-CLIP ViT-B/16 + mengzi-t5-base."""
        encoder = {
            "model_type": "chinese_clip",
            "projection_dim": 512,
            "text_config": {
                "vocab_size": 21128,
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "max_position_embeddings": 512,
                "type_vocab_size": 2,
            },
            "vision_config": dict(_VIT_B16),
        }
        return cls(encoder=encoder, decoder=T5Config(**_T5_BASE_V11), **kwargs)

    @classmethod
    def base_en(cls, **kwargs) -> "FlexMuseConfig":
        """English: OpenAI CLIP ViT-B/16 + flan-t5-base."""
        encoder = {
            "model_type": "clip",
            "projection_dim": 512,
            "text_config": {
                "vocab_size": 49408,
                "hidden_size": 512,
                "intermediate_size": 2048,
                "num_hidden_layers": 12,
                "num_attention_heads": 8,
                "max_position_embeddings": 77,
            },
            "vision_config": dict(_VIT_B16),
        }
        return cls(encoder=encoder, decoder=T5Config(**_T5_BASE_V11), **kwargs)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> "FlexMuseConfig":
        """One of `PRESET_COMPONENTS` (README, "Presets"): `tiny`, `base`, `base-en`."""
        if name not in PRESET_COMPONENTS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_COMPONENTS)}")
        return getattr(cls, name.replace("-", "_"))(**kwargs)


# Registered as transformers registers remote classes once loaded: a process that imports flexmuse
# reads saved folders (tokenizers and processors consult config.json) without a remote-code prompt.
AutoConfig.register(FlexMuseConfig.model_type, FlexMuseConfig, exist_ok=True)

__all__ = ["GATE_MODES", "FlexMuseConfig", "PRESET_COMPONENTS"]
