"""The model and processor a training run starts from, and the LoRA configuration."""

import os

from transformers import AutoImageProcessor, AutoTokenizer, ByT5Tokenizer

from checks_flexmuse import check_model_option
from configuration_flexmuse import PRESET_COMPONENTS, FlexMuseConfig
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor

from .args import ModelArguments

ABLATION_SWITCHES = ("use_gate", "use_fusion", "fusion_tokens")


def check_model_args(args: ModelArguments) -> None:
    """Refuse an unknown preset or a model path that names nothing, before any data is read."""
    if not args.model_name_or_path and args.preset not in PRESET_COMPONENTS:
        raise ValueError(f"--preset {args.preset!r}: unknown; choose one of {', '.join(PRESET_COMPONENTS)}")
    if args.fusion_lambda_bias is not None:
        if args.model_name_or_path:
            raise ValueError("--fusion_lambda_bias shapes a new model's fusion; a saved model (--model_name_or_path) "
                             "keeps its own")
        _lambda_bias(args.fusion_lambda_bias)
    for option in ("model_name_or_path", "encoder_name_or_path", "decoder_name_or_path"):
        check_model_option(option, getattr(args, option))


def load_model_and_processor(args: ModelArguments):
    """A saved FlexMUSE model (`model_name_or_path`), or a new one from a preset: `tiny` with random
    weights (or with the CLIP of `encoder_name_or_path`), `base` / `base-en` from their pretrained
    CLIP and T5 (or the `*_name_or_path` overrides)."""
    overrides = {k: getattr(args, k) for k in ABLATION_SWITCHES if getattr(args, k) is not None}
    if args.fusion_lambda_bias is not None:
        overrides["fusion_lambda_bias"] = _lambda_bias(args.fusion_lambda_bias)
    if args.model_name_or_path:
        model = FlexMuseForConditionalGeneration.from_pretrained(args.model_name_or_path, **overrides)
        processor = FlexMuseProcessor.from_pretrained(args.model_name_or_path)
    elif args.preset == "tiny" and args.encoder_name_or_path:
        # a CLIP pretrained on the corpus (training/pretrain_clip.py) with the tiny random writer
        model = FlexMuseForConditionalGeneration.from_components(args.encoder_name_or_path,
                                                                 FlexMuseConfig.tiny().decoder, **overrides)
        processor = FlexMuseProcessor(image_processor=AutoImageProcessor.from_pretrained(args.encoder_name_or_path),
                                      tokenizer=ByT5Tokenizer(),
                                      topic_tokenizer=AutoTokenizer.from_pretrained(args.encoder_name_or_path))
    elif args.preset == "tiny":
        model = FlexMuseForConditionalGeneration(FlexMuseConfig.tiny(**overrides))
        processor = FlexMuseProcessor.tiny(model.encoder.image_size)
    elif args.preset in PRESET_COMPONENTS:
        components = PRESET_COMPONENTS[args.preset]
        encoder = args.encoder_name_or_path or components["encoder"]
        decoder = args.decoder_name_or_path or components["decoder"]
        model = FlexMuseForConditionalGeneration.from_components(encoder, decoder, **overrides)
        processor = FlexMuseProcessor.from_components(encoder, decoder)
    else:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESET_COMPONENTS)}")
    model.set_encoder_trainable(not args.freeze_encoder)
    processor.max_topic_length, processor.max_paragraph_length = args.max_topic_length, args.max_paragraph_length
    return model, processor


def _lambda_bias(value: str) -> float | None:
    if value.strip().lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--fusion_lambda_bias {value!r}: a number, or 'none' for the paper's Eq. 3") from None


def base_model_ids(args: ModelArguments) -> list:
    """The Hub checkpoints a new model is built from (the model card's `base_model`; a local folder
    means nothing on the Hub)."""
    components = PRESET_COMPONENTS.get(args.preset, {})
    ids = [args.encoder_name_or_path or components.get("encoder"),
           args.decoder_name_or_path or components.get("decoder")]
    return [i for i in ids if i and not os.path.isdir(i)]


def lora_config(model, args: ModelArguments):
    """LoRA on the decoder's attention; the fusion and memory projections, new in FlexMUSE, train in full."""
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        target_modules=r"decoder\.block\.\d+\.layer\.\d+\.(SelfAttention|EncDecAttention)\.(q|k|v|o)",
        modules_to_save=[name for name in ("fusion", "memory") if getattr(model, name, None) is not None],
    )


__all__ = ["base_model_ids", "check_model_args", "load_model_and_processor", "lora_config"]
