"""The transformers pipeline task `"flexmuse"`: `pipeline("flexmuse", model=...)(topic, images=[...])`.

A thin `Pipeline` over writing_flexmuse.py, saved beside the weights of every FlexMUSE model repo so
that `pipeline("flexmuse", model=repo, trust_remote_code=True)` works without this package (and
without diffusers). The text-to-image part is the diffusers `FlexMusePipeline`'s.
"""

import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

try:
    from .article_flexmuse import Article
    from .checks_flexmuse import check_writing_options
    from .images_flexmuse import load_images
    from .streaming_flexmuse import ParagraphStreamer
    from .writing_flexmuse import assemble_articles, draw_seeds, generate_paragraphs, rewrite_article, writing_metadata
except ImportError:  # imported as a top-level module from a checkout
    from article_flexmuse import Article
    from checks_flexmuse import check_writing_options
    from images_flexmuse import load_images
    from streaming_flexmuse import ParagraphStreamer
    from writing_flexmuse import assemble_articles, draw_seeds, generate_paragraphs, rewrite_article, writing_metadata

TASK = "flexmuse"


class FlexMuseWritingPipeline(Pipeline):
    r"""
    Topic + images → illustrated [`Article`] (paper Fig. 2 without the text-to-image step).

    Inputs: a topic with `images=[...]` (paths, PIL images or numpy arrays), a dict
    `{"topic": ..., "images": [...]}`, or a list of such dicts, which are written together in one
    batch (one `generate` call). Keyword arguments: `seed` (makes the msaGate and sampling
    reproducible), `gate_mode`, `rerank=k` (k candidates per image, the first about its own image kept),
    `image_specificity` (score each paragraph against its article's images; default True), `streamer` (a
    `ParagraphStreamer`: every paragraph as it is decoded) and any `generate` option (`max_new_tokens`,
    `num_beams`, `do_sample`, ...). `pipe(article, rewrite=[1], seed=...)` writes paragraph 1 (0-based) of
    an `Article` (or a saved article's folder) anew and keeps the others.

    The steps follow the `Pipeline` contract: `preprocess` loads the images and runs the processor,
    `_forward` builds the memory and generates, `postprocess` decodes into articles.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __call__(self, inputs, images=None, rewrite=None, **kwargs):
        if rewrite is not None:
            return self.rewrite(inputs, rewrite, **kwargs)
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

    def rewrite(self, article, indices, seed: int | None = None, gate_mode: str | None = None, rerank: int = 1,
                streamer=None, **generate_kwargs) -> Article:
        """`article` (an `Article`, or the folder or article.json of a saved one) with the paragraphs `indices`
        (0-based) written anew; the others, the images and the topic are kept as they are."""
        if not isinstance(article, Article):
            article = Article.load(article)
        generate_kwargs = {"max_new_tokens": 128, **generate_kwargs}
        check_writing_options({"seed": seed, "rerank": rerank, **generate_kwargs})
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        gate_seed, decode_seed = draw_seeds(generator, 2)
        rewritten = rewrite_article(self.model, self.processor, article, indices, gate_seed, decode_seed, gate_mode,
                                    rerank=rerank, streamer=streamer, **generate_kwargs)
        if seed is not None:
            rewritten.metadata["rewrites"][-1]["seed"] = int(seed)
        return rewritten

    def save_pretrained(self, save_directory, **kwargs):
        """Model, remote code (`custom_pipelines`) and the whole processor, both tokenizers included."""
        super().save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory)

    def _sanitize_parameters(self, seed=None, gate_mode=None, rerank=1, image_specificity=True, streamer=None,
                             **generate_kwargs):
        generate_kwargs = {"max_new_tokens": 128, **generate_kwargs}
        check_writing_options({"seed": seed, "rerank": rerank, **generate_kwargs})
        forward = {"seed": seed, "gate_mode": gate_mode, "rerank": rerank, "image_specificity": image_specificity,
                   "streamer": streamer, "generate_kwargs": generate_kwargs}
        return {}, forward, {}

    def preprocess(self, articles: tuple) -> dict:
        topics = [article["topic"] for article in articles]
        # the sections keep the loaded pictures, which the processor then uses without loading them again
        images = [load_images(article["images"]) for article in articles]
        return {"inputs": self.processor(topics, images), "topics": topics, "images": images}

    def _forward(self, model_inputs: dict, seed: int | None = None, gate_mode: str | None = None, rerank: int = 1,
                 image_specificity: bool = True, streamer=None, generate_kwargs: dict | None = None) -> dict:
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        gate_seed, decode_seed = draw_seeds(generator, 2)
        sizes = [len(images) for images in model_inputs["images"]]
        generated = generate_paragraphs(self.model, self.processor, model_inputs["inputs"], sizes, gate_seed,
                                        decode_seed, gate_mode, rerank=rerank, image_specificity=image_specificity,
                                        streamer=streamer, **generate_kwargs)
        generated.pop("memory")  # the paragraphs are written: `Pipeline` would move it to the CPU for nothing
        metadata = writing_metadata(self.model, gate_seed, decode_seed, gate_mode, generate_kwargs, rerank)
        if seed is not None:
            metadata["seed"] = int(seed)
        return {"written": generated, "topics": model_inputs["topics"], "images": model_inputs["images"],
                "metadata": metadata}

    def postprocess(self, model_outputs: dict):
        return assemble_articles(model_outputs["topics"], model_outputs["images"], model_outputs["written"],
                                 model_outputs["metadata"])


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=FlexMuseWritingPipeline, pt_model=AutoModel,
                                    type="multimodal")

__all__ = ["TASK", "FlexMuseWritingPipeline", "ParagraphStreamer"]
