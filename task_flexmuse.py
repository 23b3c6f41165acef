"""The transformers pipeline task `"flexmuse"`: `pipeline("flexmuse", model=...)(topic, images=[...])`.

A thin `Pipeline` over writing_flexmuse.py, saved beside the weights of every FlexMUSE model repo so
that `pipeline("flexmuse", model=repo, trust_remote_code=True)` works without this package (and
without diffusers). The text-to-image part is the diffusers `FlexMusePipeline`'s.
"""

import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

try:
    from .checks_flexmuse import check_writing_options
    from .images_flexmuse import load_images
    from .writing_flexmuse import assemble_articles, draw_seeds, generate_paragraphs, writing_metadata
except ImportError:  # imported as a top-level module from a checkout
    from checks_flexmuse import check_writing_options
    from images_flexmuse import load_images
    from writing_flexmuse import assemble_articles, draw_seeds, generate_paragraphs, writing_metadata

TASK = "flexmuse"


class FlexMuseWritingPipeline(Pipeline):
    r"""
    Topic + images → illustrated [`Article`] (paper Fig. 2 without the text-to-image step).

    Inputs: a topic with `images=[...]` (paths, PIL images or numpy arrays), a dict
    `{"topic": ..., "images": [...]}`, or a list of such dicts, which are written together in one
    batch (one `generate` call). Keyword arguments: `seed` (makes the msaGate and sampling
    reproducible), `gate_mode` and any `generate` option (`max_new_tokens`, `num_beams`, `do_sample`, ...).

    The steps follow the `Pipeline` contract: `preprocess` loads the images and runs the processor,
    `_forward` builds the memory and generates, `postprocess` decodes into articles.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __call__(self, inputs, images=None, **kwargs):
        single = not isinstance(inputs, (list, tuple))
        articles = [inputs] if single else list(inputs)
        batch = []
        for number, item in enumerate(articles):
            if isinstance(item, str):
                item = {"topic": item, "images": images}
            if not isinstance(item, dict) or "topic" not in item:
                raise ValueError(f"article {number}: expected a topic string or a dict with 'topic' and 'images', "
                                 f"got {type(item).__name__}")
            if not item.get("images"):
                raise ValueError(f"article {number} ({item['topic']!r}) has no images; this pipeline needs images "
                                 "(FlexMusePipeline can draw them with its text-to-image part)")
            batch.append(item)
        # the articles go through the steps as one item (a tuple: `Pipeline` would split a list
        # into one generate call per article)
        written = super().__call__(tuple(batch), **kwargs)
        return written[0] if single else written

    def save_pretrained(self, save_directory, **kwargs):
        """Model, remote code (`custom_pipelines`) and the whole processor, both tokenizers included."""
        super().save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)

    def _sanitize_parameters(self, seed=None, gate_mode=None, **generate_kwargs):
        generate_kwargs = {"max_new_tokens": 128, **generate_kwargs}
        check_writing_options(generate_kwargs)
        return {}, {"seed": seed, "gate_mode": gate_mode, "generate_kwargs": generate_kwargs}, {}

    def preprocess(self, articles: tuple) -> dict:
        topics = [article["topic"] for article in articles]
        # the sections keep the loaded pictures, which the processor then uses without loading them again
        images = [load_images(article["images"]) for article in articles]
        return {"inputs": self.processor(topics, images), "topics": topics, "images": images}

    def _forward(self, model_inputs: dict, seed: int | None = None, gate_mode: str | None = None,
                 generate_kwargs: dict | None = None) -> dict:
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        gate_seed, decode_seed = draw_seeds(generator, 2)
        generated = generate_paragraphs(self.model, model_inputs["inputs"], gate_seed, decode_seed, gate_mode,
                                        **generate_kwargs)
        metadata = writing_metadata(self.model, gate_seed, decode_seed, gate_mode, generate_kwargs)
        return {**generated, "topics": model_inputs["topics"], "images": model_inputs["images"], "metadata": metadata}

    def postprocess(self, model_outputs: dict):
        return assemble_articles(self.processor, model_outputs["topics"], model_outputs["images"], model_outputs,
                                 model_outputs["metadata"])


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=FlexMuseWritingPipeline, pt_model=AutoModel,
                                    type="multimodal")

__all__ = ["TASK", "FlexMuseWritingPipeline"]
