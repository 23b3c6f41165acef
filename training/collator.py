"""Batches of SFT rows for FlexMUSE, with an optional cache of frozen-encoder features."""

import hashlib
from typing import Optional

import torch

from images_flexmuse import load_image


def image_key(image) -> tuple:
    """Cache key from the pixels: one collator serves the train and the eval rows, whose article
    numbers overlap, and a repeated image is then encoded once."""
    return image.size, image.mode, hashlib.blake2b(image.tobytes(), digest_size=16).digest()


class FrozenFeatureCache:
    """CLIP features of each image and topic, computed the first time they are seen and reused
    afterwards (every later epoch). Valid only while the encoder is frozen."""

    def __init__(self, model):
        if any(p.requires_grad for p in model.mme.parameters()):
            raise ValueError("the feature cache needs a frozen encoder (freeze_encoder=True)")
        self.model = model
        self.images: dict = {}
        self.topics: dict = {}
        self.computed = 0  # images encoded so far: stays flat after the first epoch

    @torch.no_grad()
    def image_features(self, keys, images, image_processor) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [i for i, key in enumerate(keys) if key not in self.images]
        if missing:
            pixels = image_processor(images=[images[i] for i in missing], return_tensors="pt")["pixel_values"]
            pooled, tokens = self.model.encode_images(pixels.to(self.model.device))
            for row, i in enumerate(missing):
                self.images[keys[i]] = (pooled[row].cpu(), tokens[row].cpu())
            self.computed += len(missing)
        pooled, tokens = zip(*(self.images[key] for key in keys))
        return torch.stack(pooled), torch.stack(tokens)

    @torch.no_grad()
    def topic_features(self, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [tuple(row[m.bool()].tolist()) for row, m in zip(input_ids, attention_mask)]
        missing = [i for i, key in enumerate(keys) if key not in self.topics]
        if missing:
            pooled, tokens, _ = self.model.encode_topics(input_ids[missing].to(self.model.device),
                                                         attention_mask[missing].to(self.model.device))
            for row, i in enumerate(missing):
                self.topics[keys[i]] = (pooled[row].cpu(), tokens[row].cpu())
        pooled, tokens = zip(*(self.topics[key] for key in keys))
        return torch.stack(pooled), torch.stack(tokens)  # topics are padded to one fixed length


def gate_u(seed: int, article: int, chunk: int) -> float:
    """The msaGate's u for one example, a pure function of (seed, article, chunk): mscDPO's policy,
    its reference and precomputed reference log-probs then see the same gate decision."""
    digest = hashlib.blake2b(f"{seed}:{article}:{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class FlexMuseCollator:
    """SFT rows (topic, image, paragraph) → model inputs. Rows sharing a topic share one topic
    row (`topic_index`), so the text tower runs once per distinct topic in the batch."""

    image_column = "image"

    def __init__(self, processor, feature_cache: Optional[FrozenFeatureCache] = None):
        self.processor = processor
        self.cache = feature_cache

    def prompt_inputs(self, rows: list[dict]) -> dict:
        """Topic and image inputs, or their cached features, for rows with a topic and an image."""
        topics = list(dict.fromkeys(row["topic"] for row in rows))
        text = self.processor.topic_tokenizer(topics, padding="max_length", truncation=True,
                                              max_length=self.processor.max_topic_length, return_tensors="pt")
        batch = {"attention_mask": text["attention_mask"],
                 "topic_index": torch.tensor([topics.index(row["topic"]) for row in rows])}
        images = [load_image(row[self.image_column]) for row in rows]
        if self.cache is None:
            batch["input_ids"] = text["input_ids"]
            batch["pixel_values"] = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        else:
            keys = [image_key(image) for image in images]
            batch["image_features"] = self.cache.image_features(keys, images, self.processor.image_processor)
            batch["topic_features"] = self.cache.topic_features(text["input_ids"], text["attention_mask"])
        return batch

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.prompt_inputs(rows)
        batch["labels"] = self.processor.encode_paragraphs([row["paragraph"] for row in rows])
        return batch


class MscDPOCollator(FlexMuseCollator):
    """mscDPO rows (topic, image, chosen, rejected list) → prompt inputs once per row, the chosen
    labels (B, T), every rejected paragraph flat (R, T) with its row (`rejected_index`) and its
    slot among the row's `max_rejected` (`rejected_slot`), the msaGate's u per row, and the
    precomputed reference log-probs when the rows carry them."""

    image_column = "prompt_image"

    def __init__(self, processor, feature_cache: Optional[FrozenFeatureCache] = None, max_rejected: int = 3,
                 gate_seed: int = 0):
        super().__init__(processor, feature_cache)
        self.max_rejected, self.gate_seed = max_rejected, gate_seed

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.prompt_inputs(rows)
        for number, row in enumerate(rows):
            if not 1 <= len(row["rejected"]) <= self.max_rejected:
                raise ValueError(f"row {number} ({row['topic']!r}) has {len(row['rejected'])} rejected paragraphs; "
                                 f"between 1 and max_rejected={self.max_rejected} are allowed")
        rejected = [(n, k, text) for n, row in enumerate(rows) for k, text in enumerate(row["rejected"])]
        batch["chosen_labels"] = self.processor.encode_paragraphs([row["chosen"] for row in rows])
        batch["rejected_labels"] = self.processor.encode_paragraphs([text for _, _, text in rejected])
        batch["rejected_index"] = torch.tensor([n for n, _, _ in rejected])
        batch["rejected_slot"] = torch.tensor([k for _, k, _ in rejected])
        batch["gate_u"] = torch.tensor([gate_u(self.gate_seed, row["article"], row["chunk"]) for row in rows])
        if "ref_chosen_logps" in rows[0]:
            batch["ref_chosen_logps"] = torch.tensor([row["ref_chosen_logps"] for row in rows])
            batch["ref_rejected_logps"] = torch.tensor([row["ref_rejected_logps"] for row in rows])
        return batch


__all__ = ["FlexMuseCollator", "FrozenFeatureCache", "MscDPOCollator", "gate_u"]
