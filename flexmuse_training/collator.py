"""Training rows to model inputs, through the processor, with an optional cache of frozen-encoder features."""

import hashlib
from typing import Optional

import torch


class FrozenFeatureCache:
    """CLIP features of each image and topic, computed the first time they are seen and reused
    afterwards (every later epoch, and by the train and eval rows alike). Valid only while the
    encoder is frozen. Images are keyed by their processed pixels, topics by their token ids."""

    def __init__(self, model):
        if model.encoder_trainable:
            raise ValueError("the feature cache needs a frozen encoder (freeze_encoder=True)")
        self.model = model
        self.images: dict = {}
        self.topics: dict = {}
        self.computed = 0  # images encoded so far: stays flat after the first epoch

    @torch.no_grad()
    def encode(self, inputs) -> dict:
        """Processor `inputs` with `input_ids` / `pixel_values` replaced by their cached
        `topic_features` / `image_features` (the `(pooled, tokens)` pairs `get_memory` takes)."""
        inputs = dict(inputs)
        inputs["image_features"] = self._image_features(inputs.pop("pixel_values"))
        inputs["topic_features"] = self._topic_features(inputs.pop("input_ids"), inputs["attention_mask"])
        return inputs

    def _image_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys = [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in pixel_values]
        missing = [i for i, key in enumerate(keys) if key not in self.images]
        if missing:
            pooled, tokens = self.model.encode_images(pixel_values[missing].to(self.model.device))
            for row, i in enumerate(missing):
                self.images[keys[i]] = (pooled[row].cpu(), tokens[row].cpu())
            self.computed += len(missing)
        pooled, tokens = zip(*(self.images[key] for key in keys))
        return torch.stack(pooled), torch.stack(tokens)

    def _topic_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        mask = attention_mask.bool()
        keys = [tuple(row[m].tolist()) for row, m in zip(input_ids, mask)]
        missing = [i for i, key in enumerate(keys) if key not in self.topics]
        if missing:
            pooled, tokens, _ = self.model.encode_topics(input_ids[missing].to(self.model.device),
                                                         attention_mask[missing].to(self.model.device))
            for row, i in enumerate(missing):
                # only the topic's own positions: the text tower's states there do not depend on
                # how far the batch it came in was padded
                self.topics[keys[i]] = (pooled[row].cpu(), tokens[row][mask[i]].cpu())
        pooled = torch.stack([self.topics[key][0] for key in keys])
        cached = [self.topics[key][1] for key in keys]
        tokens = cached[0].new_zeros(*input_ids.shape, cached[0].shape[-1])  # (A, L, D), zero on padding
        for row, states in enumerate(cached):
            tokens[row, mask[row]] = states
        return pooled, tokens


def gate_u(seed: int, article: int, chunk: int) -> float:
    """The msaGate's u for one example, a pure function of (seed, article, chunk): mscDPO's policy,
    its reference and precomputed reference log-probs then see the same gate decision."""
    digest = hashlib.blake2b(f"{seed}:{article}:{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class FlexMuseCollator:
    """SFT rows (topic, image, paragraph) → model inputs, built by the processor as when writing:
    each row is a one-image article, and rows sharing a topic share its row (`topic_index`), so the
    text tower runs once per distinct topic in the batch."""

    image_column = "image"

    def __init__(self, processor, feature_cache: Optional[FrozenFeatureCache] = None):
        self.processor = processor
        self.cache = feature_cache

    def prompt_inputs(self, rows: list[dict], paragraph_column: Optional[str] = None) -> dict:
        """Topic and image inputs (or their cached features) for rows with a topic and an image,
        plus `labels` from `paragraph_column` when given."""
        paragraphs = None if paragraph_column is None else [[row[paragraph_column]] for row in rows]
        inputs = self.processor([row["topic"] for row in rows], [[row[self.image_column]] for row in rows], paragraphs)
        return self.cache.encode(inputs) if self.cache is not None else dict(inputs)

    def __call__(self, rows: list[dict]) -> dict:
        return self.prompt_inputs(rows, paragraph_column="paragraph")


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
        for number, row in enumerate(rows):
            if not 1 <= len(row["rejected"]) <= self.max_rejected:
                raise ValueError(f"row {number} ({row['topic']!r}) has {len(row['rejected'])} rejected paragraphs; "
                                 f"between 1 and max_rejected={self.max_rejected} are allowed")
        batch = self.prompt_inputs(rows, paragraph_column="chosen")
        batch["chosen_labels"] = batch.pop("labels")
        rejected = [(n, k, text) for n, row in enumerate(rows) for k, text in enumerate(row["rejected"])]
        batch["rejected_labels"] = self.processor.encode_paragraphs([text for _, _, text in rejected])
        batch["rejected_index"] = torch.tensor([n for n, _, _ in rejected])
        batch["rejected_slot"] = torch.tensor([k for _, k, _ in rejected])
        batch["gate_u"] = torch.tensor([gate_u(self.gate_seed, row["article"], row["chunk"]) for row in rows])
        if "ref_chosen_logps" in rows[0]:
            batch["ref_chosen_logps"] = torch.tensor([row["ref_chosen_logps"] for row in rows])
            batch["ref_rejected_logps"] = torch.tensor([row["ref_rejected_logps"] for row in rows])
        return batch


__all__ = ["FlexMuseCollator", "FrozenFeatureCache", "MscDPOCollator", "gate_u"]
