"""Evaluate a trained FlexMUSE model on a split: ROUGE, BERTScore, alignment, CLIP similarity, LLM judge.

    python training/evaluate.py --model out/dpo --data data/corpus --split test --out eval_out \
        [--judge_url http://localhost:8000/v1 --judge_model qwen2.5-7b-instruct] [--update_model_card out/dpo]

The same as `flexmuse evaluate`; the options and the evaluator are in flexmuse_training/evaluate.py.
"""

import sys

from flexmuse_training.errors import run_script
from flexmuse_training.evaluate import main

if __name__ == "__main__":
    sys.exit(run_script(main))
