"""The diffusers pipeline `FlexMusePipeline`: topic (+ optional images) → illustrated article.

Paper Fig. 2: T2I (optional) → CLIP → msaGate (Eq. 1) → fusion (Eq. 2-4) → T5. With images the T2I
step is skipped; with a topic only, the T2I part draws the images in one batched call, one seed
per image. The writing itself is writing_flexmuse.py's, shared with the transformers task
(task_flexmuse.py) and with evaluation.
"""

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline
from diffusers.utils import BaseOutput, replace_example_docstring
from PIL import Image

try:
    from .article_flexmuse import Article
    from .checks_flexmuse import check_writing_options, model_path_kind
    from .images_flexmuse import ImageInput, load_images
    from .modeling_flexmuse import FlexMuseForConditionalGeneration, dtype_kwargs
    from .processing_flexmuse import FlexMuseProcessor, check_topic
    from .quantization_flexmuse import quantization_config
    from .writing_flexmuse import draw_seeds, rewrite_article, write_articles
except ImportError:  # imported as a top-level module from a checkout
    from article_flexmuse import Article
    from checks_flexmuse import check_writing_options, model_path_kind
    from images_flexmuse import ImageInput, load_images
    from modeling_flexmuse import FlexMuseForConditionalGeneration, dtype_kwargs
    from processing_flexmuse import FlexMuseProcessor, check_topic
    from quantization_flexmuse import quantization_config
    from writing_flexmuse import draw_seeds, rewrite_article, write_articles

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from pipeline_flexmuse import FlexMusePipeline

        >>> pipe = FlexMusePipeline.from_model("org/flexmuse-base-en", t2i="stabilityai/sd-turbo")
        >>> out = pipe(
        ...     "A library by the sea", num_images=3, num_inference_steps=1, guidance_scale=0.0,
        ...     generator=torch.Generator().manual_seed(0),
        ... )
        >>> out.article.save("out/")  # article.html, article.md, article.json, images/*.png
        >>> len(out.paragraphs) == len(out.images) == 3
        True
        ```
"""


@dataclass
class FlexMusePipelineOutput(BaseOutput):
    """
    Args:
        article (`Article`): topic, (image, paragraph) sections and metadata; `article.save(dir)`.
        paragraphs (`list[str]`): one paragraph per image.
        images (`list[PIL.Image.Image]` or `np.ndarray` or `torch.Tensor`): the article's images in
            the requested `output_type`.
    """

    article: Article
    paragraphs: list[str]
    images: list[Image.Image] | np.ndarray | torch.Tensor


class FlexMusePipeline(DiffusionPipeline):
    r"""
    Topic (+ optional images) → illustrated article (paper Fig. 2).

    Components:
        model ([`FlexMuseForConditionalGeneration`]): CLIP encoder, msaGate, fusion and T5 writer.
        processor ([`FlexMuseProcessor`]): CLIP image processor, topic tokenizer, writer tokenizer.
        t2i_vae, t2i_text_encoder, t2i_tokenizer, t2i_unet, t2i_scheduler (*optional*): the components of
            a Stable Diffusion text-to-image pipeline (SD 1.x / 2.x architecture, e.g. SD-Turbo or
            Taiyi-Stable-Diffusion-Chinese). Without them, images are required.
    """

    _optional_components = ["t2i_vae", "t2i_text_encoder", "t2i_tokenizer", "t2i_unet", "t2i_scheduler"]
    _t2i_parts = ("vae", "text_encoder", "tokenizer", "unet", "scheduler")

    def __init__(self, model, processor, t2i_vae=None, t2i_text_encoder=None, t2i_tokenizer=None, t2i_unet=None,
                 t2i_scheduler=None):
        super().__init__()
        self.register_modules(model=model, processor=processor, t2i_vae=t2i_vae, t2i_text_encoder=t2i_text_encoder,
                              t2i_tokenizer=t2i_tokenizer, t2i_unet=t2i_unet, t2i_scheduler=t2i_scheduler)
        self._t2i_pipeline = None  # built on first use, see `text_to_image`

    @property
    def has_t2i(self) -> bool:
        return all(getattr(self, f"t2i_{part}", None) is not None for part in self._t2i_parts)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        r"""
        Load a saved `FlexMusePipeline` (folder or hub id with `model_index.json`).

        The model and processor folders hold their own remote code. With `trust_remote_code=True`
        diffusers loads them from there; otherwise the installed `flexmuse` package loads them.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if model_path_kind(path) == "model":
            raise ValueError(f"no model_index.json in {path!r}: a FlexMUSE model, not a saved FlexMusePipeline "
                             "(load it with FlexMusePipeline.from_model)")
        if not kwargs.get("trust_remote_code"):
            if not os.path.isdir(path):
                download = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
                path = cls.download(path, **download)
            dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
            if "model" not in kwargs:
                kwargs["model"] = FlexMuseForConditionalGeneration.from_pretrained(os.path.join(path, "model"),
                                                                                   **dtype_kwargs(dtype))
            kwargs.setdefault("processor", FlexMuseProcessor.from_pretrained(os.path.join(path, "processor")))
            pretrained_model_name_or_path = path
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        pipe.model.eval()
        return pipe

    @classmethod
    def load(cls, model: str, t2i: str | None = None, dtype: torch.dtype | None = None,
             quantize: str | None = None):
        """A saved FlexMusePipeline folder, or a FlexMUSE model (folder or Hub id) assembled by
        `from_model`; `t2i` (a Stable Diffusion repo) adds the text-to-image part, or replaces a
        saved pipeline's; `quantize="int8"` loads the writer's weights quantized (`quantization_flexmuse`)."""
        if model_path_kind(model) != "pipeline":
            return cls.from_model(model, t2i=t2i, dtype=dtype, quantize=quantize)
        writer = {}
        if quantize:  # the saved pipeline's writer, from its own sub-folder, quantized
            writer["model"] = FlexMuseForConditionalGeneration.from_pretrained(
                model, subfolder="model", quantization_config=quantization_config(quantize), **dtype_kwargs(dtype))
        pipe = cls.from_pretrained(model, **writer, **dtype_kwargs(dtype))
        if t2i:
            pipe = cls(model=pipe.model, processor=pipe.processor, **cls.load_t2i(t2i, dtype=dtype))
        return pipe

    @classmethod
    def from_model(cls, model: str, t2i: str | None = None, dtype: torch.dtype | None = None,
                   quantize: str | None = None):
        """Assemble from a FlexMUSE model repo (weights + processor) and, optionally, a Stable
        Diffusion repo whose components become the T2I part (hub ids or local folders); `quantize`
        as in `load`."""
        if model_path_kind(model) == "pipeline":
            raise ValueError(f"{model!r} is a saved FlexMusePipeline: load it with FlexMusePipeline.from_pretrained")
        quantized = {} if quantize is None else {"quantization_config": quantization_config(quantize)}
        model_obj = FlexMuseForConditionalGeneration.from_pretrained(model, **dtype_kwargs(dtype), **quantized).eval()
        t2i_parts = {} if t2i is None else cls.load_t2i(t2i, dtype)
        return cls(model=model_obj, processor=FlexMuseProcessor.from_pretrained(model), **t2i_parts)

    @classmethod
    def load_t2i(cls, t2i: str, dtype: torch.dtype | None = None) -> dict:
        """The `t2i_*` components from a Stable Diffusion repo (hub id or local folder)."""
        sd = StableDiffusionPipeline.from_pretrained(t2i, safety_checker=None, feature_extractor=None,
                                                     requires_safety_checker=False, **dtype_kwargs(dtype))
        return {f"t2i_{part}": getattr(sd, part) for part in cls._t2i_parts}

    def text_to_image(self, prompt: str, seeds: Sequence[int], height=None, width=None, num_inference_steps=50,
                      guidance_scale=7.5) -> list[Image.Image]:
        """One batched Stable Diffusion call: len(seeds) images of `prompt`, one seed each."""
        sd = self._text_to_image_pipeline()
        sd.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        # the latents are drawn where the T2I part runs: the generators must live there
        generators = [torch.Generator(device=sd._execution_device).manual_seed(seed) for seed in seeds]
        # num_images_per_prompt: the prompt goes through the text encoder once, not once per image
        return sd(prompt=prompt, num_images_per_prompt=len(seeds), generator=generators, height=height, width=width,
                  num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, output_type="pil").images

    def _text_to_image_pipeline(self) -> StableDiffusionPipeline:
        """A Stable Diffusion pipeline over the `t2i_*` components, built once and rebuilt only when one of
        them has been replaced (e.g. the VAE by a tiny autoencoder)."""
        parts = {part: getattr(self, f"t2i_{part}") for part in self._t2i_parts}
        sd = self._t2i_pipeline
        if sd is None or any(getattr(sd, part) is not module for part, module in parts.items()):
            sd = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False)
            self._t2i_pipeline = sd
        return sd

    def check_inputs(
        self,
        topic: str,
        images: Sequence[ImageInput] | None,
        num_images: int | None,
        num_inference_steps: int,
        max_new_tokens: int,
        num_beams: int,
        temperature: float,
        top_p: float,
        output_type: str,
        generate_kwargs: dict,
    ) -> None:
        check_topic(topic)
        check_writing_options({
            "num_images": num_images if images is None else None,  # the limit is on drawn images
            "num_inference_steps": num_inference_steps, "max_new_tokens": max_new_tokens, "num_beams": num_beams,
            "temperature": temperature, "top_p": top_p, **generate_kwargs,
        })
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if images is not None and len(images) == 0:
            raise ValueError("images is empty: pass at least one image, or none to draw them with the T2I part")
        if images is not None and num_images is not None and num_images != len(images):
            raise ValueError(f"got {len(images)} images and num_images={num_images}: give one or the other")
        if images is None and not self.has_t2i:
            raise ValueError("no images given and this pipeline has no text-to-image part: pass images, or load "
                             "the pipeline with a T2I model (FlexMusePipeline.from_model(..., t2i=...))")

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        topic: str,
        images: Sequence[ImageInput] | None = None,
        num_images: int | None = None,
        generator: torch.Generator | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        max_new_tokens: int = 128,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        gate_mode: str | None = None,
        rerank: int = 1,
        image_specificity: bool = True,
        streamer=None,
        output_type: str = "pil",
        return_dict: bool = True,
        **generate_kwargs: Any,
    ) -> FlexMusePipelineOutput | tuple:
        r"""
        Write an illustrated article about `topic`.

        Args:
            topic (`str`): the article's topic or title.
            images (`list` of paths, PIL images or numpy arrays, *optional*): one paragraph is written
                per image. Without images, the T2I part draws `num_images` of them.
            num_images (`int`, *optional*, defaults to 3 without images): how many images to draw.
                With `images`, it may be left out or equal `len(images)`; anything else is an error
                (the pipeline neither drops nor invents pictures the caller did not ask for).
            generator (`torch.Generator`, *optional*): makes the article reproducible: it seeds each
                image (one seed per image), the msaGate thresholds and sampled decoding.
            num_inference_steps, guidance_scale, height, width: Stable Diffusion settings (SD-Turbo:
                `num_inference_steps=1, guidance_scale=0.0`).
            max_new_tokens, num_beams, do_sample, temperature, top_p (and any other
                `generate` option): decoding of the paragraphs.
            gate_mode (`str`, *optional*): msaGate (Eq. 1) mode, one of `configuration_flexmuse.GATE_MODES`;
                default from the model config.
            rerank (`int`, defaults to 1): write this many candidates per image (samples with `do_sample`,
                else the best beams of a search at least this wide) and keep the first that is likelier under
                its own image than under any other of the article (the most specific when none is).
                1 is plain writing.
            image_specificity (`bool`, defaults to `True`): score each paragraph under every image of the
                article; each section's metadata then holds `image_specificity` (nats per token by which
                the paragraph is likelier under its own image than under the likeliest other one; None
                for a one-image article) and `image_specificity_low` (≤ 0: it may describe another image).
            streamer ([`ParagraphStreamer`] or another `BaseStreamer`, *optional*): receives every
                paragraph's tokens as they are decoded, all paragraphs in one batch. Under beam search
                and with `rerank` a paragraph is final only at the end: it then arrives whole.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"` for `images`.
            return_dict (`bool`, defaults to `True`): return a [`FlexMusePipelineOutput`] instead of
                the tuple `(paragraphs, images)`.

        Examples:
        """
        self.check_inputs(topic, images, num_images, num_inference_steps, max_new_tokens, num_beams, temperature,
                          top_p, output_type, {"rerank": rerank, **generate_kwargs})
        pictures = None if images is None else load_images(images)  # fail before any work
        count = num_images if pictures is None else len(pictures)
        if count is None:
            count = 3
        *image_seeds, gate_seed, decode_seed = draw_seeds(generator, count + 2)
        if pictures is None:
            pictures = self.text_to_image(topic, image_seeds, height, width, num_inference_steps, guidance_scale)

        article = write_articles(
            self.model, self.processor, [topic], [pictures], gate_seed, decode_seed, gate_mode=gate_mode,
            rerank=rerank, image_specificity=image_specificity, streamer=streamer, max_new_tokens=max_new_tokens,
            num_beams=num_beams, do_sample=do_sample, temperature=temperature, top_p=top_p, **generate_kwargs,
        )[0]
        if images is None:
            article.metadata["seeds"]["images"] = image_seeds
            for section, seed in zip(article.sections, image_seeds):
                section.metadata["seed"] = seed
        self.maybe_free_model_hooks()

        return self._output(article, output_type, return_dict)

    @torch.no_grad()
    def rewrite(
        self,
        article: Article | str,
        indices: int | Sequence[int],
        generator: torch.Generator | None = None,
        max_new_tokens: int = 128,
        num_beams: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        gate_mode: str | None = None,
        rerank: int = 1,
        streamer=None,
        output_type: str = "pil",
        return_dict: bool = True,
        **generate_kwargs: Any,
    ) -> FlexMusePipelineOutput | tuple:
        r"""
        Write some paragraphs of an article anew and keep the rest byte for byte.

        Args:
            article (`Article` or `str`): the article, or the folder (or article.json) of a saved one. To
                replace a photo, set `article.sections[i].image` and rewrite paragraph i.
            indices (`int` or `list[int]`): the paragraphs to rewrite, 0-based.
            generator, max_new_tokens, num_beams, do_sample, temperature, top_p, gate_mode, rerank,
                streamer, output_type, return_dict: as in `__call__`; the streamer receives the rewritten
                paragraphs only, in order.

        Returns a new [`FlexMusePipelineOutput`] (the given article is not changed): the kept paragraphs,
        images and topic are those of `article`; its metadata records the rewrite under `rewrites`, and
        every paragraph's image specificity is scored again.
        """
        if not isinstance(article, Article):
            article = Article.load(article)
        check_writing_options({"max_new_tokens": max_new_tokens, "num_beams": num_beams, "temperature": temperature,
                               "top_p": top_p, "rerank": rerank, **generate_kwargs})
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        gate_seed, decode_seed = draw_seeds(generator, 2)
        rewritten = rewrite_article(
            self.model, self.processor, article, indices, gate_seed, decode_seed, gate_mode=gate_mode, rerank=rerank,
            streamer=streamer, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample,
            temperature=temperature, top_p=top_p, **generate_kwargs,
        )
        self.maybe_free_model_hooks()
        return self._output(rewritten, output_type, return_dict)

    @staticmethod
    def _output(article: Article, output_type: str, return_dict: bool):
        out_images = _convert_images(article.images, output_type)
        if not return_dict:
            return article.paragraphs, out_images
        return FlexMusePipelineOutput(article=article, paragraphs=article.paragraphs, images=out_images)


def _convert_images(images: list[Image.Image], output_type: str):
    if output_type == "pil":
        return images
    arrays = [np.asarray(image, dtype=np.float32) / 255.0 for image in images]  # (H, W, 3) each
    if output_type == "np":
        return arrays if len({a.shape for a in arrays}) > 1 else np.stack(arrays)
    tensors = [torch.from_numpy(a).permute(2, 0, 1) for a in arrays]  # (3, H, W)
    return tensors if len({t.shape for t in tensors}) > 1 else torch.stack(tensors)


__all__ = ["FlexMusePipeline", "FlexMusePipelineOutput"]
