"""What a user passes, checked before any model loads: model paths and folders, Hub ids, writing options,
and the one line a mistake is reported in.

Both pipelines, the `flexmuse` command, the web demo and the training scripts call these, so they refuse
the same mistakes with the same messages.
"""

import glob
import json
import numbers
import os

from huggingface_hub import is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open

# The text-to-image part draws all of an article's images in one batched call: memory grows with the count.
MAX_DRAWN_IMAGES = 16
# `rerank` writes this many candidates per image and scores each under every image of its article
MAX_RERANK = 8

# option: (accepted types, test, what the message asks for)
_OPTION_RULES = {
    "max_new_tokens": (int, lambda v: v >= 1, "an integer of at least 1"),
    "num_beams": (int, lambda v: v >= 1, "an integer of at least 1"),
    "num_inference_steps": (int, lambda v: v >= 1, "an integer of at least 1"),
    "rerank": (int, lambda v: 1 <= v <= MAX_RERANK, f"an integer from 1 to {MAX_RERANK}"),
    "num_images": (int, lambda v: 1 <= v <= MAX_DRAWN_IMAGES, f"an integer from 1 to {MAX_DRAWN_IMAGES}"),
    "temperature": ((int, float), lambda v: v > 0, "a number greater than 0"),
    "top_p": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    # torch's generators fail past 2^64 with "Overflow when unpacking long long"; below 2^63 a seed plus an
    # article's number (a split's writing seeds each batch so) still fits. The web demo's seed box says the same.
    "seed": (numbers.Real, lambda v: 0 <= v < 2**63 and v == int(v), "a whole number from 0 to 2^63 - 1"),
}

# the options that name a FlexMUSE model (the others name a CLIP or T5 checkpoint)
_FLEXMUSE_MODEL_OPTIONS = ("model_name_or_path", "model")


def check_writing_options(options: dict, cli: bool = False) -> None:
    """Raise a ValueError naming the first option out of range (`--num-beams` style when `cli`);
    `generate` would otherwise fail deep inside (num_beams=0) or quietly accept nonsense (top_p=2)."""
    for key, value in options.items():
        if key not in _OPTION_RULES or value is None:
            continue
        types, valid, wanted = _OPTION_RULES[key]
        if isinstance(value, bool) or not isinstance(value, types) or not valid(value):
            name = f"--{key.replace('_', '-')}" if cli else key
            raise ValueError(f"{name} must be {wanted}, got {value!r}")


def is_repo_id(name) -> bool:
    """Whether `name` could name a Hub repo (`org/name`); says nothing of whether the repo exists."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def model_path_kind(path) -> str | None:
    """"pipeline" for a saved FlexMusePipeline folder, "model" for a FlexMUSE model folder, None for a
    Hub id (the download reports its own errors); anything else is refused here, naming the path,
    instead of by a load report or a repo-id error further down."""
    path = os.fspath(path)
    if not os.path.exists(path):
        parent = os.path.dirname(path)
        # a Hub id, unless it cannot be one or its first part is a local folder ("out/sft2" beside "out/sft")
        if is_repo_id(path) and not (parent and os.path.isdir(parent)):
            return None
        raise FileNotFoundError(f"model path {path!r} does not exist")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"model path {path!r} is a file, not the folder of a saved FlexMUSE model or pipeline")
    if os.path.isfile(os.path.join(path, "model_index.json")):
        _check_model_folder(os.path.join(path, "model"))
        return "pipeline"
    _check_model_folder(path)
    return "model"


def check_model_option(option: str, path) -> None:
    """`path` (the value of `--option`) is a folder or a Hub model id; offline, one in the cache. A
    folder given as a FlexMUSE model (`--model_name_or_path`, `--model`) gets the checks of
    `model_path_kind` too: its config.json, its model type, readable weights."""
    if path is None:
        return
    if os.path.isdir(path):
        if option in _FLEXMUSE_MODEL_OPTIONS:
            model_path_kind(path)
        return
    if not is_repo_id(path):
        raise FileNotFoundError(f"--{option} {path!r}: no such folder")
    if is_offline_mode() and not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise FileNotFoundError(f"--{option} {path!r}: no such folder, nor a Hub model in the cache (offline)")


def _check_model_folder(folder: str) -> None:
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config):
        raise ValueError(f"no config.json in {folder!r}: not a saved FlexMUSE model or pipeline")
    try:
        with open(config, encoding="utf-8") as handle:
            model_type = json.load(handle).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"cannot read {config!r}: {err}") from err
    if model_type != "flexmuse":
        raise ValueError(f"{folder!r} holds a {model_type!r} model, not a FlexMUSE one "
                         "(its config.json model_type must be 'flexmuse')")
    for weights in sorted(glob.glob(os.path.join(glob.escape(folder), "*.safetensors"))):
        try:
            with safe_open(weights, "pt"):  # reads the header only: a truncated file fails here
                pass
        except (SafetensorError, OSError) as err:
            raise ValueError(f"cannot read the weights {weights!r} (truncated or damaged?): {err}") from err


def user_error_message(err: BaseException) -> str:
    """`err` as one line: library messages may span several."""
    return " ".join(str(err).split()) or type(err).__name__


def user_error_line(prog: str, err: BaseException) -> str:
    """The line a command prints for a user's mistake instead of a traceback: `prog: error: message`."""
    return f"{prog}: error: {user_error_message(err)}"


__all__ = ["MAX_DRAWN_IMAGES", "MAX_RERANK", "check_model_option", "check_writing_options", "is_repo_id", "model_path_kind",
           "user_error_line", "user_error_message"]
