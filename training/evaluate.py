"""Evaluate a trained FlexMUSE model on a test split (paper §5, DESIGN §5).

    python training/evaluate.py --model out/dpo --data data/corpus --split test \
        [--judge_url http://localhost:8000/v1 --judge_model qwen2.5-7b-instruct] [--update_model_card out/dpo]

Writes the model's articles for the split, then scores them: ROUGE-1/2/L F1 (Chinese by characters
or jieba words, named in the report), BERTScore F1, the LLM judge's ten scores (paper Fig. 3, with
an OpenAI-compatible endpoint), the alignment accuracy and the CLIP paragraph-image similarity.
Out: results.json, results.md, predictions.jsonl and, with a judge, judge_scores.png.
"""

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from transformers import HfArgumentParser

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from a checkout
from pipeline_flexmuse import FlexMusePipeline, write_articles  # noqa: E402
from training.data import load_articles  # noqa: E402
from training.hub import update_model_index  # noqa: E402
from training.judge import CRITERIA, JudgeClient, aggregate  # noqa: E402
from training.metrics import alignment_accuracy, bertscore_f1, clip_similarity, rouge_scores  # noqa: E402

logger = logging.getLogger("flexmuse.evaluate")


@dataclass
class EvaluateArguments:
    model: str = field(default="out/dpo", metadata={"help": "trained FlexMUSE folder or Hub id"})
    data: str = field(default="data/corpus", metadata={"help": "articles: folder, JSONL/CSV, or Hub dataset"})
    split: str = "test"
    out: str = field(default="eval_out", metadata={"help": "folder for results.json, results.md, the chart"})
    max_articles: Optional[int] = field(default=None, metadata={"help": "score the first N articles only"})
    batch_articles: int = field(default=16, metadata={"help": "articles written per generate call"})
    max_new_tokens: int = 256
    num_beams: int = 1
    seed: int = field(default=0, metadata={"help": "seeds the msaGate draws and any sampling"})
    rouge_tokenization: str = field(default="char", metadata={"help": "Chinese ROUGE units: char | jieba"})
    bertscore: bool = True
    bertscore_model: Optional[str] = field(default=None, metadata={
        "help": "model name or local path; default: bert_score's choice for the language"})
    bertscore_layers: Optional[int] = field(default=None, metadata={"help": "needed for a model bert_score does not know"})
    judge_url: Optional[str] = field(default=None, metadata={"help": "OpenAI-compatible base URL (…/v1)"})
    judge_model: str = "gpt-4o"
    judge_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key"})
    judge_workers: int = 4
    judge_timeout: float = 60.0
    judge_retries: int = 3
    judge_cache: Optional[str] = field(default=None, metadata={"help": "default: OUT/judge_cache.jsonl"})
    update_model_card: Optional[str] = field(default=None, metadata={
        "help": "model folder whose README.md model-index receives the numbers"})


def write_split(pipe, articles, args: EvaluateArguments) -> list[list[str]]:
    """The model's paragraphs for every article, `batch_articles` articles per generate call."""
    written = []
    for start in range(0, len(articles), args.batch_articles):
        part = articles.select(range(start, min(start + args.batch_articles, len(articles))))
        with torch.no_grad():
            batch = write_articles(pipe.model, pipe.processor, part["topic"], part["images"], gate_seed=args.seed + start,
                                   decode_seed=args.seed + start, max_new_tokens=args.max_new_tokens,
                                   num_beams=args.num_beams)
        written.extend(article.paragraphs for article in batch)
    return written


def judge_scores(args: EvaluateArguments, predictions: list[str], references: list[str], lang: str) -> dict:
    """The ten judge scores (SC^f … CO^a) averaged over the articles the judge scored."""
    client = JudgeClient(args.judge_url, args.judge_model, api_key_env=args.judge_key_env, timeout=args.judge_timeout,
                         retries=args.judge_retries, max_workers=args.judge_workers,
                         cache_path=args.judge_cache or os.path.join(args.out, "judge_cache.jsonl"))
    items = [{"prediction": p, "reference": r} for p, r in zip(predictions, references)]
    free = client.judge(items, lang=lang, reference_aware=False)
    aware = client.judge(items, lang=lang, reference_aware=True)
    return aggregate(free, aware)


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


def markdown(results: dict) -> str:
    rows = [("ROUGE-1", "rouge1"), ("ROUGE-2", "rouge2"), ("ROUGE-L", "rougeL"), ("BERTScore F1", "bertscore_f1"),
            ("alignment accuracy", "alignment_accuracy"), ("CLIP paragraph-image similarity", "clip_similarity")]
    rows += [(name, name) for name in CRITERIA]
    lines = [f"Model `{results['model']}` on split `{results['split']}` of `{results['data']}`: "
             f"{results['articles']} articles, {results['paragraphs']} paragraphs. ROUGE tokenised by "
             f"{results['rouge_tokenization']}.", "", "| metric | value |", "|---|---|"]
    for label, key in rows:
        value = results["metrics"].get(key)
        if value is not None:
            lines.append(f"| {label} | {value:.4f} |")
    if results.get("judge"):
        lines.append(f"\nJudge `{results['judge']['model']}`: {results['judge']['unscored']} of "
                     f"{results['judge']['judged']} judgements unscored (left out of the means, not counted as 0).")
    if results.get("bertscore_error"):
        lines.append(f"\nBERTScore not computed: {results['bertscore_error']}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    articles = load_articles(args.data, args.split)
    if args.max_articles:
        articles = articles.select(range(min(args.max_articles, len(articles))))
    lang = articles[0]["lang"] or "zh"
    pipe = FlexMusePipeline.from_model(args.model)
    if torch.cuda.is_available():
        pipe.to("cuda")
    written = write_split(pipe, articles, args)
    predictions = [p for paragraphs in written for p in paragraphs]
    references = [p for paragraphs in articles["paragraphs"] for p in paragraphs]

    rouge = rouge_scores(predictions, references, lang, tokenization=args.rouge_tokenization)
    metrics = {key: rouge[key] for key in ("rouge1", "rouge2", "rougeL")}
    results = {"model": args.model, "data": args.data, "split": args.split, "lang": lang, "articles": len(articles),
               "paragraphs": len(references), "rouge_tokenization": rouge["tokenization"], "arguments": asdict(args)}
    if args.bertscore:
        try:
            metrics["bertscore_f1"] = bertscore_f1(predictions, references, lang, model_type=args.bertscore_model,
                                                   num_layers=args.bertscore_layers)
        except OSError as err:  # the default model is a download away: say so, keep the other numbers
            results["bertscore_error"] = f"{type(err).__name__}: {err}".splitlines()[0]
            logger.warning("BERTScore skipped: %s (pass --bertscore_model with a local path)", results["bertscore_error"])
    metrics["alignment_accuracy"] = alignment_accuracy(pipe.model, pipe.processor, articles, seed=args.seed)
    metrics["clip_similarity"] = clip_similarity(pipe.model, pipe.processor, articles, paragraphs=written)
    os.makedirs(args.out, exist_ok=True)
    if args.judge_url:
        joined = ["\n".join(paragraphs) for paragraphs in written]
        judged = judge_scores(args, joined, ["\n".join(p) for p in articles["paragraphs"]], lang)
        metrics.update(judged["scores"])
        results["judge"] = {"model": args.judge_model, **judged["stats"]}
        bar_chart(judged["scores"], os.path.join(args.out, "judge_scores.png"), f"LLM judge: {args.model}")
    results["metrics"] = metrics

    with open(os.path.join(args.out, "predictions.jsonl"), "w", encoding="utf-8") as handle:
        for record, paragraphs in zip(articles, written):
            handle.write(json.dumps({"topic": record["topic"], "prediction": paragraphs,
                                     "reference": record["paragraphs"]}, ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2, ensure_ascii=False)
    report = markdown(results)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    if args.update_model_card:
        dataset_type = args.data if not os.path.exists(args.data) else os.path.basename(os.path.abspath(args.data))
        update_model_index(args.update_model_card, metrics, dataset_name=dataset_type, dataset_type=dataset_type,
                           split=args.split)
    print(report)
    return results


if __name__ == "__main__":
    main()
