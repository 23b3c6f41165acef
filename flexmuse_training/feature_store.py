"""Frozen-encoder features on disk: each image and topic is encoded once per training run, on the
model's device, in the training process, and read back afterwards (later epochs, evaluation,
mscDPO's policy, reference and precomputed reference log-probs).

The collator (which may run in DataLoader workers) only names each image and topic by a content
key (`content_key`); the trainer asks the store for the features of a batch in its own process.

A store's folder goes when the store is closed or collected, or when its process exits (Ctrl-C and
SIGTERM included: the training scripts turn them into a normal exit). A SIGKILL leaves it behind:
each folder records the process that owns it, and the next store made in the same place removes
those whose process is gone.
"""

import glob
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import weakref

import torch

logger = logging.getLogger("flexmuse.training")
PREFIX = "flexmuse-features-"
OWNER = "owner"  # "<host> <pid>" of the process a store folder belongs to
# Rows encoded per CLIP call, whatever the batch: a row's features then do not depend on which rows
# came with it (matrix kernels round differently for other batch shapes), so a rerun that meets the
# images in other batches (a run resumed from its start) stores the same features.
ENCODE_ROWS = 8


def content_key(tensor: torch.Tensor) -> str:
    """A key for a tensor's exact contents (processed pixels, or a topic's token ids)."""
    data = tensor.detach().cpu().contiguous()
    return hashlib.blake2b(data.view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()


class _RecordFile:
    """Append-only records of tensors of one dtype in one file, found by key.

    Records are read with `preadv` straight into the batch tensor rather than through `mmap`:
    pages of a mapped file count toward the process's resident memory as they are touched, so
    a mapping of a dataset-sized file would grow the training process with the dataset, while
    `pread` leaves them in the kernel's page cache, which is shared and reclaimable.
    """

    def __init__(self, path: str, dtype: torch.dtype):
        self.dtype, self.fd, self.size = dtype, os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600), 0
        self.index: dict[str, tuple[int, tuple[torch.Size, ...]]] = {}  # key -> (offset, shapes)

    def __contains__(self, key: str) -> bool:
        return key in self.index

    def __len__(self) -> int:
        return len(self.index)

    def put(self, key: str, *tensors: torch.Tensor) -> None:
        data = b"".join(t.detach().to("cpu", self.dtype).contiguous().view(torch.uint8).numpy().tobytes()
                        for t in tensors)
        os.pwrite(self.fd, data, self.size)
        self.index[key] = (self.size, tuple(t.shape for t in tensors))
        self.size += len(data)

    def get_into(self, key: str, *outs: torch.Tensor) -> None:
        """Read the record of `key` into `outs` (contiguous CPU tensors of the stored shapes)."""
        offset, shapes = self.index[key]
        views = [memoryview(out.view(torch.uint8).numpy()) for out in outs]
        read = os.preadv(self.fd, views, offset)
        if read != sum(v.nbytes for v in views) or tuple(out.shape for out in outs) != shapes:
            raise RuntimeError(f"feature store record {key} is damaged (read {read} bytes, shapes {shapes})")

    def shapes(self, key: str) -> tuple[torch.Size, ...]:
        return self.index[key][1]

    def close(self) -> None:
        os.close(self.fd)


class FrozenFeatureStore:
    """CLIP features of each image and topic, keyed by content, kept in files under a temporary
    folder (in `directory`, or the system's temporary folder) that is removed when the store is.

    Only valid while the encoder is frozen. Memory stays flat as the dataset grows: the process
    holds a key → file offset index (a few hundred bytes per entry); the features live on disk,
    (1 + patches) × projection width × bytes per image (base size in fp32: 198 × 512 × 4 ≈ 0.4 MB).
    """

    def __init__(self, model, directory: str | None = None):
        if model.encoder_trainable:
            raise ValueError("the feature cache needs a frozen encoder (freeze_encoder=True)")
        self.model = model
        if directory:
            os.makedirs(directory, exist_ok=True)
        remove_abandoned_stores(directory or tempfile.gettempdir())
        self.directory = tempfile.mkdtemp(prefix=PREFIX, dir=directory or None)
        with open(os.path.join(self.directory, OWNER), "w", encoding="utf-8") as handle:
            handle.write(f"{socket.gethostname()} {os.getpid()}")
        dtype = model.dtype
        self.images = _RecordFile(os.path.join(self.directory, "images.bin"), dtype)
        self.topics = _RecordFile(os.path.join(self.directory, "topics.bin"), dtype)
        self.computed = 0  # images encoded so far: stays flat after the first epoch
        self._finalizer = weakref.finalize(self, _remove, self.images, self.topics, self.directory)

    def close(self) -> None:
        self._finalizer()

    @torch.no_grad()
    def encode(self, inputs: dict) -> dict:
        """Model inputs with `pixel_values` / `input_ids` and their keys replaced by the
        `image_features` / `topic_features` pairs `get_memory` takes."""
        inputs = dict(inputs)
        pixel_values, image_keys = inputs.pop("pixel_values"), inputs.pop("image_keys")
        input_ids, topic_keys = inputs.pop("input_ids"), inputs.pop("topic_keys")
        inputs["image_features"] = self._image_features(pixel_values, image_keys)
        inputs["topic_features"] = self._topic_features(input_ids, inputs["attention_mask"], topic_keys)
        return inputs

    def _image_features(self, pixel_values: torch.Tensor, keys: list[str]):
        missing = [key for key in dict.fromkeys(keys) if key not in self.images]
        if missing:
            rows = [keys.index(key) for key in missing]
            pooled, tokens = _in_fixed_chunks(self.model.encode_images, pixel_values[rows].to(self.model.device))
            for row, key in enumerate(missing):
                self.images.put(key, pooled[row], tokens[row])
            self.computed += len(missing)
        pooled_shape, tokens_shape = self.images.shapes(keys[0])
        pooled = torch.empty(len(keys), *pooled_shape, dtype=self.model.dtype)
        tokens = torch.empty(len(keys), *tokens_shape, dtype=self.model.dtype)
        for row, key in enumerate(keys):
            self.images.get_into(key, pooled[row], tokens[row])
        device = self.model.device
        return pooled.to(device), tokens.to(device)

    def _topic_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keys: list[str]):
        mask = attention_mask.bool().cpu()
        missing = [key for key in dict.fromkeys(keys) if key not in self.topics]
        if missing:
            rows = [keys.index(key) for key in missing]
            lengths = mask[rows].sum(1).tolist()
            device = self.model.device
            # topics of one length bucket are encoded at that length, whatever the batch was padded to
            for length in sorted({_bucket(n) for n in lengths}):
                group = [at for at, n in enumerate(lengths) if _bucket(n) == length]
                ids, group_mask = (_fit(tensor[[rows[at] for at in group]], length).to(device)
                                   for tensor in (input_ids, attention_mask))
                pooled, tokens, _ = _in_fixed_chunks(self.model.encode_topics, ids, group_mask)
                for i, at in enumerate(group):
                    # only the topic's own positions (the text tower's states there do not depend on
                    # the padding after them)
                    self.topics.put(missing[at], pooled[i], tokens[i][group_mask[i].bool()])
        (width,), _ = self.topics.shapes(keys[0])
        pooled = torch.empty(len(keys), width, dtype=self.model.dtype)
        tokens = torch.zeros(*input_ids.shape, width, dtype=self.model.dtype)  # (A, L, D), zero on padding
        for row, key in enumerate(keys):
            states = torch.empty(self.topics.shapes(key)[1], dtype=self.model.dtype)
            self.topics.get_into(key, pooled[row], states)
            tokens[row, mask[row]] = states
        device = self.model.device
        return pooled.to(device), tokens.to(device)


def _in_fixed_chunks(encode, *inputs: torch.Tensor):
    """`encode(*inputs)` in calls of exactly `ENCODE_ROWS` rows (the last padded with copies of its
    last row), the outputs put back together without the padding."""
    outputs = []
    for start in range(0, inputs[0].shape[0], ENCODE_ROWS):
        chunk = [tensor[start:start + ENCODE_ROWS] for tensor in inputs]
        real = chunk[0].shape[0]
        chunk = [torch.cat([part, part[-1:].expand(ENCODE_ROWS - real, *part.shape[1:])]) for part in chunk]
        outputs.append([output[:real] for output in encode(*chunk)])
    return tuple(torch.cat(parts) for parts in zip(*outputs))


def _bucket(length: int) -> int:
    return -(-length // 16) * 16


def _fit(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Right-padded token rows (ids or mask) cut or zero-padded to `length` positions."""
    if tensor.shape[1] >= length:
        return tensor[:, :length]
    return torch.cat([tensor, tensor.new_zeros(tensor.shape[0], length - tensor.shape[1])], 1)


def remove_abandoned_stores(directory: str) -> list[str]:
    """Remove the store folders in `directory` whose process, on this machine, has ended (a SIGKILL
    left them); a folder without an owner record is named in the log and left alone. Returns the
    folders removed."""
    removed = []
    for folder in sorted(glob.glob(os.path.join(glob.escape(directory), f"{PREFIX}*"))):
        try:
            with open(os.path.join(folder, OWNER), encoding="utf-8") as handle:
                host, pid = handle.read().split()
        except (OSError, ValueError):
            logger.warning("left %s alone: a feature store folder without an owner record (remove it by hand "
                           "if no run uses it)", folder)
            continue
        if host != socket.gethostname() or _alive(int(pid)):
            continue
        size = sum(os.path.getsize(path) for path in glob.glob(os.path.join(glob.escape(folder), "*")))
        shutil.rmtree(folder, ignore_errors=True)
        logger.warning("removed %s (%.1f MB), the feature store of a run that was killed (process %s)", folder,
                       size / 2**20, pid)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove(images: _RecordFile, topics: _RecordFile, directory: str) -> None:
    images.close()
    topics.close()
    shutil.rmtree(directory, ignore_errors=True)


__all__ = ["FrozenFeatureStore", "content_key", "remove_abandoned_stores"]
