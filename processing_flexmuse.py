"""FlexMUSE processor: CLIP image processor + CLIP text tokenizer (topics) + the writer's tokenizer."""

from typing import Sequence, Union

import torch
from transformers import AutoImageProcessor, AutoTokenizer, BatchFeature, ByT5Tokenizer, CLIPImageProcessor
from transformers.processing_utils import ProcessorMixin

try:
    from .images_flexmuse import ImageInput, load_images
except ImportError:  # imported as a top-level module from a checkout
    from images_flexmuse import ImageInput, load_images


def check_topic(topic, article: int | None = None) -> None:
    """A topic must be visible text; `article` numbers it within a batch."""
    where = "" if article is None else f" (article {article})"
    if not isinstance(topic, str):
        raise ValueError(f"topic must be text{where}, got {type(topic).__name__}: {topic!r}")
    if not topic.strip():
        raise ValueError(f"empty topic{where}: a topic needs at least one visible character")


class FlexMuseProcessor(ProcessorMixin):
    r"""
    Prepares articles for [`FlexMuseForConditionalGeneration`].

    Args:
        image_processor: CLIP's image processor (`pixel_values`).
        tokenizer: the writer's (T5) tokenizer: paragraphs to `labels`, generated ids back to text.
        topic_tokenizer: CLIP's text tokenizer for the topics (`input_ids`, `attention_mask`).
        max_topic_length (`int`): topics are truncated to this many tokens.
        max_paragraph_length (`int`): paragraphs are truncated to this many tokens.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        topic_tokenizer=None,
        max_topic_length: int = 64,
        max_paragraph_length: int = 256,
        **kwargs,
    ):
        self.max_topic_length = max_topic_length
        self.max_paragraph_length = max_paragraph_length
        super().__init__(image_processor, tokenizer, topic_tokenizer, **kwargs)

    def __call__(
        self,
        topics: Union[str, Sequence[str]],
        images: Union[Sequence[ImageInput], Sequence[Sequence[ImageInput]]],
        paragraphs: Union[Sequence[str], Sequence[Sequence[str]]] | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        r"""
        Model inputs for one article (`topics` a string, `images` a list) or several (a list of
        topics and a list of image lists). This is the one way topics and images become model inputs:
        writing, the training collators and evaluation all call it, so they cannot drift apart.
        Images are paths, PIL images, arrays or tensors; what `images_flexmuse.load_images` returned
        is used as it is, not normalised again.

        Returns `input_ids` and `attention_mask` (one row per distinct topic, padded to the longest),
        `pixel_values` and `topic_index` (one row per image: the row of its topic) and, given
        `paragraphs` (one per image), `labels` padded with -100. Articles that share a topic share its
        row, so the text tower encodes each distinct topic once.
        """
        single = isinstance(topics, str)
        topics = [topics] if single else list(topics)
        images = [images] if single else list(images)
        if len(images) != len(topics):
            raise ValueError(f"got {len(topics)} topics but {len(images)} image lists")
        for number, topic in enumerate(topics):
            check_topic(topic, number)
        for number, article_images in enumerate(images):
            if not article_images:
                raise ValueError(f"article {number} ({topics[number]!r}) has no images")

        distinct = list(dict.fromkeys(topics))
        text = self.topic_tokenizer(
            distinct, padding=True, truncation=True, max_length=self.max_topic_length, return_tensors=return_tensors
        )
        pictures = [picture for article_images in images for picture in load_images(article_images)]
        pixel_values = self.image_processor(images=pictures, return_tensors=return_tensors)["pixel_values"]
        row = {topic: number for number, topic in enumerate(distinct)}
        topic_index = torch.tensor([row[topic] for topic, article_images in zip(topics, images) for _ in article_images])
        data = {
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "pixel_values": pixel_values,
            "topic_index": topic_index,
        }
        if paragraphs is not None:
            paragraphs = [paragraphs] if single else list(paragraphs)
            flat = []
            for number, (article_images, article_paragraphs) in enumerate(zip(images, paragraphs)):
                if len(article_paragraphs) != len(article_images):
                    raise ValueError(
                        f"article {number} ({topics[number]!r}) has {len(article_images)} images but "
                        f"{len(article_paragraphs)} paragraphs"
                    )
                flat.extend(article_paragraphs)
            data["labels"] = self.encode_paragraphs(flat)
        return BatchFeature(data=data)

    def encode_paragraphs(self, paragraphs: Sequence[str]) -> torch.LongTensor:
        """Paragraphs to writer token ids, padded with -100 so the loss ignores the padding."""
        encoded = self.tokenizer(
            list(paragraphs), padding=True, truncation=True, max_length=self.max_paragraph_length, return_tensors="pt"
        )
        return encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)

    def decode_paragraphs(self, token_ids) -> list[str]:
        """Generated writer ids back to paragraphs (special tokens dropped, whitespace trimmed)."""
        return [text.strip() for text in self.tokenizer.batch_decode(token_ids, skip_special_tokens=True)]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_components(cls, encoder: str, decoder: str, **kwargs) -> "FlexMuseProcessor":
        """The processor matching `FlexMuseForConditionalGeneration.from_components(encoder, decoder)`."""
        return cls(
            image_processor=AutoImageProcessor.from_pretrained(encoder),
            tokenizer=AutoTokenizer.from_pretrained(decoder),
            topic_tokenizer=AutoTokenizer.from_pretrained(encoder),
            **kwargs,
        )

    @classmethod
    def tiny(cls, image_size: int = 32) -> "FlexMuseProcessor":
        """Processor of the `tiny` preset: byte-level tokenizers (no files) and `image_size` pixels."""
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
        return cls(image_processor=image_processor, tokenizer=ByT5Tokenizer(), topic_tokenizer=ByT5Tokenizer())


FlexMuseProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["FlexMuseProcessor", "check_topic"]
