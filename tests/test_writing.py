"""Writing a user can steer and check: streaming, rewriting some paragraphs, the image-specificity score of each
paragraph and `rerank`, through the diffusers pipeline, the transformers task and writing_flexmuse itself."""

import math

import pytest
import torch
from PIL import Image

import writing_flexmuse
from article_flexmuse import Article
from helpers import make_pipeline
from streaming_flexmuse import ConsoleStreamer, ParagraphStreamer
from task_flexmuse import FlexMuseWritingPipeline

TOPIC = "海边的书店"
COLOURS = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (200, 180, 40)]


@pytest.fixture(scope="module")
def pipe():
    """A tiny pipeline whose paragraphs are visible text (ByT5 ids of printable ASCII) of varied lengths."""
    pipe = make_pipeline(with_t2i=False)
    config = pipe.model.generation_config
    config.min_new_tokens = 4
    config.suppress_tokens = [i for i in range(pipe.model.config.decoder.vocab_size) if i != 1 and not 36 <= i <= 129]
    return pipe


@pytest.fixture(scope="module")
def images():
    return [Image.new("RGB", (40, 40), colour) for colour in COLOURS]


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


class RecordingStreamer(ParagraphStreamer):
    """Records, in order, each text piece and the moment each row's paragraph ended."""

    def __init__(self, tokenizer):
        self.events = []
        super().__init__(tokenizer, on_text=lambda row, text: self.events.append(("text", row)))

    def put(self, value):
        self._record(super().put, value)

    def end(self):
        self._record(super().end)

    def _record(self, call, *args):
        before = self.finished
        call(*args)
        self.events += [("end", row) for row, (was, now) in enumerate(zip(before, self.finished)) if now and not was]


@pytest.mark.parametrize("sampled", [False, True])
def test_streaming_gives_the_same_text_and_every_paragraph_streams_together(pipe, images, sampled):
    options = dict(max_new_tokens=24, do_sample=sampled)
    plain = pipe(TOPIC, images=images, generator=seeded(3), **options)
    streamer = RecordingStreamer(pipe.processor.tokenizer)
    streamed = pipe(TOPIC, images=images, generator=seeded(3), streamer=streamer, **options)
    assert streamed.paragraphs == plain.paragraphs
    assert streamer.texts == plain.paragraphs  # what each row streamed, joined, is its paragraph
    pieces = list(streamer)  # queued as they came, and the iterator ends where generate ended
    assert ["".join(t for row, t in pieces if row == r) for r in range(len(images))] == plain.paragraphs
    # one batched generate: every paragraph has shown text before any of them has ended
    first_end = next((i for i, (kind, _) in enumerate(streamer.events) if kind == "end"), len(streamer.events))
    assert {row for kind, row in streamer.events[:first_end] if kind == "text"} == set(range(len(images)))


def test_the_streamer_iterates_pieces_from_another_thread(pipe, images):
    import threading

    streamer = ParagraphStreamer(pipe.processor.tokenizer, timeout=60)
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=pipe(TOPIC, images=images[:2], streamer=streamer,
                                                                       max_new_tokens=16)))
    thread.start()
    pieces = list(streamer)
    thread.join()
    joined = ["".join(text for row, text in pieces if row == r) for r in range(2)]
    assert joined == result["out"].paragraphs and len(pieces) > 2


def test_beam_search_and_rerank_stream_each_paragraph_whole(pipe, images):
    for options in (dict(num_beams=3), dict(rerank=2)):
        streamer = RecordingStreamer(pipe.processor.tokenizer)
        out = pipe(TOPIC, images=images[:3], streamer=streamer, max_new_tokens=16, **options)
        assert streamer.texts == out.paragraphs
        assert [kind for kind, _ in streamer.events] == ["text"] * 3 + ["end"] * 3  # one piece each, at the end


def test_the_task_streams_too(pipe, images):
    task = FlexMuseWritingPipeline(model=pipe.model, processor=pipe.processor)
    streamer = ParagraphStreamer(task.processor.tokenizer)
    article = task(TOPIC, images=images[:2], streamer=streamer, seed=0, max_new_tokens=16)
    assert streamer.texts == article.paragraphs == task(TOPIC, images=images[:2], seed=0, max_new_tokens=16).paragraphs


def test_console_streamer_prints_the_paragraphs_in_order(pipe, images):
    import io

    out = io.StringIO()
    written = pipe(TOPIC, images=images[:3], streamer=ConsoleStreamer(pipe.processor.tokenizer, out), max_new_tokens=16)
    assert out.getvalue() == "".join(p + "\n" for p in written.paragraphs)


def test_rewriting_paragraph_2_changes_only_it(pipe, images, tmp_path):
    written = pipe(TOPIC, images=images, generator=seeded(0), max_new_tokens=24).article
    rewritten = pipe.rewrite(written, 1, generator=seeded(5), do_sample=True, max_new_tokens=24).article
    old, new = written.paragraphs, rewritten.paragraphs
    assert new[1] != old[1] and [new[i] for i in (0, 2, 3)] == [old[i] for i in (0, 2, 3)]
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(written.sections, rewritten.sections))
    assert rewritten.topic == written.topic
    for i in (0, 2, 3):  # the kept paragraphs keep their msaGate decisions
        assert rewritten.sections[i].metadata["gate_keep"] == written.sections[i].metadata["gate_keep"]
    assert written.paragraphs == old  # the article given is not changed
    record = rewritten.metadata["rewrites"][-1]
    assert record["paragraphs"] == [2] and record["generation"]["do_sample"] is True
    # it saves and loads, and a saved article can be rewritten from its folder
    rewritten.save(tmp_path / "a")
    loaded = Article.load(tmp_path / "a")
    assert loaded.paragraphs == new and loaded.metadata == rewritten.metadata
    again = pipe.rewrite(str(tmp_path / "a"), [0, 3], generator=seeded(6), do_sample=True, max_new_tokens=24).article
    assert again.paragraphs[1:3] == new[1:3] and len(again.metadata["rewrites"]) == 2


def test_rewrite_with_the_same_seeds_as_writing_writes_the_same_paragraph(pipe, images):
    """A rewrite is writing restricted to some images: greedy decoding of the same image gives the same text."""
    written = pipe(TOPIC, images=images, generator=seeded(0), gate_mode="open", max_new_tokens=24).article
    rewritten = pipe.rewrite(written, [2], gate_mode="open", max_new_tokens=24).article
    assert rewritten.paragraphs == written.paragraphs


def test_the_task_rewrites(pipe, images):
    task = FlexMuseWritingPipeline(model=pipe.model, processor=pipe.processor)
    written = task(TOPIC, images=images[:3], seed=0, max_new_tokens=16)
    rewritten = task(written, rewrite=[1], seed=9, do_sample=True, max_new_tokens=16)
    assert rewritten.paragraphs[0::2] == written.paragraphs[0::2] and rewritten.paragraphs[1] != written.paragraphs[1]
    assert rewritten.metadata["rewrites"][-1]["seed"] == 9


@pytest.mark.parametrize("indices, message", [
    (4, "paragraph index 4 out of range: the article has 4 paragraphs"),
    ([-1], "paragraph index -1 out of range"),
    ([], "no paragraph to rewrite"),
    (["1"], "paragraph index '1' out of range"),
])
def test_rewrite_refuses_bad_indices(pipe, images, indices, message):
    written = pipe(TOPIC, images=images, max_new_tokens=8).article
    with pytest.raises(ValueError, match=message):
        pipe.rewrite(written, indices)


def test_image_specificity_is_the_margin_over_the_likeliest_other_image(pipe, images):
    model, processor = pipe.model, pipe.processor
    article = pipe(TOPIC, images=images[:3], generator=seeded(1), gate_mode="open", max_new_tokens=24).article
    inputs = processor(TOPIC, images[:3])
    memory = model.get_memory(**inputs, gate_mode="open")
    labels = processor.encode_paragraphs(article.paragraphs)
    lengths = (labels != -100).sum(-1).float()
    for i, section in enumerate(article.sections):
        # log p(paragraph i | image j) per token, by hand, for each image j
        per_token = [model.paragraph_log_probs(labels[i:i + 1], memory, torch.tensor([j])).item() / lengths[i].item()
                     for j in range(3)]
        expected = per_token[i] - max(per_token[j] for j in range(3) if j != i)
        assert section.metadata["image_specificity"] == pytest.approx(expected, abs=1e-4)
        assert section.metadata["image_specificity_low"] == (expected <= 0)
    # nothing to compare an only image with
    alone = pipe(TOPIC, images=images[:1], max_new_tokens=8).article.sections[0].metadata
    assert alone["image_specificity"] is None and alone["image_specificity_low"] is False
    # left out on request
    skipped = pipe(TOPIC, images=images[:2], max_new_tokens=8, image_specificity=False).article
    assert all(s.metadata["image_specificity"] is None for s in skipped.sections)


def test_rerank_1_is_plain_writing_and_k_keeps_the_first_about_its_own_image(pipe, images, monkeypatch):
    options = dict(generator=seeded(2), max_new_tokens=16, do_sample=True)
    plain = pipe(TOPIC, images=images, **options).article
    assert pipe(TOPIC, images=images, rerank=1, **{**options, "generator": seeded(2)}).article.paragraphs == plain.paragraphs
    scored = []
    score = writing_flexmuse.image_specificity_scores
    monkeypatch.setattr(writing_flexmuse, "image_specificity_scores",
                        lambda *args: scored.append((args[4], score(*args))) or scored[-1][1])
    reranked = pipe(TOPIC, images=images, rerank=3, **{**options, "generator": seeded(2)}).article
    candidates, scores = scored[0]
    assert len(candidates) == 12  # 3 candidates for each of 4 images, scored once
    for i, section in enumerate(reranked.sections):
        group = scores[3 * i:3 * i + 3]
        # the first candidate likelier under its own image than under any other; else the most specific
        best = next((c for c in range(3) if group[c] > 0), max(range(3), key=lambda c: group[c]))
        assert section.paragraph == candidates[3 * i + best]
        assert section.metadata["image_specificity"] == pytest.approx(group[best], abs=1e-4)
    assert reranked.metadata["generation"]["rerank"] == 3
    assert writing_flexmuse._pick([-0.2, 0.1, 0.5]) == 1 and writing_flexmuse._pick([-0.2, -0.1, -0.5]) == 1
    assert writing_flexmuse._pick([math.nan, math.nan]) == 0


def test_rerank_under_beam_search_keeps_a_beam(pipe, images):
    beams = pipe(TOPIC, images=images[:2], num_beams=2, max_new_tokens=12).article
    reranked = pipe(TOPIC, images=images[:2], rerank=2, max_new_tokens=12).article
    with_beams = pipe(TOPIC, images=images[:2], num_beams=2, rerank=2, max_new_tokens=12).article
    assert reranked.paragraphs == with_beams.paragraphs  # rerank=2 searches 2 beams wide
    for plain, chosen in zip(beams.sections, reranked.sections):
        if plain.metadata["image_specificity"] > 0:  # the likeliest beam is about its own image: kept
            assert chosen.paragraph == plain.paragraph
        else:
            assert chosen.metadata["image_specificity"] >= plain.metadata["image_specificity"]


@pytest.mark.parametrize("rerank", [0, 9, 1.5, True])
def test_rerank_out_of_range_is_refused(pipe, images, rerank):
    with pytest.raises(ValueError, match="rerank must be an integer from 1 to 8"):
        pipe(TOPIC, images=images[:1], rerank=rerank)
