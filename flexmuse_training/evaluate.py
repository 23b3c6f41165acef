"""Evaluate a trained FlexMUSE model on a split (paper §5): `flexmuse evaluate` and training/evaluate.py.

    flexmuse evaluate --model out/dpo --data data/corpus --split test \
        [--judge_url http://localhost:8000/v1 --judge_model qwen2.5-7b-instruct] [--update_model_card out/dpo]

Writes the model's articles for the split and scores them with the `Evaluator`: ROUGE-1/2/L F1
(Chinese by characters or jieba words, named in the report), BERTScore F1, the LLM judge's ten
scores (paper Fig. 3, with an OpenAI-compatible endpoint), the alignment accuracy, the CLIP
paragraph-image similarity and CLIPScore, and the captioning metrics VIST results are quoted in
(BLEU-1..4, METEOR, ROUGE-L, CIDEr; `--data` may be a VIST folder). Out: results.json, results.md, predictions.jsonl and, with a judge,
judge_scores.png.

Under `accelerate launch --num_processes N` the processes share the writing (each writes its share of
the batches, with the seeds one process would use, so the articles are the same), the main process
scores the articles and writes the files. On CPU, `torchrun --nproc_per_node N` starts the processes
(accelerate launches several CPU processes only through MPI).
"""

import json
import logging
import os
from dataclasses import asdict, dataclass, field

import torch
from accelerate import PartialState
from transformers import HfArgumentParser

from checks_flexmuse import check_model_option, check_writing_options
from modeling_flexmuse import FlexMuseForConditionalGeneration
from processing_flexmuse import FlexMuseProcessor

from .data import load_articles
from .evaluation import Evaluator
from .hub import update_model_index
from .judge import CRITERIA, JudgeClient

logger = logging.getLogger("flexmuse.evaluate")


@dataclass
class EvaluateArguments:
    model: str = field(default="out/dpo", metadata={"help": "trained FlexMUSE folder or Hub id"})
    data: str = field(default="data/corpus", metadata={"help": "articles: folder, JSONL/CSV, or Hub dataset"})
    split: str = "test"
    out: str = field(default="eval_out", metadata={"help": "folder for results.json, results.md, the chart"})
    skip_bad: bool = field(default=False, metadata={
        "help": "skip (and count) articles with a missing or unreadable image instead of stopping"})
    max_articles: int | None = field(default=None, metadata={"help": "score the first N articles only"})
    batch_articles: int = field(default=16, metadata={"help": "articles written per generate call"})
    max_new_tokens: int = 256
    num_beams: int = 1
    rerank: int = field(default=1, metadata={"help": "candidates per image, the first about its own image kept"})
    seed: int = field(default=0, metadata={"help": "seeds the msaGate draws and any sampling"})
    rouge_tokenization: str = field(default="char", metadata={"help": "Chinese ROUGE units: char | jieba"})
    bertscore: bool = True
    captioning: bool = field(default=True, metadata={
        "help": "BLEU-1..4, METEOR, ROUGE-L and CIDEr of whole stories, as VIST papers report them (pycocoevalcap; "
                "METEOR and its PTB tokenizer need Java, skipped with the reason without it)"})
    bertscore_model: str | None = field(default=None, metadata={
        "help": "model name or local path; default: bert_score's choice for the language"})
    bertscore_layers: int | None = field(default=None, metadata={"help": "needed for a model bert_score does not know"})
    judge_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL (…/v1)"})
    judge_model: str = "gpt-4o"
    judge_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key"})
    judge_workers: int = 4
    judge_timeout: float = 60.0
    judge_retries: int = 3
    judge_cache: str | None = field(default=None, metadata={"help": "default: OUT/judge_cache.jsonl"})
    update_model_card: str | None = field(default=None, metadata={
        "help": "model folder whose README.md model-index receives the numbers"})


def bar_chart(scores: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    names = [name for name in CRITERIA if scores.get(name) is not None]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(names, [scores[name] for name in names], color=["#4c72b0"] * 5 + ["#dd8452"] * 5)
    ax.set_ylim(0, 5)
    ax.set_ylabel("mean score (1-5)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    check_model_option("model", args.model)  # before the data: a typo costs no loading
    check_writing_options({"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams, "rerank": args.rerank,
                           "seed": args.seed})
    if args.update_model_card and not os.path.isdir(args.update_model_card):
        raise FileNotFoundError(f"--update_model_card {args.update_model_card!r}: no such folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    articles = load_articles(args.data, args.split, skip_bad=args.skip_bad)
    if args.max_articles:
        articles = articles.select(range(min(args.max_articles, len(articles))))
    # one process, or those of `accelerate launch`/torchrun, one GPU each; cpu=True: CPU processes join (gloo)
    state = PartialState(cpu=not torch.cuda.is_available())
    model = FlexMuseForConditionalGeneration.from_pretrained(args.model).eval().to(state.device)
    processor = FlexMuseProcessor.from_pretrained(args.model)
    if state.is_main_process:
        os.makedirs(args.out, exist_ok=True)
    extra = ["clip"] + (["captioning"] if args.captioning else []) + (["bertscore"] if args.bertscore else [])
    judge = None
    if args.judge_url:
        extra.append("judge")
        judge = JudgeClient(args.judge_url, args.judge_model, api_key_env=args.judge_key_env,
                            timeout=args.judge_timeout, retries=args.judge_retries, max_workers=args.judge_workers,
                            cache_path=args.judge_cache or os.path.join(args.out, "judge_cache.jsonl"))
    evaluator = Evaluator(extra_metrics=extra, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                          rerank=args.rerank, seed=args.seed, batch_articles=args.batch_articles,
                          rouge_tokenization=args.rouge_tokenization,
                          bertscore_model=args.bertscore_model, bertscore_layers=args.bertscore_layers, judge=judge, state=state)
    result = evaluator(model, processor, articles)
    results = {"model": args.model, "data": args.data, "split": args.split, **result.info,
               "processes": state.num_processes,
               "arguments": asdict(args), "metrics": result.metrics}
    if not state.is_main_process:
        return results
    if judge is not None:
        bar_chart(result.metrics, os.path.join(args.out, "judge_scores.png"), f"LLM judge: {args.model}")

    with open(os.path.join(args.out, "predictions.jsonl"), "w", encoding="utf-8") as handle:
        for record, article in zip(articles, result.articles):
            handle.write(json.dumps({"topic": record["topic"], "prediction": article.paragraphs,
                                     "reference": record["paragraphs"]}, ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, ensure_ascii=False)
    report = result.to_markdown(f"Model `{args.model}` on split `{args.split}` of `{args.data}`")
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    if args.update_model_card:
        dataset_type = args.data if not os.path.exists(args.data) else os.path.basename(os.path.abspath(args.data))
        update_model_index(args.update_model_card, result.metrics, dataset_name=dataset_type,
                           dataset_type=dataset_type, split=args.split)
    print(report)
    return results


if __name__ == "__main__":
    main()
