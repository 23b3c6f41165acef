"""FlexMUSE under FSDP2: what is sharded, the plain model a save writes, and the methods outside
`forward` that need the shards gathered."""

import torch
from accelerate.utils import is_peft_model


def ignore_frozen_encoder(trainer) -> None:
    """FSDP shards the trainable writer and fusion; a frozen CLIP stays whole on every rank
    (`ignored_modules`): it has no gradients or optimizer state to shard, the feature store
    calls it outside the wrapped forward, and CLIP's 0-dim `logit_scale` cannot be sharded."""
    if is_peft_model(trainer.model):
        raise ValueError("LoRA (--use_lora) is not supported with FSDP: LoRA already keeps the trainable "
                         "weights small, train it with data parallelism (DDP) instead")
    if trainer.model.encoder_trainable:
        raise ValueError("FSDP here needs a frozen encoder (--freeze_encoder true): CLIP's scalar logit_scale "
                         "cannot be sharded")
    plugin = trainer.accelerator.state.fsdp_plugin
    plugin.ignored_modules = [*(plugin.ignored_modules or []), trainer.model.encoder]


def plain_model(model, state_dict: dict):
    """`model`'s own class (not FSDP2's `FSDP<Model>` subclass) holding the gathered `state_dict`:
    saving the subclass would make save_pretrained copy torch's files as the remote code."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with torch.random.fork_rng(devices=[]):  # building it must not move the training's random numbers
        plain = cls(model.config)
    plain.load_state_dict(state_dict)
    return plain


def fsdp_methods(model, *names: str) -> None:
    """FSDP2 gathers a module's shards around `forward` only; the methods the evaluator calls
    outside it (the memory, the paragraph scores) get the same hooks, once."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method

    if not isinstance(model, FSDPModule):
        return
    done = getattr(model, "_flexmuse_fsdp_methods", set())
    for name in set(names) - done:
        register_fsdp_forward_method(model, name)
    model._flexmuse_fsdp_methods = done | set(names)


__all__ = ["fsdp_methods", "ignore_frozen_encoder", "plain_model"]
