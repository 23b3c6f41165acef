"""Repetition control chosen from the training corpus, and the loop check that measures it.

A writer that has not seen pictures like the user's can loop ("…的的的的的"). `no_repeat_ngram_size` in
the saved `generation_config` forbids any token n-gram from occurring twice in a paragraph; the n is
chosen per tokenizer from the training paragraphs: one more than the longest n-gram any of them repeats,
so that nothing the corpus itself writes is ever forbidden. (The tiny writer reads bytes: a Chinese
character is 3 of them, and the corpus's paragraphs repeat 的, so n is counted in bytes there.)
`repetition_penalty` is left off: measured (bench/bench_repetition.py), it costs no grounding but leaves
loops in sampled paragraphs of photos unlike the corpus, which the n-gram rule removes; it also has no
value the corpus can choose (it penalises every token seen before, and on bytes that includes the lead
bytes all Chinese characters share).
"""

import re
from typing import Iterable, Sequence

# a unit of 1-8 characters four or more times in a row: a loop a reader sees at once
_LOOP = re.compile(r"(.{1,8}?)\1{3,}", re.S)


def longest_repeated_ngram(ids: Sequence[int]) -> int:
    """The largest n such that some n-gram of `ids` occurs at least twice (overlaps count); 0 if none."""
    n = 0
    while n < len(ids):
        grams = [tuple(ids[i:i + n + 1]) for i in range(len(ids) - n)]
        if len(set(grams)) == len(grams):
            break
        n += 1
    return n


def no_repeat_ngram_size(tokenizer, paragraphs: Iterable[str]) -> int:
    """One more than the longest n-gram any of `paragraphs` repeats, in `tokenizer`'s tokens."""
    return 1 + max((longest_repeated_ngram(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in paragraphs),
                   default=0)


def has_loop(text: str) -> bool:
    """Whether `text` holds a unit of 1-8 characters repeated four or more times in a row."""
    return _LOOP.search(text) is not None


__all__ = ["has_loop", "longest_repeated_ngram", "no_repeat_ngram_size"]
