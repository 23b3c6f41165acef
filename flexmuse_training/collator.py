"""Training rows to model inputs, through the processor. Collators never run the model: they may
run in DataLoader workers, and a worker must not touch the accelerator. With a frozen encoder they
name each image and topic by content, and the trainer looks the features up in its
`FrozenFeatureStore` (feature_store.py)."""

import hashlib

import torch

from .feature_store import content_key


def example_draw(seed: int, article: int, chunk: int, purpose: str = "") -> float:
    """A number in [0, 1) that is a pure function of (seed, article, chunk, purpose): the same in
    every epoch, process and resumed run. `purpose` keeps draws for different uses independent."""
    key = f"{purpose}:{seed}:{article}:{chunk}" if purpose else f"{seed}:{article}:{chunk}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def gate_u(seed: int, article: int, chunk: int) -> float:
    """The msaGate's u for one example in evaluation (SFT and mscDPO), so evaluation losses compare
    across steps (training draws u afresh at every step)."""
    return example_draw(seed, article, chunk)


class FlexMuseCollator:
    """SFT rows (topic, image, paragraph) → model inputs, built by the processor as when writing:
    each row is a one-image article, and rows sharing a topic share its row (`topic_index`), so the
    text tower runs once per distinct topic in the batch. With `content_keys`, each image and
    topic also gets its key for the trainer's feature store (`image_keys`, `topic_keys`). Every
    batch carries the msaGate's evaluation u per row (`gate_u`, from `gate_seed`); the trainers
    pass it to the model only in evaluation."""

    image_column = "image"  # data.SFT_ROW

    def __init__(self, processor, content_keys: bool = False, gate_seed: int = 0):
        self.processor = processor
        self.content_keys = content_keys
        self.gate_seed = gate_seed

    def prompt_inputs(self, rows: list[dict], paragraph_column: str | None = None) -> dict:
        """Topic and image inputs for rows with a topic and an image, plus `labels` from
        `paragraph_column` when given."""
        paragraphs = None if paragraph_column is None else [[row[paragraph_column]] for row in rows]
        inputs = dict(self.processor([row["topic"] for row in rows], [[row[self.image_column]] for row in rows],
                                     paragraphs))
        if self.content_keys:
            inputs["image_keys"] = [content_key(pixels) for pixels in inputs["pixel_values"]]
            inputs["topic_keys"] = [content_key(ids[mask.bool()])
                                    for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        inputs["gate_u"] = torch.tensor([gate_u(self.gate_seed, row["article"], row["chunk"]) for row in rows])
        return inputs

    def __call__(self, rows: list[dict]) -> dict:
        return self.prompt_inputs(rows, paragraph_column="paragraph")


class MscDPOCollator(FlexMuseCollator):
    """mscDPO rows (topic, image, chosen, rejected list) → prompt inputs once per row, the chosen
    labels (B, T), the rejected paragraphs flat (R, T) with their row (`rejected_index`) and their
    position in the row's rejected list (`rejected_slot`, < `slots`), the msaGate's u for
    evaluation, and the precomputed reference log-probs when the rows carry them.

    Every rejected paragraph of a row is in the batch (the trainer's `max_rejected` draws from them
    per training batch); `slots` is the longest rejected list of the data, which the trainer sets
    (the precomputed log-probs have one entry per slot).
    """

    image_column = "prompt_image"  # data.DPO_ROW

    def __init__(self, processor, content_keys: bool = False, gate_seed: int = 0, slots: int = 1):
        super().__init__(processor, content_keys, gate_seed)
        self.slots = slots

    def __call__(self, rows: list[dict]) -> dict:
        for number, row in enumerate(rows):
            if not 1 <= len(row["rejected"]) <= self.slots:
                raise ValueError(f"row {number} ({row['topic']!r}) has {len(row['rejected'])} rejected paragraphs; "
                                 f"between 1 and slots={self.slots} are allowed")
        batch = self.prompt_inputs(rows, paragraph_column="chosen")
        batch["chosen_labels"] = batch.pop("labels")
        rejected = [(n, k, text) for n, row in enumerate(rows) for k, text in enumerate(row["rejected"])]
        batch["rejected_labels"] = self.processor.encode_paragraphs([text for _, _, text in rejected])
        batch["rejected_index"] = torch.tensor([n for n, _, _ in rejected])
        batch["rejected_slot"] = torch.tensor([k for _, k, _ in rejected])
        if "ref_chosen_logps" in rows[0]:
            batch["ref_chosen_logps"] = torch.tensor([row["ref_chosen_logps"] for row in rows])  # (B, 2)
            batch["ref_rejected_logps"] = torch.tensor([row["ref_rejected_logps"] for row in rows])  # (B, 2, slots)
        return batch


__all__ = ["FlexMuseCollator", "MscDPOCollator", "example_draw", "gate_u"]
