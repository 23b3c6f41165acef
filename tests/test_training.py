"""SFT (`training/sft.py`): learning on the offline corpus, resume, two processes, LoRA, and the
output folder as a Hub model repo."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import ByT5Tokenizer, pipeline

from configuration_flexmuse import PRESET_COMPONENTS, FlexMuseConfig
from helpers import REPO, load_script, run_fresh
from flexmuse_training.args import DataArguments, ModelArguments, parse_stage_args
from flexmuse_training.clip_pretraining import CLIP_CORPUS
from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import load_articles
from flexmuse_training.dpo_config import MscDPOConfig
from flexmuse_training.evaluation import Evaluator
from flexmuse_training.repetition import no_repeat_ngram_size
from flexmuse_training.sft_config import FlexMuseSFTConfig
from flexmuse_training.sft_trainer import FlexMuseSFTTrainer
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor
import writing_flexmuse

sft = load_script("sft")
CONFIG = os.path.join(REPO, "training", "configs", "tiny.yaml")
SFT_ARGS = (ModelArguments, DataArguments, FlexMuseSFTConfig)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus")
    make_corpus(str(path), articles=24, seed=0, eval_articles=4)
    return str(path)


def _args(corpus, out, *extra):
    return ["--config", CONFIG, "--dataset", str(corpus), "--output_dir", str(out), "--disable_tqdm", "true",
            "--logging_steps", "1", *extra]


def _short(steps=4, *extra):
    """A few steps of batch 8 with no evaluation and no checkpoints unless asked."""
    return ["--max_steps", str(steps), "--per_device_train_batch_size", "8", "--warmup_steps", "0",
            "--eval_strategy", "no", "--save_strategy", "no", "--eval_split", "", *extra]


@pytest.mark.slow
def test_sft_on_the_demo_clip_learns_to_see_what_it_writes_about(tmp_path):
    """The demo's recipe, shortened where it can be: the CLIP pretrained as `make demo` pretrains it
    (its own corpus, `CLIP_CORPUS`, the script's default steps), then a short SFT. The held-out
    paragraphs name their image's colour, shape and position far above chance (1/6, 1/4, 1/3; the
    CLIP pretrained on the writer's own pictures gave shape 0.5-0.7), and mostly open with the topic
    though the msaGate masks it often: grounding read back from the text, not only ROUGE and
    alignment accuracy."""
    clip_corpus, corpus = tmp_path / "clip_corpus", tmp_path / "corpus"
    make_corpus(str(clip_corpus), **CLIP_CORPUS)
    make_corpus(str(corpus), articles=400, seed=0, eval_articles=30)
    clip = load_script("pretrain_clip").main(["--dataset", str(clip_corpus), "--output_dir", str(tmp_path / "clip"),
                                              "--disable_tqdm", "true", "--use_cpu", "true"])
    assert clip["zero_shot_shape"] >= 0.9, clip
    metrics = sft.main(_args(corpus, tmp_path / "out", "--encoder_name_or_path", str(tmp_path / "clip"),
                             "--max_steps", "600", "--eval_strategy", "no", "--save_strategy", "no",
                             "--eval_articles", "4", "--logging_steps", "100"))
    assert metrics["train_loss"] < 1.0 and "eval_grounding_all" in metrics
    test = load_articles(str(corpus), "test")
    out = str(tmp_path / "out")
    result = Evaluator(max_new_tokens=160)(FlexMuseForConditionalGeneration.from_pretrained(out),
                                           FlexMuseProcessor.from_pretrained(out), test).metrics
    print({key: round(value, 3) for key, value in result.items()})
    assert result["rougeL"] >= 0.9 and result["alignment_accuracy"] >= 0.9
    assert result["grounding_shape"] >= 0.8, result
    assert result["grounding_color"] >= 0.9 and result["grounding_position"] >= 0.9
    assert result["topic_reproduced"] >= 0.7 and result["gate_masked"] >= 0.1
    assert "eval_grounding_all" in (tmp_path / "out" / "README.md").read_text()  # the model card reports it
    # the check of each paragraph against its image: written paragraphs are likelier under their own image
    # than under any other of their article; a reference paragraph moved to another image is flagged
    assert 1 - result["image_specificity_low"] >= 0.9, result
    model, processor = FlexMuseForConditionalGeneration.from_pretrained(out), FlexMuseProcessor.from_pretrained(out)
    own, moved = [], []
    for record in test:
        n = len(record["paragraphs"])
        if n < 2:
            continue
        memory = model.get_memory(**processor(record["topic"], record["images"]), gate_mode="open")
        for paragraphs, into in ((record["paragraphs"], own), (record["paragraphs"][1:] + record["paragraphs"][:1], moved)):
            into += writing_flexmuse.image_specificity_scores(model, processor, memory, [n], paragraphs, list(range(n)))
    print(f"specificity > 0: own {sum(v > 0 for v in own) / len(own):.3f}, moved {sum(v > 0 for v in moved) / len(moved):.3f}")
    assert sum(v > 0 for v in own) / len(own) >= 0.9 and sum(v <= 0 for v in moved) / len(moved) >= 0.8
    assert model.generation_config.no_repeat_ngram_size == 5  # one more than the corpus repeats, in bytes


def test_resume_ends_with_the_uninterrupted_weights(small_corpus, tmp_path, monkeypatch):
    steps = []
    step = FlexMuseSFTTrainer.training_step
    monkeypatch.setattr(FlexMuseSFTTrainer, "training_step", lambda self, *a, **k: steps.append(1) or step(self, *a, **k))
    common = _short(8, "--save_strategy", "steps", "--save_steps", "4", "--save_total_limit", "3")
    sft.main(_args(small_corpus, tmp_path / "full", *common))
    checkpoint = tmp_path / "full" / "checkpoint-4"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / "modeling_flexmuse.py").is_file()
    assert len(steps) == 8
    sft.main(_args(small_corpus, tmp_path / "resumed", *common, "--resume_from_checkpoint", str(checkpoint)))
    assert len(steps) == 12  # the resumed run trained steps 5-8 only
    full = load_file(tmp_path / "full" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.allclose(full[key], resumed[key], atol=1e-6, rtol=0), key
    assert not torch.equal(full["fusion.w_q"], load_file(checkpoint / "model.safetensors")["fusion.w_q"])


def test_sft_saves_the_no_repeat_ngram_size_its_corpus_calls_for(small_corpus, tmp_path):
    sft.main(_args(small_corpus, tmp_path / "out", *_short(1)))
    saved = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    paragraphs = [p for record in load_articles(str(small_corpus), "train") for p in record["paragraphs"]]
    assert saved["no_repeat_ngram_size"] == no_repeat_ngram_size(ByT5Tokenizer(), paragraphs) == 5


def _losses(info):
    return [entry["loss"] for entry in info["log_history"] if "loss" in entry]


@pytest.mark.slow
def test_two_processes_train_like_one_on_the_same_global_batch_save_and_load_in_a_fresh_process(small_corpus,
                                                                                                  tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # no msaGate: its random draws are per process, and the comparison is of the data-parallel step
    common = ["--use_gate", "false", "--learning_rate", "3e-3"]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         os.path.join(REPO, "training", "sft.py"),
         *_args(small_corpus, out, *_short(3, "--eval_split", "validation", "--eval_articles", "2",
                                            "--eval_max_new_tokens", "8", "--per_device_train_batch_size", "4",
                                            *common))],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "train_info.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 3
    # the same global batch of 8 in one process: the same losses, step by step
    sft.main(_args(small_corpus, tmp_path / "one", *_short(3, *common)))
    one = json.loads((tmp_path / "one" / "train_info.json").read_text())
    assert len(_losses(info)) == 3 and _losses(info) == pytest.approx(_losses(one), rel=1e-5)
    assert {"eval_loss", "eval_rougeL", "eval_alignment_accuracy"} <= set(info["metrics"])

    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "configuration_flexmuse.py", "modeling_flexmuse.py",
            "processing_flexmuse.py", "task_flexmuse.py", "writing_flexmuse.py", "processor_config.json",
            "tokenizer_config.json", "README.md"} <= files
    assert "pipeline_flexmuse.py" not in files  # the diffusers pipeline is no part of a model repo
    assert set(json.loads((out / "config.json").read_text())["auto_map"]) >= {"AutoConfig", "AutoModel"}
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag
    assert {"flexmuse"} <= set(card.data.tags) and card.data.license == "apache-2.0"
    assert "| processes | `2` |" in card.text and "procedural corpus" in card.text

    model = FlexMuseForConditionalGeneration.from_pretrained(out).eval()
    writer = pipeline("flexmuse", model=str(out), trust_remote_code=True)
    test = load_articles(small_corpus, "test")
    article = writer(test[0]["topic"], images=test[0]["images"], seed=0, max_new_tokens=8)
    assert len(article.paragraphs) == len(test[0]["images"])

    batch = writer.processor(test[0]["topic"], test[0]["images"])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    forward = {**inputs, "decoder_input_ids": torch.zeros(len(test[0]["images"]), 1, dtype=torch.long),
               "gate_mode": "open"}
    generate = {**inputs, "gate_mode": "open", "max_new_tokens": 6}
    with torch.no_grad():
        expected_logits = model(**forward).logits
    expected = model.generate(**generate)
    for name, got in run_fresh(out, {"forward": forward, "generate": generate}, tmp_path).items():
        assert torch.equal(got["logits"], expected_logits), name
        assert torch.equal(got["generated"], expected), name


@pytest.mark.slow
def test_fsdp_with_the_shipped_config_trains_like_ddp_saves_whole_and_evaluates(small_corpus, tmp_path):
    """Two CPU processes under FSDP2 (tests/fsdp_cpu.py turns it on where accelerate would fall back
    to DDP), with the `fsdp_config` of training/configs/accelerate/fsdp.yaml, the feature store,
    evaluation and a checkpoint: the same losses as DDP, and complete model repos."""
    import yaml

    with open(os.path.join(REPO, "training", "configs", "accelerate", "fsdp.yaml")) as handle:
        fsdp_config = yaml.safe_load(handle)["fsdp_config"]
    (tmp_path / "fsdp.json").write_text(json.dumps(fsdp_config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    infos = {}
    for name, launcher, extra in (("ddp", [], []),
                                  ("fsdp", [os.path.join(REPO, "tests", "fsdp_cpu.py")],
                                   ["--fsdp_config", str(tmp_path / "fsdp.json"), "--fsdp"])):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29523",
             *launcher, os.path.join(REPO, "training", "sft.py"),
             *_args(small_corpus, out, *_short(3, "--eval_split", "validation", "--eval_articles", "2",
                                                "--eval_max_new_tokens", "8", "--per_device_train_batch_size", "4",
                                                "--save_strategy", "steps", "--save_steps", "2",
                                                "--eval_strategy", "steps", "--eval_steps", "2", "--use_gate", "false",
                                                *extra))],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        infos[name] = json.loads((out / "train_info.json").read_text())
    assert infos["ddp"]["settings"]["distributed"] == "MULTI_CPU" and infos["fsdp"]["settings"]["distributed"] == "FSDP"
    assert _losses(infos["fsdp"]) == pytest.approx(_losses(infos["ddp"]), rel=1e-6) and len(_losses(infos["ddp"])) == 3
    for key in ("eval_loss", "eval_rougeL", "eval_alignment_accuracy"):
        assert infos["fsdp"]["metrics"][key] == pytest.approx(infos["ddp"]["metrics"][key], abs=1e-5), key
    for folder in ("", "checkpoint-2"):
        weights = {name: load_file(tmp_path / name / folder / "model.safetensors") for name in ("ddp", "fsdp")}
        assert weights["ddp"].keys() == weights["fsdp"].keys()
        for key in weights["ddp"]:
            assert torch.allclose(weights["ddp"][key], weights["fsdp"][key], atol=1e-6), (folder, key)
        assert (tmp_path / "fsdp" / folder / "modeling_flexmuse.py").is_file()
        assert not list((tmp_path / "fsdp" / folder).glob("_fsdp*.py"))  # torch's files are no remote code
    model = FlexMuseForConditionalGeneration.from_pretrained(tmp_path / "fsdp")
    assert type(model) is FlexMuseForConditionalGeneration


def test_lora_trains_the_decoder_attention_and_saves_merged(small_corpus, tmp_path):
    sft.main(_args(small_corpus, tmp_path / "out", *_short(3, "--use_lora", "true", "--learning_rate", "1e-2")))
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert not any("lora" in key for key in saved)
    torch.manual_seed(0)  # the initial weights: the run builds the tiny preset right after set_seed(0)
    start = FlexMuseForConditionalGeneration(FlexMuseConfig.tiny()).state_dict()
    changed = {key for key in saved if not torch.equal(saved[key], start[key])}
    assert "decoder.block.0.layer.0.SelfAttention.q.weight" in changed  # merged LoRA update
    assert any(key.startswith("fusion.") for key in changed)  # trained in full (modules_to_save)
    assert not any(".DenseReluDense." in key or key.startswith("encoder.") for key in changed)


@pytest.mark.parametrize("name", list(PRESET_COMPONENTS))
def test_yaml_configs_parse_for_both_stages_with_command_line_overrides(name):
    config = os.path.join(REPO, "training", "configs", f"{name}.yaml")
    # bf16 is overridden because this machine has no GPU; the override is what is under test
    args, data_args, training_args = parse_stage_args(SFT_ARGS, "sft", ["--config", config, "--bf16", "false",
                                                                         "--learning_rate", "1e-4"])
    assert args.preset == name and args.freeze_encoder and data_args.dataset
    assert training_args.learning_rate == 1e-4 and training_args.max_steps > 0
    dpo_args, _, dpo_config = parse_stage_args((ModelArguments, DataArguments, MscDPOConfig), "dpo",
                                               ["--config", config, "--bf16", "false"])
    assert dpo_args.model_name_or_path == training_args.output_dir  # DPO starts where SFT saved
    assert dpo_config.max_rejected is None and dpo_config.beta > 0  # every other paragraph rejected, as the paper
    with pytest.raises(ValueError, match="no_such_option"):
        parse_stage_args(SFT_ARGS, "sft", ["--config", config, "--bf16", "false", "--no_such_option", "1"])
    # a preset's name finds the config installed with the package
    assert parse_stage_args(SFT_ARGS, "sft", ["--config", name, "--bf16", "false"])[2].to_dict() == \
        parse_stage_args(SFT_ARGS, "sft", ["--config", config, "--bf16", "false"])[2].to_dict()


def test_a_config_setting_unknown_to_its_stage_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("sft:\n  max_steps: 3\n  beta: 0.1\n")  # beta is a DPO setting
    with pytest.raises(ValueError, match="unknown settings for the sft stage"):
        parse_stage_args(SFT_ARGS, "sft", ["--config", str(path)])


def _one_sgd_step(corpus, out, batch, accumulation):
    """The weights after one SGD step (lr 1, no clipping) of the tiny preset on `corpus`."""
    torch.manual_seed(0)
    model = FlexMuseForConditionalGeneration(FlexMuseConfig.tiny())
    args = FlexMuseSFTConfig(output_dir=str(out), per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd", learning_rate=1.0,
                             lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0,
                             use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no", seed=0)
    trainer = FlexMuseSFTTrainer(model, args=args, train_dataset=load_articles(corpus, "train"),
                                 processing_class=FlexMuseProcessor.tiny())
    loss = trainer.train().training_loss
    return loss, {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_gradient_accumulation_gives_the_big_batch_step(small_corpus, tmp_path):
    """2 × 4 with accumulation equals one batch of 8: the loss is the mean over all the label tokens
    of the 8 rows (`num_items_in_batch`), not a mean of per-batch means, nor k times too large."""
    big_loss, big = _one_sgd_step(small_corpus, tmp_path / "big", 8, 1)
    accumulated_loss, accumulated = _one_sgd_step(small_corpus, tmp_path / "accumulated", 4, 2)
    assert accumulated_loss == pytest.approx(big_loss, abs=1e-5)
    torch.manual_seed(0)
    start = dict(FlexMuseForConditionalGeneration(FlexMuseConfig.tiny()).named_parameters())
    for name, weight in big.items():
        step_big, step_accumulated = weight - start[name].detach(), accumulated[name] - start[name].detach()
        assert torch.allclose(step_accumulated, step_big, atol=1e-5), name
    assert any(not torch.equal(weight, start[name]) for name, weight in big.items())  # the step moved something


def test_a_source_without_the_eval_split_is_refused_and_an_empty_eval_split_turns_evaluation_off(tmp_path):
    make_corpus(str(tmp_path / "corpus"), articles=8, seed=0, eval_articles=2)
    flat = str(tmp_path / "corpus" / "train")  # metadata.jsonl right in the folder: no split sub-folders
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="no separate 'validation' split"):
        sft.main(_args(flat, out, "--max_steps", "1"))
    assert not out.exists()  # refused before a model was built or anything written
    # the shipped config evaluates every eval_steps; an empty eval_split must switch that off
    metrics = sft.main(_args(flat, out, "--max_steps", "2", "--eval_split", "", "--save_strategy", "no"))
    assert metrics["train_loss"] > 0 and not any(key.startswith("eval_") for key in metrics)


def test_push_to_hub_uploads_the_finished_repo_without_checkpoints(small_corpus, tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id)) or
                        type("Url", (), {"repo_id": repo_id})())

    def upload_folder(self, folder_path, repo_id, ignore_patterns=None, **kwargs):
        files = [str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()]
        calls.append(("upload", repo_id, list(filter_repo_objects(files, ignore_patterns=ignore_patterns))))

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "out"
    sft.main(_args(small_corpus, out, *_short(4, "--save_strategy", "steps", "--save_steps", "2",
                                              "--push_to_hub", "true", "--hub_model_id", "org/flexmuse-test")))
    assert (out / "checkpoint-2" / "optimizer.pt").is_file()  # resumable checkpoints stay on disk
    # once, at the end
    assert [c[:2] for c in calls] == [("create", "org/flexmuse-test"), ("upload", "org/flexmuse-test")]
    sent = set(calls[1][2])
    assert {"config.json", "model.safetensors", "README.md", "modeling_flexmuse.py", "processor_config.json"} <= sent
    assert not any(name.startswith("checkpoint-") for name in sent)
    card = ModelCard.load(out / "README.md")  # the FlexMUSE card, with the trainer's tag and the run's results
    assert {"flexmuse", "sft"} <= set(card.data.tags) and "train_loss" in card.text
    with pytest.raises(ValueError, match="--hub_strategy 'every_save'"):
        sft.main(_args(small_corpus, tmp_path / "out2", "--push_to_hub", "true", "--hub_strategy", "every_save"))


@pytest.mark.parametrize("cache", [False, True])
def test_sft_evaluation_loss_is_the_same_at_every_evaluation_of_the_same_weights(small_corpus, tmp_path, cache):
    """The msaGate samples u; evaluation fixes it per example (--gate_seed), so eval_loss and the
    best-checkpoint choice do not ride on gate noise. Training still draws u afresh."""
    torch.manual_seed(0)
    # random tiny features have small sigma: narrow U(low, high) so both gate decisions occur
    model = FlexMuseForConditionalGeneration(FlexMuseConfig.tiny(gate_low=0.0, gate_high=0.02))
    args = FlexMuseSFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", eval_articles=0,
                             per_device_eval_batch_size=4, feature_cache=cache, disable_tqdm=True)
    evaluation = load_articles(small_corpus, "validation")
    trainer = FlexMuseSFTTrainer(model, args=args, eval_dataset=evaluation, processing_class=FlexMuseProcessor.tiny())
    losses = [trainer.evaluate()["eval_loss"] for _ in range(4)]
    assert max(losses) - min(losses) < 1e-6, losses
    batch = trainer._prepare_inputs(trainer.data_collator(list(trainer.eval_dataset.select(range(8)))))
    model.eval()
    with torch.no_grad():
        evaluated = [model(**trainer._frozen_features(batch)).gate_keep for _ in range(3)]
    assert 0 < evaluated[0].sum() < len(evaluated[0]) and all(torch.equal(evaluated[0], k) for k in evaluated)
    reseeded = FlexMuseSFTTrainer(model, args=FlexMuseSFTConfig(**{**args.to_dict(), "gate_seed": 1}),
                                  eval_dataset=evaluation, processing_class=FlexMuseProcessor.tiny())
    assert reseeded.evaluate()["eval_loss"] != pytest.approx(losses[0], abs=1e-6)  # the seed decides u


@pytest.mark.parametrize("value, expected", [("4", 4.0), ("none", None)])
def test_the_fusion_start_is_chosen_on_the_command_line(small_corpus, tmp_path, value, expected):
    sft.main(_args(small_corpus, tmp_path / "out", *_short(1, "--fusion_lambda_bias", value)))
    config = FlexMuseConfig.from_pretrained(tmp_path / "out")
    assert config.fusion_lambda_bias == expected
    model = FlexMuseForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert (model.fusion.b_lambda is None) == (expected is None)
