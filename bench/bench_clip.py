"""What the corpus-pretrained CLIP sees, by how many distinct pictures and steps it trains on: zero-shot
attribute accuracy on the demo corpus's held-out splits and a linear probe on its pooled image
features (train vs test accuracy: a gap means the CLIP memorised its pictures instead of learning
the attribute), with the pretraining time.

    python bench/bench_clip.py --data data/corpus --articles 400 4000 --steps 1500

Each setting pretrains on a corpus of `--articles` training articles drawn with `--seed` (its images
are never the demo corpus's: only the held-out splits of `--data` are scored).
"""

import argparse
import os
import runpy
import tempfile
import time

import torch
from common import append_results
from transformers import ByT5Tokenizer, CLIPImageProcessor, CLIPModel

from flexmuse_training.clip_pretraining import CaptionCollator, caption_pairs, zero_shot_accuracy
from flexmuse_training.corpus import make_corpus
from flexmuse_training.data import load_articles

# the script users run, as they run it (it imports only the installed package)
PRETRAIN_CLIP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training",
                             "pretrain_clip.py")

ATTRIBUTES = ("color", "shape", "position")


@torch.no_grad()
def pooled_features(model: CLIPModel, processor, articles) -> tuple[torch.Tensor, dict]:
    images = [image for article in articles for image in article["images"]]
    labels = {key: [truth[key] for article in articles for truth in article["attributes"]] for key in ATTRIBUTES}
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    return model.get_image_features(pixel_values=pixels).pooler_output, labels


def linear_probe(train_x, train_y, test_x, test_y, steps: int = 500) -> tuple[float, float]:
    """Softmax regression on standardised features (torch: no scikit-learn dependency for one probe)."""
    values = sorted(set(train_y))
    a = torch.tensor([values.index(v) for v in train_y])
    b = torch.tensor([values.index(v) if v in values else -1 for v in test_y])
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(0)
    probe = torch.nn.Linear(train_x.shape[1], len(values))
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe(train_x), a).backward()
        optimizer.step()
    with torch.no_grad():
        return ((probe(train_x).argmax(1) == a).float().mean().item(),
                (probe(test_x).argmax(1) == b).float().mean().item())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/corpus", help="the demo corpus: its train split for the probe, "
                                                              "its validation and test splits scored")
    parser.add_argument("--articles", type=int, nargs="+", default=[400, 4000])
    parser.add_argument("--steps", type=int, nargs="+", default=[1500])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    splits = {name: load_articles(args.data, name) for name in ("train", "validation", "test")}
    lines = ["| training articles (images) | steps | minutes | zero-shot colour / shape / position (validation; "
             "test) | pooled probe shape, train → test | pooled probe position, train → test |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as out:
        for articles in args.articles:
            corpus = os.path.join(out, f"corpus{articles}")
            make_corpus(corpus, articles=articles, seed=args.seed, eval_articles=50)
            images = sum(len(a["images"]) for a in load_articles(corpus, "train"))
            for steps in args.steps:
                folder = os.path.join(out, f"clip{articles}-{steps}")
                start = time.perf_counter()
                runpy.run_path(PRETRAIN_CLIP)["main"](["--dataset", corpus, "--output_dir", folder, "--max_steps", str(steps),
                                    "--disable_tqdm", "true", "--seed", str(args.seed)])
                minutes = (time.perf_counter() - start) / 60
                model = CLIPModel.from_pretrained(folder).eval()
                processor = CLIPImageProcessor.from_pretrained(folder)
                collator = CaptionCollator(processor, ByT5Tokenizer(), model.config.text_config.max_position_embeddings)
                zero_shot = [zero_shot_accuracy(model, collator, caption_pairs(splits[name]))
                             for name in ("validation", "test")]
                (train_x, train_y), (test_x, test_y) = (pooled_features(model, processor, splits[name])
                                                        for name in ("train", "test"))
                probes = {key: linear_probe(train_x, train_y[key], test_x, test_y[key]) for key in ("shape", "position")}
                cells = "; ".join(" / ".join(f"{z[f'zero_shot_{k}']:.3f}" for k in ATTRIBUTES) for z in zero_shot)
                lines.append(f"| {articles} ({images}) | {steps} | {minutes:.1f} | {cells} | "
                             + " | ".join(f"{tr:.3f} → {te:.3f}" for tr, te in probes.values()) + " |")
                print(lines[-1], flush=True)
    append_results("bench_clip: what the pretrained tiny CLIP sees, by pictures and steps", "\n".join(lines),
                   record=not args.no_record)


if __name__ == "__main__":
    main()
