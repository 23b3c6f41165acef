"""The captioning metrics visual-storytelling papers report on VIST: BLEU-1..4, METEOR, ROUGE-L and
CIDEr, through `pycocoevalcap` (the COCO caption evaluation code those papers use), at story level:
each written story (an article's paragraphs joined) against every reference story of its album, on
the 0-100 scale VIST results are quoted in.

The text is tokenized as that code does, by Stanford's PTB tokenizer (lowercased, punctuation
dropped), which needs a Java runtime, as METEOR 1.5 does. Without Java, METEOR is skipped with the
reason and the others count lowercased words (letters and digits), which the report names. Chinese
is counted by characters, and METEOR (English paraphrase tables) is skipped.
"""

import re
import shutil
from typing import Sequence


def java_missing() -> str | None:
    """Why the Java-based parts cannot run here, or None."""
    if shutil.which("java") is None:
        return "no Java runtime ('java' is not on the PATH; Debian: apt-get install default-jre-headless)"
    return None


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], lang: str = "en") -> tuple[dict, dict]:
    """BLEU-1..4, METEOR, ROUGE-L (the COCO code's: LCS F-measure with β = 1.2, the best reference) and
    CIDEr-D of each prediction against its references (one list of reference stories per prediction),
    on a 0-100 scale; and what the report should say of them (`tokenization`, `skipped`)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need one list of references per prediction, got {len(predictions)} predictions and "
                         f"{len(references)} reference lists")
    if any(not refs for refs in references):
        raise ValueError("every prediction needs at least one reference story")
    no_java = java_missing()
    gts, res, tokenization = _tokenized(predictions, references, lang, no_java)
    info = {"tokenization": tokenization, "references_per_story": sum(map(len, references)) / len(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"bleu{n + 1}": 100 * value for n, value in enumerate(bleu)}
    if lang != "en" or no_java:
        info["skipped"] = {"METEOR": "METEOR 1.5 reads English only" if lang != "en" else no_java}
    else:
        from pycocoevalcap.meteor.meteor import Meteor

        meteor = Meteor()  # a Java process, ended when the object goes
        scores["meteor"] = 100 * meteor.compute_score(gts, res)[0]
        del meteor
    scores["rougeL_story"] = 100 * float(Rouge().compute_score(gts, res)[0])
    scores["cider"] = 100 * float(Cider().compute_score(gts, res)[0])
    return scores, info


def _tokenized(predictions, references, lang, no_java):
    """The reference implementation's input: {index: [tokenized text, ...]}, and the tokenization's name."""
    texts = {i: list(refs) for i, refs in enumerate(references)}
    hyps = {i: [prediction] for i, prediction in enumerate(predictions)}
    if lang == "zh":
        def split(text):
            return " ".join(ch for ch in text if not ch.isspace())
        name = "characters"
    elif no_java is None:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        tokenizer = PTBTokenizer()
        wrap = lambda d: {i: [{"caption": t} for t in ts] for i, ts in d.items()}  # noqa: E731
        return tokenizer.tokenize(wrap(texts)), tokenizer.tokenize(wrap(hyps)), "PTB tokenizer (lowercased, punctuation removed)"
    else:
        def split(text):
            return " ".join(re.findall(r"[^\W_]+", text.lower()))
        name = "lowercased words (no Java for the PTB tokenizer)"
    return ({i: [split(t) for t in ts] for i, ts in texts.items()}, {i: [split(t) for t in ts] for i, ts in hyps.items()},
            name)


__all__ = ["caption_scores", "java_missing"]
