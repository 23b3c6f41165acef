"""FlexMUSE's training and evaluation library.

The model itself is the Hub remote code at the repository root (configuration_flexmuse.py,
modeling_flexmuse.py, processing_flexmuse.py, ...); this package trains and scores it:

- `args`: the YAML stage configs and the model and data arguments shared by the scripts;
- `data`, `corpus`, `corpus_text`, `corpus_images`: ArtMUSE-format articles through `datasets`; the
  offline procedural corpus (articles sampled and written), its words and its pictures;
- `collator`: training rows to model inputs (through the processor), the frozen-feature cache;
- `models`: building or loading the model and processor a run starts from, LoRA;
- `stage`: one training stage from a command line to a finished model repo (the scripts' body);
- `sft_config`, `sft_trainer`, `dpo_config`, `dpo_trainer`: SFT and mscDPO (`MscDPOTrainer`);
- `trainer_args`, `trainer_utils`, `fsdp`: what both trainers add to their config and share (feature
  store, evaluation, saving), and their FSDP set-up;
- `feature_store`: the frozen CLIP features computed once, kept on disk;
- `evaluation`, `text_metrics`, `probes`, `grounding`, `judge`: the one evaluator, its text metrics, the
  metrics that run the model, the grounding metric with its paragraph parser, and the LLM judge;
- `hub`: training outputs as Hub model repos with a model card;
- `errors`, `evaluate`, `clip_pretraining`: the scripts' one-line errors, the `flexmuse evaluate`
  command, CLIP pretraining of the tiny preset.

The scripts users run (`accelerate launch --quiet training/sft.py`, ...) are in the repository's training/.
"""
