"""Streaming: every paragraph of a batch appears as it is decoded, through transformers' `BaseStreamer`.

transformers' `TextStreamer` and `TextIteratorStreamer` take one sequence (batch 1), but FlexMUSE writes
all paragraphs of an article (of a batch of articles) in one `generate` call: `generate` hands the
streamer one new token per row per step, so `ParagraphStreamer` keeps one text per row. Beam search
(and `rerank`) choose a paragraph only when it is finished: the writing step then hands the streamer each
whole final paragraph at once (transformers refuses a streamer under beam search).
"""

import queue
import sys
import threading
from typing import Callable, TextIO

import torch
from transformers.generation.streamers import BaseStreamer


class ParagraphStreamer(BaseStreamer):
    r"""
    Streams the paragraphs of one `generate` call, one text per row (row i = the i-th image of the batch,
    in order). Use it as a callback, as an iterator, or both:

        >>> streamer = ParagraphStreamer(pipe.processor.tokenizer)
        >>> thread = threading.Thread(target=pipe, args=(topic,), kwargs={"images": photos, "streamer": streamer})
        >>> thread.start()
        >>> for row, text in streamer:  # (row, new text) as it is decoded
        ...     print(row, text)

    Args:
        tokenizer: the writer's tokenizer (`processor.tokenizer`).
        on_text (`Callable[[int, str], None]`, *optional*): called with (row, new text) on every change.
        timeout (`float`, *optional*): seconds the iterator waits for the next piece before `queue.Empty`.

    What a row streams, joined, equals its paragraph: leading and trailing whitespace, which the paragraph
    drops, is held back until text follows it, and a byte-level tokenizer's half-decoded character is
    never shown.
    """

    _END = object()

    def __init__(self, tokenizer, on_text: Callable[[int, str], None] | None = None, timeout: float | None = None):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.timeout = timeout
        self._skip = set(getattr(tokenizer, "all_special_ids", []))
        self._tokens: list[list[int]] = []
        self._finished: list[bool] = []
        self._shown: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._started = False
        self._lock = threading.Lock()

    @property
    def texts(self) -> list[str]:
        """The text shown so far, one per row."""
        with self._lock:
            return list(self._shown)

    @property
    def finished(self) -> list[bool]:
        """Per row: whether its paragraph has ended."""
        with self._lock:
            return list(self._finished)

    def put(self, value: torch.Tensor) -> None:
        """`generate`'s first call hands the decoder's start ids (rows, 1), each later one the step's new token
        per row (rows,); a (rows, length) tensor after that (beam search, `rerank`) holds whole paragraphs."""
        value = value.detach().cpu()
        first = not self._started
        self._started = True
        if value.ndim == 1:
            value = value[:, None]
        if first:
            with self._lock:
                self._tokens = [[] for _ in range(value.shape[0])]
                self._finished = [False] * value.shape[0]
                self._shown = [""] * value.shape[0]
            if value.shape[1] == 1:  # the decoder start token: nothing to show yet
                return
        if value.shape[0] != len(self._tokens):
            raise ValueError(f"ParagraphStreamer: got {value.shape[0]} rows, expected {len(self._tokens)}: use a "
                             "new streamer for each generate call")
        eos = getattr(self.tokenizer, "eos_token_id", None)
        for row, ids in enumerate(value.tolist()):
            if self._finished[row]:
                continue
            for token in ids:
                if token == eos:
                    self._finished[row] = True
                    break
                if token not in self._skip:
                    self._tokens[row].append(token)
            self._show(row)

    def end(self) -> None:
        """`generate` is done: every row is final."""
        with self._lock:
            self._finished = [True] * len(self._finished)
        self._queue.put(self._END)

    def _show(self, row: int) -> None:
        text = self.tokenizer.decode(self._tokens[row], skip_special_tokens=True).strip()
        if text.endswith("\ufffd"):  # a character whose bytes have not all arrived
            text = text.rstrip("\ufffd").rstrip()
        shown = self._shown[row]
        if not text.startswith(shown) or text == shown:
            # a tokenizer may respell earlier text once more arrives: show only what extends it
            return
        with self._lock:
            self._shown[row] = text
        piece = text[len(shown):]
        if self.on_text is not None:
            self.on_text(row, piece)
        self._queue.put((row, piece))

    def __iter__(self):
        while True:
            item = self._queue.get(timeout=self.timeout)
            if item is self._END:
                return
            yield item


class ConsoleStreamer(ParagraphStreamer):
    """Prints the paragraphs to a text stream (stdout) in order, as `flexmuse write --stream` does: paragraph
    1 as it is decoded, then paragraph 2 from what it holds by then, and so on, each on its own line. All
    are decoded together, so the later ones follow quickly; the output reads the same in a terminal and in a
    pipe."""

    def __init__(self, tokenizer, out: TextIO | None = None):
        super().__init__(tokenizer)
        self.out = out or sys.stdout
        self._row, self._printed = 0, 0

    def put(self, value) -> None:
        super().put(value)
        self._flush()

    def end(self) -> None:
        super().end()
        self._flush()

    def _flush(self) -> None:
        while self._row < len(self._shown):
            text = self._shown[self._row]
            self.out.write(text[self._printed:])
            self._printed = len(text)
            if not self._finished[self._row]:
                break
            self.out.write("\n")
            self._row, self._printed = self._row + 1, 0
        self.out.flush()


__all__ = ["ConsoleStreamer", "ParagraphStreamer"]
