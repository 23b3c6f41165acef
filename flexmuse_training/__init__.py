"""FlexMUSE's training and evaluation library.

The model itself is the Hub remote code at the repository root (configuration_flexmuse.py,
modeling_flexmuse.py, processing_flexmuse.py, ...); this package trains and scores it:

- `args`: the YAML stage configs and the model and data arguments shared by the scripts;
- `data`, `corpus`: ArtMUSE-format articles through `datasets`, and the offline procedural corpus;
- `collator`: training rows to model inputs (through the processor), the frozen-feature cache;
- `models`: building or loading the model and processor a run starts from, LoRA;
- `sft_config`, `sft_trainer`, `dpo_config`, `dpo_trainer`: SFT and mscDPO (`MscDPOTrainer`);
- `evaluation`, `metrics`, `grounding`, `judge`: the one evaluator, its metrics, the paragraph parser of
  the grounding metric and the LLM judge;
- `hub`: training outputs as Hub model repos with a model card.

The scripts users run (`accelerate launch training/sft.py`, ...) are in the repository's training/.
"""
