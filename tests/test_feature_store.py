"""The frozen-feature store: the recomputed loss, each image encoded once, in the training process
only (any number of DataLoader workers), and its files removed with it."""

import os

import pytest
import torch

from helpers import corpus_fixture, make_model
from flexmuse_training.collator import FlexMuseCollator
from flexmuse_training.data import load_articles, sft_view
from flexmuse_training.feature_store import FrozenFeatureStore
from flexmuse_training.sft_config import FlexMuseSFTConfig
from flexmuse_training.sft_trainer import FlexMuseSFTTrainer
from processing_flexmuse import FlexMuseProcessor


corpus = corpus_fixture(articles=8, seed=0, eval_articles=2)


def test_stored_features_give_the_recomputed_loss_and_each_image_is_encoded_once(corpus, tmp_path):
    rows = list(sft_view(load_articles(corpus, "train")))
    model, processor = make_model(), FlexMuseProcessor.tiny()
    store = FrozenFeatureStore(model, str(tmp_path / "cache"))
    folder = store.directory
    assert folder.startswith(str(tmp_path / "cache")) and os.path.isdir(folder)
    plain, keyed = FlexMuseCollator(processor), FlexMuseCollator(processor, content_keys=True)
    with torch.no_grad():
        for epoch in range(2):
            for start in range(0, len(rows), 5):
                part = rows[start: start + 5]
                fresh = model(**plain(part), gate_mode="open").loss
                stored = model(**store.encode(keyed(part)), gate_mode="open").loss
                assert torch.allclose(fresh, stored, atol=1e-6), (epoch, start)
            distinct = len({tuple(row["image"].tobytes()) for row in rows})
            assert store.computed == distinct  # flat after the first epoch
    assert len(store.topics) == len({row["topic"] for row in rows})
    store.close()
    assert not os.path.exists(folder)
    model.set_encoder_trainable(True)
    with pytest.raises(ValueError, match="frozen encoder"):
        FrozenFeatureStore(model)


def test_the_collator_never_runs_the_model(corpus):
    processor = FlexMuseProcessor.tiny()
    rows = list(sft_view(load_articles(corpus, "train")))[:4]
    collator = FlexMuseCollator(processor, content_keys=True)
    assert not any(isinstance(value, torch.nn.Module) for value in vars(collator).values())  # it holds no model
    batch = collator(rows)
    assert "image_features" not in batch and len(batch["image_keys"]) == 4
    assert batch["image_keys"] == collator(rows)["image_keys"]  # keys by content: the same images, the same keys


def _losses(corpus, tmp_path, workers, feature_cache=True):
    model = make_model(0).train()
    main = os.getpid()
    encode = model.encode_images

    def encode_in_the_training_process(pixel_values):
        if os.getpid() != main:
            raise AssertionError("a DataLoader worker ran the encoder")
        return encode(pixel_values)

    model.encode_images = encode_in_the_training_process
    args = FlexMuseSFTConfig(output_dir=str(tmp_path / f"w{workers}{feature_cache}"), use_cpu=True, report_to="none",
                             max_steps=6, per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
                             dataloader_num_workers=workers, feature_cache=feature_cache, disable_tqdm=True,
                             num_train_epochs=2, seed=0)
    trainer = FlexMuseSFTTrainer(model, args=args, train_dataset=load_articles(corpus, "train"),
                                 processing_class=FlexMuseProcessor.tiny())
    trainer.train()
    computed = trainer.feature_store.computed if trainer.feature_store is not None else None
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry], computed


def test_any_number_of_workers_gives_the_same_training_as_none(corpus, tmp_path):
    serial, computed = _losses(corpus, tmp_path, workers=0)
    parallel, parallel_computed = _losses(corpus, tmp_path, workers=2)
    recomputed, _ = _losses(corpus, tmp_path, workers=2, feature_cache=False)
    assert len(serial) == 6
    assert serial == pytest.approx(parallel, abs=1e-6)
    assert serial == pytest.approx(recomputed, abs=1e-5)  # the store changes nothing but the time
    rows = len(sft_view(load_articles(corpus, "train")))
    assert computed == parallel_computed <= rows
