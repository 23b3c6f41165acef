"""Repetition control: the n-gram size chosen from the corpus, the loop check, and what generate makes of it."""

import torch
from transformers import ByT5Tokenizer

from helpers import make_model
from flexmuse_training.repetition import has_loop, longest_repeated_ngram, no_repeat_ngram_size


def test_longest_repeated_ngram_by_hand():
    assert longest_repeated_ngram([1, 2, 3, 1, 2, 3]) == 3
    assert longest_repeated_ngram([1, 2, 3]) == 0
    assert longest_repeated_ngram([5, 5, 5, 5]) == 3  # overlapping occurrences count
    assert longest_repeated_ngram([]) == 0


def test_the_size_is_one_more_than_the_corpus_repeats_in_the_tokenizers_units():
    tokenizer = ByT5Tokenizer()  # bytes: 的 is 3 of them
    assert no_repeat_ngram_size(tokenizer, ["红色的圆形的"]) == 4  # 的 repeated: 3 bytes, so 4
    assert no_repeat_ngram_size(tokenizer, ["abc", "abcab"]) == 3
    assert no_repeat_ngram_size(tokenizer, []) == 1


def test_loops_are_a_unit_four_times_in_a_row():
    assert has_loop("像一扇尖的的的的的的的的") and has_loop("abababab") and has_loop("温暖的灯温暖的灯温暖的灯温暖的灯")
    assert not has_loop("像一条长长的走廊，长长的") and not has_loop("的的的")


def test_generate_never_repeats_an_ngram_of_the_saved_size():
    model = make_model()
    model.generation_config.no_repeat_ngram_size = 5
    ids = model.generate(input_ids=torch.tensor([[17, 42, 1]]), pixel_values=torch.randn(3, 3, 32, 32),
                         max_new_tokens=120, min_new_tokens=120)
    assert all(longest_repeated_ngram(row.tolist()) < 5 for row in ids)
    model.generation_config.no_repeat_ngram_size = 0
    ids = model.generate(input_ids=torch.tensor([[17, 42, 1]]), pixel_values=torch.randn(3, 3, 32, 32),
                         max_new_tokens=120, min_new_tokens=120)
    assert any(longest_repeated_ngram(row.tolist()) >= 5 for row in ids)  # a random writer loops without it

