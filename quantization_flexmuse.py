"""Quantized loading of a FlexMUSE model through transformers' own quantization API (`quantization_config=`).

    model = FlexMuseForConditionalGeneration.from_pretrained(path, quantization_config=quantization_config("int8"))
    # or AutoModel.from_pretrained(path, trust_remote_code=True, quantization_config=...),
    # FlexMusePipeline.load(path, quantize="int8"), flexmuse write --quantize int8

`int8` is torchao's int8 weight-only quantization (per output channel), which runs on CPU and GPU; on CUDA,
bitsandbytes' 8- and 4-bit (`BitsAndBytesConfig(load_in_8bit=True)`) load the same way. A quantized model
saves with `save_pretrained` and loads back already quantized (torchao's safetensors format).

Every `nn.Linear` is quantized, CLIP's included (it is most of the model's bytes), except the writer's
output layer `lm_head`: torchao's eager int8 linear turns the weight back to float at each call, which costs
little for the decoder's small matrices but made the 32128-row head 5x slower than fp32 on CPU
(bench/bench_decode.py).

Embeddings stay in full precision (in `base` the writer's input embedding, its untied LM head and CLIP's
word embeddings are about 260 MB of the int8 model's 554): transformers quantizes embeddings only with
`include_input_output_embeddings=True`, which takes the LM head along, or through torchao's `FqnToConfig`,
whose default entry also quantizes every Linear's bias (the first forward then fails) and whose CLIP word
embeddings break the model's weight initialisation (it zeroes their padding row in place).
"""

QUANTIZATIONS = ("int8",)

# kept in full precision (see the module docstring)
KEEP_FULL_PRECISION = ["lm_head"]


def quantization_config(kind: str):
    """The transformers `quantization_config` for `kind` (one of `QUANTIZATIONS`)."""
    if kind not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {kind!r}; choose from {', '.join(QUANTIZATIONS)}")
    try:
        from torchao.quantization import Int8WeightOnlyConfig
    except ImportError as err:
        raise ImportError("int8 loading needs torchao: pip install 'flexmuse[quantization]'") from err
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=list(KEEP_FULL_PRECISION))


def tensor_bytes(tensor) -> int:
    """Bytes a weight is stored in: a quantized one's int8 data and scales, a plain tensor's elements."""
    names = tensor.__tensor_flatten__()[0] if hasattr(tensor, "__tensor_flatten__") else []
    return sum(part.numel() * part.element_size() for part in [getattr(tensor, name) for name in names] or [tensor])


def weight_bytes(model) -> int:
    """Bytes of the model's distinct weights as they are stored (a tied weight once)."""
    return sum(tensor_bytes(tensor) for tensor in [*model.parameters(), *model.buffers()])  # both skip duplicates
