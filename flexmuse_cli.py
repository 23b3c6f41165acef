"""`flexmuse` command line: `flexmuse write ...` writes an illustrated article to a folder, `flexmuse rewrite ...`
writes some of its paragraphs anew."""

import argparse
import os
import shutil
import sys
from typing import Sequence


def _write_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "write", parents=[common],
        help="write an illustrated article about a topic",
        description="Write an illustrated article: one paragraph per image. Without --images, the "
        "text-to-image model (--t2i, or the one saved in a FlexMusePipeline folder) draws them. With --data, "
        "write every article of a split to a JSONL file instead (resumable; under `torchrun` or `accelerate "
        "launch` the processes share the split and write the articles one process would).",
    )
    parser.add_argument("--model", required=True,
                        help="FlexMUSE model repo or a saved FlexMusePipeline folder (hub id or local dir)")
    parser.add_argument("--topic", help="the article's topic or title")
    parser.add_argument("--data", default=None,
                        help="articles (folder, JSONL/CSV or Hub dataset) whose topics and images are written; "
                        "--out is then a JSONL file")
    parser.add_argument("--split", default="test", help="the split of --data (default test)")
    parser.add_argument("--batch-articles", type=int, default=16, help="with --data: articles per generate call")
    parser.add_argument("--max-articles", type=int, default=None, help="with --data: the first N articles only")
    _decoding_arguments(parser)
    parser.add_argument("--images", nargs="+", metavar="IMAGE", help="image files, one paragraph each")
    parser.add_argument("--num-images", type=int, default=None,
                        help="images to draw when no --images are given (default 3)")
    parser.add_argument("--t2i", default=None, help="Stable Diffusion repo for the text-to-image part")
    parser.add_argument("--num-inference-steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.set_defaults(func=_write)


def _decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `write` and `rewrite` share: output folder, decoding, device."""
    parser.add_argument("--out", required=True, help="output folder (article.html, article.md, images/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the article already in --out (otherwise a non-empty --out is refused)")
    parser.add_argument("--seed", type=int, default=None, help="makes images, gate and sampling reproducible")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--do-sample", action="store_true")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--rerank", type=int, default=1, metavar="K",
                        help="write K candidates per image and keep the first about its own image (default 1)")
    parser.add_argument("--stream", action="store_true",
                        help="print the paragraphs as they are written (under beam search or --rerank, each "
                        "when it is final)")
    # configuration_flexmuse.GATE_MODES (a test holds them equal): importing it here would load
    # transformers before `flexmuse --help` could answer
    parser.add_argument("--gate-mode", choices=("sample", "open", "closed"), default=None)
    parser.add_argument("--device", default="cuda" if _cuda_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    # quantization_flexmuse.QUANTIZATIONS (kept equal by a test), for the same reason as --gate-mode
    parser.add_argument("--quantize", choices=("int8",), default=None,
                        help="load the weights quantized (torchao int8 weight-only; needs flexmuse[quantization])")


def _rewrite_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "rewrite", parents=[common], help="write some paragraphs of a saved article anew, keeping the others",
        description="Rewrite paragraphs of a saved article (the folder `flexmuse write` wrote): the paragraphs "
        "named by --paragraph are written anew from their images, the others are kept as they are.",
    )
    parser.add_argument("--article", required=True, help="the saved article's folder (or its article.json)")
    parser.add_argument("--paragraph", type=int, action="append", default=[], metavar="N",
                        help="a paragraph to rewrite, numbered from 1 as in the article (repeatable)")
    parser.add_argument("--replace-image", nargs=2, action="append", default=[], metavar=("N", "IMAGE"),
                        help="replace photo N by IMAGE and rewrite its paragraph (repeatable)")
    parser.add_argument("--model", default=None,
                        help="FlexMUSE model repo or saved pipeline (default: the model the article names)")
    _decoding_arguments(parser)
    parser.set_defaults(func=_rewrite)

def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_device(device: str) -> None:
    """A missing GPU would otherwise show as the driver's error, after the model has loaded."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device!r} is not a device (cpu, cuda, cuda:1, ...)") from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available on this machine; use --device cpu")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


def _decoding(args: argparse.Namespace) -> dict:
    return {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "do_sample": args.do_sample,
            "temperature": args.temperature, "top_p": args.top_p, "rerank": args.rerank, "gate_mode": args.gate_mode}


def _load_pipeline(args: argparse.Namespace, model: str, t2i: str | None = None):
    import torch

    from pipeline_flexmuse import FlexMusePipeline

    if args.dtype == "float16" and torch.device(args.device).type == "cpu":
        print(f"flexmuse {args.command}: warning: --dtype float16 on cpu runs, but slowly: most CPUs compute in "
              "float16 far slower than in float32", file=sys.stderr)
    pipe = FlexMusePipeline.load(model, t2i=t2i, dtype=getattr(torch, args.dtype), quantize=args.quantize)
    # diffusers warns that a float16 pipeline moved to the CPU "will fail": PyTorch runs float16 there
    return pipe.to(args.device, silence_dtype_warnings=True)


def _streamer(args: argparse.Namespace, pipe):
    if not args.stream:
        return None
    from streaming_flexmuse import ConsoleStreamer

    return ConsoleStreamer(pipe.processor.tokenizer)


def _write(args: argparse.Namespace) -> int:
    if args.data is not None:
        return _write_split(args)
    if not args.topic:
        raise ValueError("give --topic (one article) or --data (every article of a split)")
    import torch

    from article_flexmuse import check_output_folder
    from checks_flexmuse import check_writing_options
    from images_flexmuse import load_images

    # every mistake that can be seen from the options fails here, before any model loads
    check_writing_options({
        "num_images": None if args.images else args.num_images, "num_inference_steps": args.num_inference_steps,
        "seed": args.seed, **_decoding(args),
    }, cli=True)
    _check_device(args.device)
    check_output_folder(args.out, args.overwrite)
    images = load_images(args.images) if args.images else None
    pipe = _load_pipeline(args, args.model, args.t2i)
    if images is None and not pipe.has_t2i:  # the pipeline's own message names its Python arguments
        raise ValueError(f"no --images given and {args.model!r} has no text-to-image part to draw them: pass "
                         "--images, or --t2i with a Stable Diffusion model")
    generator = None if args.seed is None else torch.Generator().manual_seed(args.seed)
    output = pipe(
        args.topic, images=images, num_images=args.num_images, generator=generator,
        num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale,
        streamer=_streamer(args, pipe), **_decoding(args),
    )
    output.article.metadata["model"] = args.model
    if args.seed is not None:
        output.article.metadata["seed"] = args.seed
    output.article.save(args.out, overwrite=args.overwrite)
    print(f"wrote {len(output.paragraphs)} sections to {os.path.join(args.out, 'article.html')} "
          f"(also article.md, article.json, images/)")
    return 0


def _rewrite(args: argparse.Namespace) -> int:
    import torch

    from article_flexmuse import Article, check_output_folder
    from checks_flexmuse import check_writing_options
    from images_flexmuse import load_images
    from writing_flexmuse import check_rewrite_indices

    check_writing_options({"seed": args.seed, **_decoding(args)}, cli=True)
    _check_device(args.device)
    article = Article.load(args.article)
    replaced = {}
    for number, path in args.replace_image:
        if not number.isdigit():
            raise ValueError(f"--replace-image {number} {path}: N must be a photo number from 1 to "
                             f"{len(article.sections)}")
        replaced[int(number) - 1] = load_images([path])[0]
    numbers = sorted(set(args.paragraph) | {index + 1 for index in replaced})
    if not numbers:
        raise ValueError("nothing to rewrite: give --paragraph N (numbered from 1) or --replace-image N IMAGE")
    try:
        indices = check_rewrite_indices(article, [number - 1 for number in numbers])
    except ValueError:
        raise ValueError(f"--paragraph {', '.join(map(str, numbers))}: the article has {len(article.sections)} paragraphs, numbered "
                         f"1 to {len(article.sections)}") from None
    model = args.model or article.metadata.get("model")
    if not model:
        raise ValueError(f"{args.article!r} does not name the model that wrote it: pass --model")
    check_output_folder(args.out, args.overwrite)
    for index, image in replaced.items():
        article.sections[index].image = image
    pipe = _load_pipeline(args, model)
    generator = None if args.seed is None else torch.Generator().manual_seed(args.seed)
    output = pipe.rewrite(article, indices, generator=generator, streamer=_streamer(args, pipe), **_decoding(args))
    record = output.article.metadata["rewrites"][-1]
    record["model"] = model
    if args.seed is not None:
        record["seed"] = args.seed
    output.article.save(args.out, overwrite=args.overwrite)
    print(f"rewrote paragraph{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))} into "
          f"{os.path.join(args.out, 'article.html')}")
    return 0


def _corpus_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "make-corpus", parents=[common], help="write the offline procedural corpus (imagefolder layout)",
        description="Write train/validation/test splits of procedural illustrated articles, each split "
        "from its own seed, as <out>/<split>/metadata.jsonl + PNG images.",
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--articles", type=int, default=400, help="training articles")
    parser.add_argument("--eval-articles", type=int, default=0,
                        help="validation and test articles each (default articles/8, at least 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lang", choices=("zh", "en"), default="zh")
    parser.add_argument("--chunks", type=int, default=None, help="images per article (default: 2-4 at random)")
    parser.add_argument("--shortcut", type=float, default=None, metavar="SHARE",
                        help="the topic-shortcut variant: every topic names a colour, which each image has with "
                        "probability SHARE (e.g. 0.8) in train and validation and never in test; rows also hold "
                        "topic_colour (default: the ordinary corpus)")
    parser.set_defaults(func=_make_corpus)


def _make_corpus(args: argparse.Namespace) -> int:
    from flexmuse_training.corpus import make_corpus

    sizes = make_corpus(args.out, args.articles, seed=args.seed, lang=args.lang, eval_articles=args.eval_articles,
                        chunks=args.chunks, shortcut=args.shortcut)
    variant = "" if args.shortcut is None else f", topic shortcut {args.shortcut:g}"
    print(f"wrote {sizes} articles ({args.lang}{variant}) to {args.out}")
    return 0


def _space_parser(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "make-space", parents=[common], help="assemble a Hugging Face Space folder for the web demo",
        description="Write a Space folder: app.py and the modules it imports, requirements.txt, a README.md with "
        "the Space front matter, the model (copied into model/) and example articles from the corpus.",
    )
    parser.add_argument("--out", required=True, help="the Space folder")
    parser.add_argument("--model", required=True, help="a FlexMUSE model or pipeline folder (copied), or a Hub id")
    parser.add_argument("--data", default=None, help="a corpus whose test articles become the page's examples")
    parser.add_argument("--examples", type=int, default=3)
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier Space folder at --out")
    parser.set_defaults(func=_make_space)


def _make_space(args: argparse.Namespace) -> int:
    from flexmuse_training.space import make_space

    make_space(args.out, args.model, data=args.data, examples=args.examples, overwrite=args.overwrite)
    print(f"wrote the Space folder {args.out} (upload it to a Space with sdk: gradio)")
    return 0


def _write_split(args: argparse.Namespace) -> int:
    """`flexmuse write --data`: every article of a split into the JSONL file --out."""
    from accelerate import PartialState

    from checks_flexmuse import check_writing_options
    from flexmuse_training.data import load_articles
    from flexmuse_training.split_writing import write_split_jsonl

    if args.topic or args.images or args.t2i or args.stream:
        raise ValueError("--data writes the split's own topics and images: drop --topic, --images, --t2i and --stream")
    check_writing_options({"seed": args.seed, **_decoding(args)}, cli=True)
    if os.path.exists(args.out) and not args.overwrite:
        raise FileExistsError(f"--out {args.out}: already written (--overwrite replaces it)")
    # cpu=True: several CPU processes (torchrun) join through gloo, where accelerate would otherwise see none
    state = PartialState(cpu=str(args.device) == "cpu")
    device = args.device if state.num_processes == 1 else state.device  # one GPU per process
    _check_device(str(device))
    articles = load_articles(args.data, args.split)
    if args.max_articles:
        articles = articles.select(range(min(args.max_articles, len(articles))))
    pipe = _load_pipeline(argparse.Namespace(**{**vars(args), "device": device}), args.model)
    seed = 0 if args.seed is None else args.seed
    writing = {k: v for k, v in _decoding(args).items() if v is not None}
    run = {"model": args.model, "data": args.data, "split": args.split, "quantize": args.quantize,
           "dtype": args.dtype, **writing}
    if args.overwrite and state.is_main_process:  # starts anew: neither the finished file nor a run's parts kept
        if os.path.exists(args.out):
            os.remove(args.out)
        shutil.rmtree(args.out + ".parts", ignore_errors=True)
    written = write_split_jsonl(pipe.model, pipe.processor, articles, args.out, run, args.batch_articles, seed,
                                state, **writing)
    if state.is_main_process:
        print(f"{args.out}: {len(articles)} articles ({written} written now by {state.num_processes} "
              f"process(es), {len(articles) - written} by an earlier run)")
    return 0


def _evaluate_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a trained model on a test split (ROUGE, BERTScore, LLM judge, alignment)",
        description="Scores a model with the evaluator; `flexmuse evaluate --help` lists its options.", add_help=False,
    )
    parser.add_argument("options", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from flexmuse_training.errors import run_script
    from flexmuse_training.evaluate import main as evaluate

    return run_script(evaluate, args.options, prog="flexmuse evaluate")  # its own one-line errors and --debug


def _forward_evaluate(argv: list) -> int | None:
    """`flexmuse evaluate ...` hands every option to the evaluator's own parser (argparse's
    REMAINDER does not pass on options such as --help that come first)."""
    if argv[:1] != ["evaluate"]:
        return None
    return _evaluate(argparse.Namespace(options=argv[1:]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexmuse", description="FlexMUSE: multi-modal creative writing")
    subparsers = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    _write_parser(subparsers, common)
    _rewrite_parser(subparsers, common)
    _corpus_parser(subparsers, common)
    _space_parser(subparsers, common)
    _evaluate_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    forwarded = _forward_evaluate(argv)
    if forwarded is not None:
        return forwarded
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # the user's mistakes (options, images, model and output paths: ImageLoadError is a ValueError,
    # FileNotFoundError and PermissionError are OSErrors) get one line; anything else is a bug and keeps
    # its traceback
    except (ValueError, OSError) as err:
        if args.debug:
            raise
        from checks_flexmuse import user_error_line

        print(user_error_line(f"flexmuse {args.command}", err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
