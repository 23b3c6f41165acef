"""Contrastive pretraining of the tiny preset's CLIP on a corpus's (image, caption) pairs.

    python training/pretrain_clip.py --dataset data/corpus --output_dir out/clip [--max_steps 1500 ...]

The saved folder is an ordinary CLIP checkpoint; train FlexMUSE on it, frozen as in the paper, with
`accelerate launch --quiet training/sft.py --config training/configs/tiny.yaml --encoder_name_or_path out/clip`.
Every field of `ClipPretrainingConfig` (transformers' `TrainingArguments` with the tiny preset's
defaults) can be set on the command line.
"""

import json
import logging
import os
import sys

from transformers import ByT5Tokenizer, CLIPConfig, CLIPModel, HfArgumentParser, set_seed

from configuration_flexmuse import FlexMuseConfig
from flexmuse_training.args import DataArguments
from flexmuse_training.clip_pretraining import ClipPretrainingConfig, pretrain_clip
from flexmuse_training.data import load_training_splits
from flexmuse_training.errors import run_script
from flexmuse_training.resume import write_record
from flexmuse_training.trainer_args import check_run_args, clear_earlier_run

logger = logging.getLogger("flexmuse.pretrain_clip")


def main(argv=None):
    data_args, args = HfArgumentParser((DataArguments, ClipPretrainingConfig)).parse_args_into_dataclasses(args=argv)
    if not data_args.eval_split:
        raise ValueError("--eval_split '': CLIP pretraining reports its held-out recall and needs a split apart "
                         "from the training articles")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    finished = check_run_args(args, record="pretraining.json")
    if finished is not None:  # resumed after it ended: left as it is
        return finished
    set_seed(args.seed)
    config = CLIPConfig(**FlexMuseConfig.tiny().encoder.to_dict())
    config.vision_config.image_size = args.image_size
    config.text_config.max_position_embeddings = args.max_caption_length
    train, evaluation = load_training_splits(data_args, args)  # refuses a source without a held-out split
    clear_earlier_run(args)
    metrics = pretrain_clip(CLIPModel(config), ByT5Tokenizer(), args, train, evaluation)
    write_record(os.path.join(args.output_dir, "pretraining.json"), {"dataset": data_args.dataset, **metrics})
    logger.info("held-out: %s; saved to %s", json.dumps({k: round(v, 3) for k, v in metrics.items()}),
                args.output_dir)
    return metrics


if __name__ == "__main__":
    sys.exit(run_script(main))
