"""What the tests build and run: tiny models and pipelines from configs, topic ids by hand, the
training scripts as modules, a fresh process that cannot import this repository. The fixtures are
in conftest.py."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from configuration_flexmuse import FlexMuseConfig
from modeling_flexmuse import FlexMuseForConditionalGeneration

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name):
    """A script of training/ (e.g. "sft") as a module, to call its `main(argv)` in this process."""
    spec = importlib.util.spec_from_file_location(f"flexmuse_script_{name}", os.path.join(REPO, "training", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.join(REPO, "training"))  # as when run: the script's folder is on the path
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(os.path.join(REPO, "training"))
    return module


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


def corpus_fixture(articles: int, seed: int, eval_articles: int):
    """A module-scoped fixture: the path of an offline corpus made once for the test module."""

    @pytest.fixture(scope="module")
    def corpus(tmp_path_factory):
        from flexmuse_training.corpus import make_corpus

        path = tmp_path_factory.mktemp("corpus")
        make_corpus(str(path), articles=articles, seed=seed, eval_articles=eval_articles)
        return str(path)

    return corpus


def make_t2i_components(seed=0):
    """A tiny random Stable Diffusion (16×16 images) built from configs: nothing to download."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import ByT5Tokenizer, CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=384, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, pad_token_id=0, bos_token_id=2, eos_token_id=1,
    ))
    return {
        "t2i_vae": vae.eval(), "t2i_text_encoder": text_encoder.eval(), "t2i_unet": unet.eval(),
        "t2i_tokenizer": ByT5Tokenizer(model_max_length=77), "t2i_scheduler": EulerDiscreteScheduler(steps_offset=1),
    }


def make_pipeline(with_t2i=True, seed=0):
    from pipeline_flexmuse import FlexMusePipeline
    from processing_flexmuse import FlexMuseProcessor

    components = make_t2i_components(seed) if with_t2i else {}
    return FlexMusePipeline(model=make_model(seed), processor=FlexMuseProcessor.tiny(), **components)


FRESH_PROCESS = r"""
import importlib.util, os, sys, torch
# hide this repo: neither on sys.path nor through the editable install's finder
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != sys.argv[4]]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", type(f).__name__).lower()]
assert importlib.util.find_spec("modeling_flexmuse") is None, "the repo is importable"
from transformers import AutoModel, AutoModelForSeq2SeqLM
torch.set_num_threads(1)  # as in the test process: same kernels, same reduction order
model_dir, inputs_path, out_path = sys.argv[1:4]
inputs = torch.load(inputs_path)
results = {}
for name, auto_class in (("AutoModel", AutoModel), ("AutoModelForSeq2SeqLM", AutoModelForSeq2SeqLM)):
    model = auto_class.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        logits = model(**inputs["forward"]).logits
    results[name] = {"logits": logits, "generated": model.generate(**inputs["generate"])}
torch.save(results, out_path)
"""


def run_fresh(model_dir, inputs, tmp_path):
    """Load `model_dir` with AutoModel and AutoModelForSeq2SeqLM (trust_remote_code) in a fresh
    process that cannot import this repo; return their logits and greedy output for `inputs`."""
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(tmp_path / "modules")}
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS, str(model_dir), str(tmp_path / "inputs.pt"),
         str(tmp_path / "out.pt"), repo],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(tmp_path / "out.pt")
