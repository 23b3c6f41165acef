"""FlexMUSE training scripts (SFT, mscDPO, evaluation), run with `accelerate launch training/<script>.py`."""
