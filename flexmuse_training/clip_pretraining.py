"""Contrastive pretraining of a small CLIP on a corpus's (image, caption) pairs, then frozen in FlexMUSE.

The paper's encoder is a pretrained, frozen CLIP. The tiny preset's CLIP is random unless it learns
somewhere: this stage teaches it the corpus's pictures (CLIP's own contrastive loss,
`CLIPModel(..., return_loss=True)`, on transformers' `Trainer`) and saves an ordinary CLIP
checkpoint folder (weights, image processor, tokenizer) that `from_components` and
`--encoder_name_or_path` take. Captions are the articles' `captions` (the offline corpus writes a
short one per image), or their paragraphs.

Where the articles record their images' attributes, an image is shown most of the time (three
quarters by default) with a caption of its attributes alone ("画面左侧有一个红色的圆形"). In a
batch of whole captions, those that differ from an image's own only in position or shape rarely
meet (theme and subject already tell most apart), and nothing then makes the CLIP tell left from
right; among attribute-only captions they meet in every batch. Varying one attribute of that
caption gives the zero-shot check of each attribute that recall@1 over whole captions cannot give.

The demo's CLIP learns from a corpus of its own (`CLIP_CORPUS`), ten times the writer's. What limits
its shape is the number of distinct pictures, not the steps (bench/RESULTS.md, bench_clip): on 1,185
pictures, the writer's corpus size, it names the shape of 0.82 of held-out pictures zero-shot and a
linear probe on its pooled features 0.83-0.84, after 1,500 or 3,000 steps alike; on 12,000 pictures
and 3,000 steps (3 minutes on 2 CPU cores), zero-shot shape 0.97 and position 1.00. Position is
learnt late there: at 1,500 steps it stood at 0.34, hence the steps.
"""

from dataclasses import dataclass, field

import torch
from datasets import Dataset, Features, Image, List, Value
from transformers import CLIPModel, Trainer, TrainingArguments

from images_flexmuse import load_image
from processing_flexmuse import FlexMuseProcessor

from .corpus_text import ATTRIBUTE_VALUES, describe
from .data import DEFAULT_LANG
from .resume import resumable, run_record, train_or_finish
from .trainer_args import OutputDirArguments


# `flexmuse make-corpus` arguments of the demo CLIP's corpus (the Makefile spells them out; a test holds
# them equal), from a seed no other corpus here uses.
CLIP_CORPUS = {"articles": 4000, "seed": 11, "eval_articles": 50}


@dataclass
class ClipPretrainingConfig(OutputDirArguments, TrainingArguments):
    r"""
    `TrainingArguments` for CLIP pretraining, with defaults for the tiny preset on the offline corpus.

    Args:
        image_size (`int`, defaults to 64): the CLIP's input resolution.
        max_caption_length (`int`, defaults to 96): captions are truncated to this many tokens (the
            text tower's positions are set to it).
    """

    output_dir: str = "out/clip"
    image_size: int = field(default=64, metadata={"help": "the CLIP's input resolution (the corpus draws 64 px)"})
    max_caption_length: int = field(default=96, metadata={"help": "caption tokens kept"})
    whole_caption_share: float = field(default=0.25, metadata={
        "help": "share of rows shown their whole caption; the others their attribute-only caption, where recorded"})
    max_steps: int = 3000
    per_device_train_batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    lr_scheduler_type: str = "cosine"
    logging_steps: int = 500
    save_strategy: str = "no"
    report_to: str = "none"
    remove_unused_columns: bool = False  # the collator reads the image and caption columns


def caption_pairs(articles: Dataset) -> Dataset:
    """One row per image: `image`, its `caption` (the article's `captions`, else its paragraphs) and
    `views`: the caption and, where the image's attributes are recorded, their caption alone."""

    def explode(batch):
        out = {"image": [], "caption": [], "views": [], "attributes": [], "lang": []}
        for images, captions, paragraphs, attributes, lang in zip(batch["images"], batch["captions"],
                                                                  batch["paragraphs"], batch["attributes"],
                                                                  batch["lang"]):
            for index, image in enumerate(images):
                caption = (captions or paragraphs)[index]
                truth = attributes[index] if attributes else None
                out["image"].append(image)
                out["caption"].append(caption)
                out["views"].append([caption, describe(truth, lang or DEFAULT_LANG)] if truth else [caption])
                out["attributes"].append(truth)
                out["lang"].append(lang or DEFAULT_LANG)
        return out

    raw = articles.cast_column("images", List(Image(decode=False)))  # no decoding and re-encoding
    features = Features({"image": Image(decode=False), "caption": Value("string"), "views": List(Value("string")),
                         "attributes": {a: Value("string") for a in ATTRIBUTE_VALUES}, "lang": Value("string")})
    pairs = raw.map(explode, batched=True, remove_columns=raw.column_names, features=features)
    return pairs.cast_column("image", Image())


class CaptionCollator:
    """(image, caption) rows → CLIP inputs, asking the model for its contrastive loss: each row's
    whole caption a `whole_share` of the time, else its attribute-only caption. `encode` processes
    every pair once up front, in memory: the same few thousand pictures come back every epoch, and reading rows
    back from an Arrow table costs more than the tiny CLIP's step."""

    def __init__(self, image_processor, tokenizer, max_length: int, whole_share: float = 0.25):
        self.image_processor, self.tokenizer, self.max_length = image_processor, tokenizer, max_length
        self.whole_share = whole_share

    def pixels(self, images) -> torch.Tensor:
        return self.image_processor(images=[load_image(image) for image in images], return_tensors="pt")["pixel_values"]

    def text(self, captions: list[str]) -> dict:
        return self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def encode(self, pairs: Dataset) -> list[dict]:
        views = [self.tokenizer(list(v), truncation=True, max_length=self.max_length)["input_ids"]
                 for v in pairs["views"]]
        return [{"pixel_values": p, "views": v} for p, v in zip(self.pixels(pairs["image"]), views)]

    def __call__(self, rows: list[dict]) -> dict:
        picks = []
        for row in rows:
            whole = len(row["views"]) == 1 or torch.rand(()) < self.whole_share
            picks.append(row["views"][0 if whole else int(torch.randint(1, len(row["views"]), ()))])
        text = self.tokenizer.pad({"input_ids": picks}, return_tensors="pt")
        return {**text, "pixel_values": torch.stack([row["pixel_values"] for row in rows]), "return_loss": True}


def _text_embeds(model, collator, captions: list[str], batch_size: int = 256) -> torch.Tensor:
    parts = [model.get_text_features(**collator.text(captions[i: i + batch_size]).to(model.device)).pooler_output
             for i in range(0, len(captions), batch_size)]
    return torch.nn.functional.normalize(torch.cat(parts), dim=-1)  # (C, D)


def _image_embeds(model, collator, images, batch_size: int = 256) -> torch.Tensor:
    parts = [model.get_image_features(pixel_values=collator.pixels(images[i: i + batch_size]).to(model.device))
             .pooler_output for i in range(0, len(images), batch_size)]
    return torch.nn.functional.normalize(torch.cat(parts), dim=-1)  # (N, D)


@torch.no_grad()
def zero_shot_accuracy(model: CLIPModel, collator: CaptionCollator, pairs: Dataset) -> dict:
    """Per attribute, the share of images whose attribute-only caption is more similar to them than
    every caption that differs from it in that attribute alone ({} without recorded attributes)."""
    if not all(pairs["attributes"]):
        return {}
    model.eval()
    images = _image_embeds(model, collator, pairs["image"])  # (N, D)
    scores = {}
    for attribute, values in ATTRIBUTE_VALUES.items():
        captions = [describe({**truth, attribute: value}, lang)
                    for truth, lang in zip(pairs["attributes"], pairs["lang"]) for value in values]
        texts = _text_embeds(model, collator, captions).view(len(images), len(values), -1)  # (N, V, D)
        best = torch.einsum("nd,nvd->nv", images, texts).argmax(-1).tolist()
        scores[f"zero_shot_{attribute}"] = sum(values[b] == truth[attribute] for b, truth in
                                               zip(best, pairs["attributes"])) / len(images)
    return scores


@torch.no_grad()
def image_to_caption_recall(model: CLIPModel, collator: CaptionCollator, pairs: Dataset) -> float:
    """Recall@1 of image → caption over `pairs`: the share of images whose most similar caption,
    among the distinct captions of `pairs`, is their own (identical captions count as one)."""
    model.eval()
    captions = list(dict.fromkeys(pairs["caption"]))
    best = (_image_embeds(model, collator, pairs["image"]) @ _text_embeds(model, collator, captions).T).argmax(-1)
    return sum(captions[b] == caption for b, caption in zip(best.tolist(), pairs["caption"])) / len(pairs)


def pretrain_clip(model: CLIPModel, tokenizer, args: ClipPretrainingConfig, train: Dataset,
                  evaluation: Dataset) -> dict:
    """Train `model` contrastively on the articles `train`, save it with its image processor and
    tokenizer to `args.output_dir`, and return the held-out recall@1 before and after (and the steps
    reached, `resume.run_record`). Resumes from `args.resume_from_checkpoint` when set."""
    image_processor = FlexMuseProcessor.tiny(args.image_size).image_processor  # the one the tiny preset uses
    collator = CaptionCollator(image_processor, tokenizer, args.max_caption_length,
                               args.whole_caption_share)
    held_out = caption_pairs(evaluation)
    before = image_to_caption_recall(model, collator, held_out)
    trainer = Trainer(model=model, args=args, train_dataset=collator.encode(caption_pairs(train)),
                      data_collator=collator)
    with resumable(args.output_dir):
        result = train_or_finish(trainer, args.resume_from_checkpoint)
    after = image_to_caption_recall(model, collator, held_out)
    zero_shot = zero_shot_accuracy(model, collator, held_out)
    if trainer.is_world_process_zero():
        model.save_pretrained(args.output_dir)
        collator.image_processor.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
    return {"train_loss": result.training_loss, "recall@1_before": before, "recall@1": after, **zero_shot,
            "captions_held_out": len(set(held_out["caption"])), "images_held_out": len(held_out), **run_record(trainer)}


__all__ = ["CLIP_CORPUS", "CaptionCollator", "ClipPretrainingConfig", "caption_pairs", "image_to_caption_recall",
           "pretrain_clip", "zero_shot_accuracy"]
