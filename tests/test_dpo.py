"""mscDPO (`training/dpo.py`): the grouped loss against the naive expansion, the softmax loss by
hand, the reference (frozen copy, LoRA, precomputed), learning after SFT, two processes."""

import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO, load_script, make_model
from flexmuse_training import dpo_trainer
from flexmuse_training.args import ModelArguments
from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import dpo_view, load_articles
from flexmuse_training.dpo_config import MscDPOConfig
from flexmuse_training.dpo_trainer import MscDPOTrainer
from flexmuse_training.evaluation import Evaluator
from flexmuse_training.models import lora_config
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor

sft, dpo = load_script("sft"), load_script("dpo")
CONFIG = os.path.join(REPO, "training", "configs", "tiny.yaml")


@pytest.fixture(scope="module")
def articles(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus")
    make_corpus(str(path), articles=12, seed=3, eval_articles=4)
    return load_articles(str(path), "train")


def _config(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to="none", seed=0,
                    per_device_train_batch_size=4, max_steps=2, logging_steps=1, disable_tqdm=True)
    return MscDPOConfig(**{**defaults, **kwargs})


def _trainer(tmp_path, articles, seed=0, model_kwargs=None, **kwargs):
    model = make_model(seed, **(model_kwargs or {})).train()
    return MscDPOTrainer(model, args=_config(tmp_path, **kwargs), train_dataset=articles,
                             processing_class=FlexMuseProcessor.tiny())


def _perturb(trainer):
    """Move the policy away from its reference so the log-ratios are not all zero."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if param.requires_grad and name.startswith(("fusion.", "decoder.block.0")):
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


def _loss_and_grads(trainer, rows):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


def test_softmax_and_sigmoid_losses_by_hand():
    chosen = torch.tensor([1.0, -0.5])
    rejected = torch.tensor([[0.5, 2.0], [0.0, 9.0]])
    mask = torch.tensor([[True, True], [True, False]])  # the second prompt has one rejected
    beta = 0.5
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    pairs = [beta * (1.0 - 0.5), beta * (1.0 - 2.0), beta * (-0.5 - 0.0)]
    expected_sigmoid = sum(-math.log(sig(d)) for d in pairs) / 3
    first = -math.log(sig(-math.log(math.exp(-pairs[0]) + math.exp(-pairs[1]))))
    second = -math.log(sig(pairs[2]))  # one rejected: S-DPO is DPO
    expected_softmax = (first + second) / 2
    assert dpo_trainer.msc_dpo_loss(chosen, rejected, mask, beta, "sigmoid").item() == pytest.approx(expected_sigmoid, abs=1e-6)
    assert dpo_trainer.msc_dpo_loss(chosen, rejected, mask, beta, "softmax").item() == pytest.approx(expected_softmax, abs=1e-6)
    with pytest.raises(ValueError, match="unknown loss_type"):
        dpo_trainer.msc_dpo_loss(chosen, rejected, mask, beta, "ipo")
    with pytest.raises(ValueError, match="supports loss_type"):
        MscDPOConfig(output_dir="x", loss_type=["ipo"])


def test_grouped_loss_and_gradients_equal_the_naive_pairs(articles, tmp_path):
    grouped = _trainer(tmp_path / "g", articles)
    pairs = _trainer(tmp_path / "p", articles, msc_mode="pairs")
    _perturb(grouped), _perturb(pairs)
    # evaluation's fixed u per example: both layouts see the same gate decisions (training draws afresh)
    grouped.model.eval(), pairs.model.eval()
    rows = list(grouped.train_dataset.select(range(6)))
    pair_rows = [dict(row, rejected=[r]) for row in rows for r in row["rejected"]]
    assert len(pair_rows) > len(rows)  # several rejected per prompt
    assert len(pairs.train_dataset) == sum(len(r) for r in grouped.train_dataset["rejected"])

    loss, grads = _loss_and_grads(grouped, rows)
    naive_loss, naive_grads = _loss_and_grads(pairs, pair_rows)  # mean of one DPO loss per pair
    assert loss.item() > 0.01 and abs(loss.item() - math.log(2)) > 1e-3  # the policy differs from the reference
    assert torch.allclose(loss, naive_loss, atol=1e-5), (loss, naive_loss)
    assert grads.keys() == naive_grads.keys() and grads
    for name in grads:
        assert torch.allclose(grads[name], naive_grads[name], atol=1e-5), name


def test_reference_gives_log_two_and_replays_a_gate_drawn_afresh_each_step(articles, tmp_path):
    # random tiny features have small sigma: narrow U(low, high) so both decisions occur
    trainer = _trainer(tmp_path, articles, gate_seed=5, model_kwargs={"gate_low": 0.0, "gate_high": 0.05})
    batch = trainer.data_collator(list(trainer.train_dataset.select(range(8))))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        assert loss.item() == pytest.approx(math.log(2), abs=1e-6)  # policy == reference, which replays the gate
        draws = [trainer._grouped_log_probs(trainer.model, batch)[2] for _ in range(6)]  # training mode
        assert any(not torch.equal(draws[0], keep) for keep in draws[1:])  # u redrawn at every step
        assert all(0 < keep.sum() < len(keep) for keep in draws[:1])  # a batch with both gate decisions
        replayed = trainer._grouped_log_probs(trainer.ref_model, batch, draws[0])[2]
        assert torch.equal(replayed, draws[0])
        trainer.model.eval()  # evaluation: the rows' fixed u, so eval losses compare across steps
        fixed = [trainer._grouped_log_probs(trainer.model, batch)[2] for _ in range(3)]
        assert all(torch.equal(fixed[0], keep) for keep in fixed)


def test_precomputed_reference_log_probs_hold_both_gate_decisions(articles, tmp_path):
    kwargs = {"model_kwargs": {"gate_low": 0.0, "gate_high": 0.05}, "per_device_train_batch_size": 5}
    trainer = _trainer(tmp_path / "pre", articles, precompute_ref_log_probs=True, **kwargs)
    rows = trainer.train_dataset
    assert trainer.ref_model is None and {"ref_chosen_logps", "ref_rejected_logps"} <= set(rows.column_names)
    reference = make_model(0, gate_low=0.0, gate_high=0.05).eval()  # the policy's weights before training
    collator = trainer.data_collator
    assert collator.slots == max(map(len, rows["rejected"])) == 3  # every other paragraph of 4-image articles
    for start in range(0, len(rows), 7):
        stored = rows.select(range(start, min(start + 7, len(rows))))
        batch = collator([{k: v for k, v in row.items() if not k.startswith("ref_")} for row in stored])
        for state, keep in enumerate((False, True)):
            chosen, rejected, _ = trainer._grouped_log_probs(reference, batch, torch.full((len(stored),), keep))
            assert torch.allclose(chosen, torch.tensor(stored["ref_chosen_logps"])[:, state], atol=1e-4)
            assert torch.allclose(rejected, torch.tensor(stored["ref_rejected_logps"])[:, state], atol=1e-4)
        differs = torch.tensor(stored["ref_chosen_logps"]).diff(dim=1).abs() > 1e-3
        assert differs.any()  # the gate decision matters to the reference
        for row, count in zip(torch.tensor(stored["ref_rejected_logps"])[:, 1], map(len, stored["rejected"])):
            assert (row[count:] == 0).all() and (row[:count] < 0).all()  # empty slots hold 0

    # the loss reads the state of the policy's fresh draw: the same as a reference run alongside
    on_the_fly = _trainer(tmp_path / "fly", articles, **kwargs)
    _perturb(trainer), _perturb(on_the_fly)
    rows = list(rows.select(range(10)))
    for draw in range(3):
        losses = []
        for run, part in ((trainer, rows), (on_the_fly, [{k: v for k, v in r.items() if not k.startswith("ref_")}
                                                        for r in rows])):
            torch.manual_seed(draw)
            with torch.no_grad():
                losses.append(run.compute_loss(run.model, run.data_collator(part)))
        assert torch.allclose(*losses, atol=1e-5), (draw, losses)


def test_lora_reference_is_the_model_with_adapters_disabled(articles, tmp_path):
    model = make_model(0).train()
    trainer = MscDPOTrainer(model, args=_config(tmp_path, learning_rate=1e-2, max_steps=3),
                                train_dataset=articles, processing_class=FlexMuseProcessor.tiny(),
                                peft_config=lora_config(model, ModelArguments()))
    assert trainer.ref_model is None
    batch = trainer.data_collator(list(trainer.train_dataset.select(range(4))))
    with torch.no_grad():
        assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(math.log(2), abs=1e-6)
    trainer.train()
    trained = trainer.model.eval()
    reference = trainer.compute_ref_log_probs(trained, batch)  # adapters disabled
    initial = trainer.compute_ref_log_probs(make_model(0).eval(), batch)
    for state, keep in enumerate((False, True)):  # (B, 2) and (B, 2, slots): both msaGate decisions
        with torch.no_grad():
            policy = trainer._grouped_log_probs(trained, batch, torch.full((4,), keep))[:2]
        for ref, start, now in zip(reference, initial, policy):
            assert torch.allclose(ref[:, state], start[:, state], atol=1e-5)  # the reference is the starting model
            assert not torch.allclose(now, start[:, state], atol=1e-3)  # the adapters (and fusion, memory) trained


def test_rows_drop_duplicates_skip_one_chunk_articles_and_count_them(tmp_path, caplog):
    make_corpus(str(tmp_path / "c"), articles=3, seed=0, eval_articles=2)
    articles = load_articles(str(tmp_path / "c"), "train").to_list()
    articles[0]["paragraphs"][1] = articles[0]["paragraphs"][0] + " "  # a duplicate
    articles.append({**articles[1], **{key: articles[1][key][:1] for key in ("images", "paragraphs", "attributes",
                                                                              "captions")}})
    from datasets import Dataset

    data = load_articles(Dataset.from_list(articles))
    with caplog.at_level(logging.INFO, logger="flexmuse_training.dpo_trainer"):
        trainer = _trainer(tmp_path, data)
    assert "1 one-chunk skipped" in caplog.text and "duplicate/empty rejected dropped" in caplog.text
    rows = trainer.train_dataset
    first = [r for r, a in zip(rows["rejected"], rows["article"]) if a == 0]
    chosen = [c for c, a in zip(rows["chosen"], rows["article"]) if a == 0]
    for c, rejected in zip(chosen, first):
        assert c.strip() not in rejected and len(set(rejected)) == len(rejected)
    assert 3 not in rows["article"]  # the one-chunk article
    view, stats = dpo_view(data)
    assert stats["one_chunk_skipped"] == 1 and view["rejected"] == rows["rejected"]


def test_sampled_rejected_rows_hold_the_models_own_paragraphs(articles):
    model, processor = make_model(0), FlexMuseProcessor.tiny()
    rows = dpo_trainer.sampled_rejected_rows(model, processor, articles.select(range(3)), seed=0, max_new_tokens=12)
    assert 0 < len(rows) <= sum(len(p) for p in articles.select(range(3))["paragraphs"])
    assert all(len(r) == 1 and r[0].strip() and r[0] != c for r, c in zip(rows["rejected"], rows["chosen"]))


def test_the_trainer_samples_the_rejected_when_asked(articles, tmp_path):
    """rejected_source=sample: the trainer builds its rows from the starting model's own paragraphs."""
    trainer = _trainer(tmp_path, articles.select(range(3)), rejected_source="sample", sample_max_new_tokens=12)
    rows = trainer.train_dataset
    assert 0 < len(rows) <= sum(len(p) for p in articles.select(range(3))["paragraphs"])
    references = {p for paragraphs in articles.select(range(3))["paragraphs"] for p in paragraphs}
    assert all(len(r) == 1 and r[0] not in references for r in rows["rejected"])
    assert trainer.model.training  # sampled in eval mode, handed back for training


@pytest.mark.slow
def test_mscdpo_after_sft_raises_alignment_and_keeps_rouge(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(str(corpus), articles=200, seed=1, eval_articles=16)
    common = ["--config", CONFIG, "--dataset", str(corpus), "--disable_tqdm", "true", "--eval_strategy", "no",
              "--save_strategy", "no", "--logging_steps", "25"]
    # the CLIP is random here: its patch tokens still carry each picture's colours, its pooled vector far less
    sft.main([*common, "--output_dir", str(tmp_path / "sft"), "--max_steps", "300", "--eval_split", "",
              "--fusion_tokens", "token"])
    dpo.main([*common, "--output_dir", str(tmp_path / "dpo"), "--model_name_or_path", str(tmp_path / "sft"),
              "--eval_split", ""])
    test = load_articles(str(corpus), "test")
    scores = {}
    for stage in ("sft", "dpo"):
        folder = str(tmp_path / stage)
        result = Evaluator(max_new_tokens=160)(FlexMuseForConditionalGeneration.from_pretrained(folder),
                                               FlexMuseProcessor.from_pretrained(folder), test)
        scores[stage] = result.metrics["rougeL"], result.metrics["alignment_accuracy"]
    print("held-out (ROUGE-L, alignment):", scores)
    assert scores["dpo"][1] > scores["sft"][1] + 0.02
    assert scores["dpo"][0] >= scores["sft"][0] - 0.02
    history = json.loads((tmp_path / "dpo" / "train_info.json").read_text())["log_history"]
    margins = [entry["rewards/margins"] for entry in history if "rewards/margins" in entry]
    assert len(margins) >= 4 and sum(margins[-2:]) / 2 > sum(margins[:2]) / 2 + 0.1


def test_the_scripts_train_lora_one_way_and_save_merged_repos_with_their_trainers_tags(tmp_path):
    """SFT then mscDPO with --use_lora through the one stage runner: each trainer wraps the model,
    the finished folder holds merged weights (no adapter files) loadable by AutoModel, and the card
    carries the trainer's tags and the stage's settings; the precomputed-reference rows are gone."""
    from huggingface_hub import ModelCard
    from transformers import AutoModel

    corpus = tmp_path / "corpus"
    make_corpus(str(corpus), articles=8, seed=0, eval_articles=2)
    common = ["--config", CONFIG, "--dataset", str(corpus), "--disable_tqdm", "true", "--eval_strategy", "no",
              "--save_strategy", "no", "--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_split", "",
              "--use_lora", "true"]
    sft.main([*common, "--output_dir", str(tmp_path / "sft")])
    dpo.main([*common, "--output_dir", str(tmp_path / "dpo"), "--model_name_or_path", str(tmp_path / "sft"),
              "--precompute_ref_log_probs", "true", "--standard_dpo", "true"])
    for stage, tags in (("sft", {"flexmuse", "sft"}), ("dpo", {"flexmuse", "trl", "dpo", "mscdpo"})):
        out = tmp_path / stage
        assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
        card = ModelCard.load(out / "README.md")
        assert tags <= set(card.data.tags), card.data.tags
        settings = json.loads((out / "train_info.json").read_text())["settings"]
        assert settings["lora"] is True and settings["steps"] == 2
        assert AutoModel.from_pretrained(str(out), trust_remote_code=True).config.model_type == "flexmuse"
    assert settings["stage"].startswith("standard DPO") and settings["start"] == str(tmp_path / "sft")
    assert not (tmp_path / "dpo" / dpo_trainer.ROWS_DIR).exists()


@pytest.mark.slow
def test_two_processes_with_precomputed_reference(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(str(corpus), articles=16, seed=0, eval_articles=4)
    common = ["--config", CONFIG, "--dataset", str(corpus), "--disable_tqdm", "true", "--save_strategy", "no"]
    sft.main([*common, "--output_dir", str(tmp_path / "sft"), "--max_steps", "2", "--eval_split", "",
              "--eval_strategy", "no"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519",
         os.path.join(REPO, "training", "dpo.py"), *common, "--output_dir", str(tmp_path / "dpo"),
         "--model_name_or_path", str(tmp_path / "sft"), "--max_steps", "3", "--per_device_train_batch_size", "4",
         "--eval_strategy", "no", "--eval_articles", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((tmp_path / "dpo" / "train_info.json").read_text())
    assert info["world_size"] == 2 and info["global_step"] == 3
    assert "eval_alignment_accuracy" in info["metrics"] and "eval_rewards/margins" in info["metrics"]
    out = tmp_path / "dpo"
    assert {"config.json", "model.safetensors", "modeling_flexmuse.py", "processor_config.json", "README.md"} <= set(
        os.listdir(out))
    assert "mscDPO" in (out / "README.md").read_text() and not (out / "mscdpo_rows").exists()

    from transformers import AutoModel

    assert AutoModel.from_pretrained(str(out), trust_remote_code=True).config.model_type == "flexmuse"


def test_the_trl_methods_overridden_keep_their_signatures_in_the_installed_trl():
    """MscDPOTrainer overrides two private DPOTrainer methods and reads some of its attributes: a trl
    upgrade that renames or reshapes one fails here, not silently in training."""
    import inspect

    from trl import DPOTrainer

    from flexmuse_training.trainer_utils import FlexMuseTrainerMixin

    private = {name for cls in (MscDPOTrainer, FlexMuseTrainerMixin) for name, value in vars(cls).items()
               if name.startswith("_") and not name.startswith("__") and callable(value) and hasattr(DPOTrainer, name)}
    assert private == {"_prepare_dataset", "_precompute_ref_logps", "_save"}, private  # the docstrings list these
    for name in ("_prepare_dataset", "_precompute_ref_logps", "_save", "compute_ref_log_probs", "compute_loss", "prediction_step",
                 "save_model"):
        ours, theirs = (list(inspect.signature(getattr(cls, name)).parameters) for cls in (MscDPOTrainer, DPOTrainer))
        assert ours == theirs, (name, ours, theirs)
    for name in ("_prepare_dataset", "_precompute_ref_logps", "compute_ref_log_probs", "compute_loss", "prediction_step",
                 "create_model_card"):
        assert name in MscDPOTrainer.__doc__ or name in dpo_trainer.__doc__, name
    # TRL's own loss path is bypassed, and TRL calls the hooks this trainer relies on
    source = inspect.getsource(DPOTrainer)
    assert "self._prepare_dataset(train_dataset, processing_class, args, \"train\")" in source
    assert "self.compute_ref_log_probs(model, padded_batch)" in source


def test_trl_attributes_read_by_the_trainer_are_set(articles, tmp_path):
    trainer = _trainer(tmp_path, articles, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 2.0], beta=0.3)
    assert (trainer.beta, trainer.loss_types, trainer.loss_weights) == (0.3, ["sigmoid", "sft"], [1.0, 2.0])
    assert trainer.precompute_ref_logps is False and set(trainer._metrics) == {"train", "eval"}


def _epoch_pairs(trainer) -> list:
    """(chosen, sorted rejected) of every prompt of one pass over the training dataloader, decoded."""
    tokenizer = trainer.processing_class.tokenizer
    decode = lambda labels: [tokenizer.decode(row[row != -100], skip_special_tokens=True) for row in labels]  # noqa
    pairs = []
    for batch in trainer.get_train_dataloader():
        chosen, rejected = decode(batch["chosen_labels"]), decode(batch["rejected_labels"])
        for row, text in enumerate(chosen):
            pairs.append((text, tuple(sorted(r for r, i in zip(rejected, batch["rejected_index"]) if i == row))))
    return sorted(pairs)


def test_standard_dpo_keeps_one_rejected_per_prompt_in_every_epoch_and_mscdpo_all_others(articles, tmp_path):
    standard = _trainer(tmp_path / "s", articles, standard_dpo=True)
    msc = _trainer(tmp_path / "m", articles)
    rows, all_rows = standard.train_dataset, msc.train_dataset
    assert all(len(r) == 1 for r in rows["rejected"])
    assert all(r[0] in others for r, others in zip(rows["rejected"], all_rows["rejected"]))  # another paragraph
    picks = [others.index(r[0]) for r, others in zip(rows["rejected"], all_rows["rejected"])]
    assert len(set(picks)) > 1  # drawn per prompt, not always the first
    epochs = [_epoch_pairs(standard) for _ in range(3)]  # the dataloader reshuffles every pass
    assert epochs[0] == epochs[1] == epochs[2]
    expected = sorted(zip(rows["chosen"], (tuple(r) for r in rows["rejected"])))
    assert epochs[0] == [(c, r) for c, r in expected]
    assert _epoch_pairs(msc) == sorted((c, tuple(sorted(r))) for c, r in zip(all_rows["chosen"], all_rows["rejected"]))
    # the draw is part of the run's seed: the same seed the same negatives, another seed others
    again = _trainer(tmp_path / "s2", articles, standard_dpo=True).train_dataset
    other = MscDPOTrainer(make_model(0).train(), args=_config(tmp_path / "s3", standard_dpo=True, seed=1),
                          train_dataset=articles, processing_class=FlexMuseProcessor.tiny()).train_dataset
    assert list(again["rejected"]) == list(rows["rejected"]) != list(other["rejected"])
    with pytest.raises(ValueError, match="give one of the two"):
        _config(tmp_path, standard_dpo=True, max_rejected=1)


def test_sampled_rejected_rows_are_written_a_batch_of_articles_at_a_time(tmp_path, monkeypatch):
    make_corpus(str(tmp_path / "c"), articles=200, seed=4)
    articles = load_articles(str(tmp_path / "c"), "train")
    calls = []
    write = dpo_trainer.write_articles

    def counted(model, processor, topics, images, **kwargs):
        calls.append((len(topics), sum(map(len, images))))
        return write(model, processor, topics, images, **kwargs)

    monkeypatch.setattr(dpo_trainer, "write_articles", counted)
    rows = dpo_trainer.sampled_rejected_rows(make_model(0), FlexMuseProcessor.tiny(), articles, seed=0,
                                             max_new_tokens=3, batch_size=16, disable_tqdm=True)
    assert sum(n for n, _ in calls) == 200 and max(n for n, _ in calls) == 16 and len(calls) == 13
    assert sum(i for _, i in calls) == sum(map(len, articles["paragraphs"]))  # each image once
    assert 0 < len(rows) and all(len(r) == 1 for r in rows["rejected"])
