"""LLM judge of the FlexMUSE evaluation (paper Fig. 3): five 1-5 scores per text from any
OpenAI-compatible chat endpoint.

The scores, in the prompts' order: SC (style consistency), CC (context/semantic consistency),
CV (creativity), RN (richness), CO (coherence); suffix ^f for the reference-free prompt, ^a for the
reference-aware one, so the ten names SC^f … CO^a of `CRITERIA`.

A prompt that still fails after the retries (connection error, timeout, HTTP 429/5xx, a reply without
five scores) is unscored: None in the per-item scores, counted in the stats, left out of the means,
never 0. The stats tell the two kinds apart: `unreadable` counts the unscored items whose prompt got
replies that `parse_scores` could not read (the parser's share of the losses), the rest of `unscored`
got no reply (connection or HTTP failures, a malformed response body). Valid replies are cached as JSON
lines keyed by sha256(url, model, prompt), so a rerun over the same items asks only what is still missing.
"""

import hashlib
import json
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Sequence

import requests

logger = logging.getLogger(__name__)

ASPECTS = ("SC", "CC", "CV", "RN", "CO")
CRITERIA = tuple(f"{a}^f" for a in ASPECTS) + tuple(f"{a}^a" for a in ASPECTS)

# Chinese: verbatim from the paper. English: the paper's text with its slips fixed (the missing
# "Creativity" heading, "Is it necessary to avoid" for 是否避免, run-together sections) and the texts on
# lines of their own, so no trailing "." sticks to the reference.
PROMPTS = {
    ("zh", False): (
        "任务描述： 请你作为专业的文本质量评测员，对以下提供的文本进行多维度分析，具体评估以下五个方面： \n\n风格一致性\n\n"
        "文本的整体风格（如正式、口语化、文学性、技术性）是否保持一致？\n\n是否有突兀的用词、句式或语气转换？\n\n语义一致性\n\n"
        "文本的主题、观点或叙事线索是否前后连贯？\n\n是否存在信息矛盾、逻辑断层或脱离主题的内容？\n\n创造性\n\n"
        "文本是否展现了新颖的视角、独特的表达或原创性思想？\n\n是否避免陈词滥调或过度模板化？\n\n丰富度\n\n"
        "词汇、句式是否多样且精准？\n\n是否包含足够的细节、例证或深度分析？\n\n逻辑连贯性\n\n句子、段落之间的衔接是否自然流畅？\n\n"
        "论点或叙事是否有清晰的因果、递进或并列关系？\n\n输出格式要求： 对每个维度按 1-5分 打分（1分最差，5分最优）。 "
        "只需要给出所有得分，按顺序给出如 5, 4, 1, 3, 2\n\n待测文本： {prediction}"
    ),
    ("zh", True): (
        "任务描述： \n\n请你作为专业的文本质量评测员，对以下提供的文本进行多维度分析，具体评估以下五个方面： \n\n风格一致性\n\n"
        "文本的整体风格是否与参考文本保持一致？\n\n是否有突兀的用词、句式或语气转换？\n\n语义一致性\n\n"
        "文本所表达的语义是否与参考文本一致，上下文是否一致\n\n创造性\n\n文本是否参考文本的文风一致，并具有一定的艺术性以及创造性？\n\n"
        "丰富度\n\n词汇\n\n句子是否和参考文本一致且丰富\n\n逻辑连贯性\n\n句子、段落之间的衔接是否自然流畅？\n\n"
        "论点或叙事是否有清晰的因果、递进或并列关系？\n\n"
        "请严格根据参考文本来打分，参考文本是评分的标准，与参考文本越相近，得分理应越高，与参考文本越不相似得分越低\n\n"
        "输出格式要求： \n\n对每个维度按 1-5分 打分（1分最差，5分最优）。\n\n只需要给出所有得分，按顺序给出如 5, 4, 1, 3, 2\n\n"
        "参考文本： {ground_truth}\n\n待测文本： {prediction}"
    ),
    ("en", False): (
        "Task Description: Please act as a professional text quality assessor and conduct a multi-dimensional analysis "
        "of the provided text below, specifically evaluating the following five aspects:\n\nStyle consistency\n\n"
        "Whether the overall style of the text (such as formal, colloquial, literary, technical, etc.) remains "
        "consistent? Are there any abrupt word choices, sentence structures or tone transitions?\n\n"
        "Semantic consistency\n\nIs the theme, viewpoint or narrative thread of the text coherent from beginning to "
        "end? Are there any information contradictions, logical breaks or content that deviates from the topic?\n\n"
        "Creativity\n\nDoes the text demonstrate a novel perspective, unique expression, or original ideas? Does it "
        "avoid cliches or excessive templating?\n\nRichness\n\nAre the vocabulary and sentence patterns diverse and "
        "precise? Does it contain sufficient details, examples or in-depth analysis?\n\nLogical coherence\n\n"
        "Is the connection between sentences and paragraphs natural and smooth? Does the argument or narrative have a "
        "clear causal, progressive or parallel relationship?\n\nOutput format requirements: Score each dimension on a "
        "scale of 1 to 5 (1 is the worst and 5 is the best). Just provide all the scores in sequence, such as "
        "5,4,1,3,2\n\nText to be tested: {prediction}"
    ),
    ("en", True): (
        "Task Description:\n\nPlease act as a professional text quality assessor and conduct a multi-dimensional "
        "analysis of the provided text below, specifically evaluating the following five aspects:\n\n"
        "Style consistency\n\nIs the overall style of the text consistent with the reference text? Are there any "
        "abrupt word choices, sentence structures or tone transitions?\n\nSemantic consistency\n\nWhether the "
        "semantics expressed in the text are consistent with the reference text and whether the context is "
        "consistent\n\nCreativity\n\nWhether the text has a consistent writing style with the reference text and "
        "possesses a certain degree of artistry and creativity?\n\nRichness\n\nAre the vocabulary and sentences "
        "consistent with the reference text and rich?\n\nLogical coherence\n\nAre the connections between sentences "
        "and paragraphs natural and smooth? Does the argument or narrative have a clear causal, progressive or "
        "parallel relationship?\n\nPlease score strictly based on the reference text. The reference text serves as "
        "the scoring criterion. The closer it is to the reference text, the higher the score should be; the less "
        "similar it is to the reference text, the lower the score should be.\n\nOutput format requirements: Score "
        "each dimension on a scale of 1 to 5 (1 is the worst and 5 is the best). Only all the scores need to be "
        "given in sequence, such as 5,4,1,3,2.\n\nReference text: {ground_truth}\n\nText to be tested: {prediction}"
    ),
}

def build_prompt(prediction: str, lang: str = "zh", reference: str | None = None) -> str:
    """The Fig. 3 prompt for `prediction` in `lang` ("zh" or "en"): reference-aware when `reference` is given."""
    if lang not in ("zh", "en"):
        raise ValueError(f"lang must be 'zh' or 'en', got {lang!r}")
    # format() substitutes once, so braces inside the texts are left as they are
    return PROMPTS[lang, reference is not None].format(prediction=prediction, ground_truth=reference)


# --- reading the scores out of a reply (rules in `parse_scores`) ---

# full-width ASCII (５，：（） …) and the ideographic space folded to ASCII; "、" and "。" stay as they are
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: ord(" ")}
_MARKUP = re.compile(r"\*+|`+|__")  # markdown bold / italics / code: **5**, `5`
_BULLET = re.compile(r"^[ \t]*(?:[-•>]+|#+)[ \t]*", re.M)  # "- ", "• ", "> ", "### " opening a line
# "1. ", "2) ", "3、", "(4) " opening a line: a list marker when followed by text, or by a space and more
_LIST_MARKER = re.compile(r"[ \t]*(?:\((\d{1,2})\)|(\d{1,2})[.)、])(?=[ \t]+\S|[^\d\s])")
# one number as written: an integer or decimal, maybe in parentheses, maybe "/N" or "out of N", maybe
# "分"; never glued to a Latin letter, a digit or a "." ("step2", "CO2", "1.2.3" hold none)
_NUMBER = (r"(?<![A-Za-z\d.])\(?\d+(?:\.\d+)?\)?(?:[ \t]*(?:/|(?i:out of))[ \t]*\d+)?(?:[ \t]*分)?"
           r"(?![A-Za-z\d%]|\.\d)")
_SCORE = re.compile(r"\(?([1-5])\)?(?:[ \t]*(?:/|(?i:out of))[ \t]*5)?(?:[ \t]*分)?")  # what a valid one is
# numbers separated by spaces, ",", "、", ";" or "|", and by a newline where the next line holds only a number
_SEPARATOR = rf"(?:[ \t,、;|]|\n(?=[ \t]*{_NUMBER}[ \t,、;|]*(?:\n|\Z)))+"
_RUN = re.compile(rf"{_NUMBER}(?:{_SEPARATOR}{_NUMBER})*")
_LABEL_NAMES = {
    "SC": ("style consistency", "风格一致性"), "CC": ("semantic consistency", "语义一致性"),
    "CV": ("creativity", "创造性"), "RN": ("richness", "丰富度"), "CO": ("logical coherence", "逻辑连贯性"),
}
_ASPECT_OF = {name: aspect for aspect, names in _LABEL_NAMES.items() for name in names}
_LABELLED = re.compile(
    r"(?:(?<![A-Za-z])(?P<abbr>SC|CC|CV|RN|CO)(?:\^[fa])?(?![A-Za-z])"  # SC, SC^f
    r"|(?<![A-Za-z])(?P<name>(?i:style consistency|semantic consistency|creativity|richness|logical coherence)"
    r"|风格一致性|语义一致性|创造性|丰富度|逻辑连贯性))"
    r"[\"'\]】」]?"  # "SC": 5 (JSON), 【风格一致性】：5
    r"(?:[ \t]*\((?![ \t]*\d)[^()\n]{1,40}\))?"  # Style consistency (SC): 5, 风格一致性（SC）：5
    r"[ \t]*(?:(?:得分|评分|分数|打分|(?i:score|rating))[ \t]*)?"  # 风格一致性得分为5分, Creativity score: 3
    r"(?:[:=\-–—][ \t]*\n?|为|是)?[ \t]*"  # "SC: 5", "SC = 5", "SC 5", "风格一致性：\n5分"
    rf"(?P<score>{_NUMBER})"
)


def parse_scores(reply: str) -> tuple[int, ...] | None:
    """The five scores (SC, CC, CV, RN, CO) of a judge reply, or None when the reply does not hold exactly
    one valid five.

    1. Clean-up: only what follows the last "</think>" is read (a reasoning model's thinking is not the
       answer); full-width characters become ASCII ("５，４" is "5,4"); markdown "*", "`" and "__" are
       dropped ("**5**" is "5"); "-", "•", ">" and "#" opening a line are dropped; and a numbered list
       ("1. ", "2) ", "3、", "(4) " opening successive lines, numbered 1, 2, 3, … from 1, at least two
       items) loses its numbers, so "1. 5\\n2. 4\\n…" reads as "5\\n4\\n…".
    2. A number is an integer or a decimal, maybe in parentheses, maybe followed by "/N", "out of N"
       or "分", and never glued to a Latin letter, a digit or a "." ("step2", "CO2", "v1.2" are none).
       It is a valid score when it is an integer 1..5 with no denominator other than 5: "4", "(4)",
       "4/5", "4 out of 5", "4分"; "0", "7", "15", "4.5" and "4/10" are not.
    3. Labelled scores: an aspect's label - SC, CC, CV, RN, CO (SC^f… too), the prompts' section names
       Style consistency, Semantic consistency, Creativity, Richness, Logical coherence (any case) or
       风格一致性, 语义一致性, 创造性, 丰富度, 逻辑连贯性 - directly followed by a number, with between
       them at most a closing quote or bracket, a parenthesised note ("(SC)"), "score"/"得分"/"评分", and
       one of ":", "=", "-", "为", "是" (":" may end its line). Labels not followed by a number are prose.
       When there are labelled scores, each aspect must have exactly one, and they give the five in the
       aspects' order whatever order they were written in ("CC: 4, SC: 5, …" gives SC first).
    4. Runs: numbers separated only by spaces, ",", "、", ";" or "|", or by a newline where the next line
       holds that one number and nothing else ("4\\n3\\n5\\n2\\n1"); any other text, a blank line or a line
       that goes on after its number ends a run. A run of exactly five numbers gives five scores in the
       order written, wherever it stands (before or after an explanation). Runs of other lengths are prose
       ("out of 5", "3 examples", "5,4,3", six scores) and count for nothing.
    5. The reply is read when the labelled five (if any labels) and every five-number run are all valid
       and all the same five; no labelled five and no five-number run, any invalid score among them, or
       two different fives, and it is None: "5,4,3", "5,4,3,2,1,4", "7", "4.5,4,3,4,5",
       "0,4,3,4,5", prose only, "SC: 5, CC: 4" (aspects missing), "5,4,3,4,5 … or 4,4,4,4,4".
    """
    text = reply.rsplit("</think>", 1)[-1].translate(_FULL_WIDTH)
    text = _BULLET.sub("", _MARKUP.sub("", text))
    text = _strip_list_numbers(text)
    fives = []
    labelled = [(m.group("abbr") or _ASPECT_OF[m.group("name").lower()], m.group("score"))
                for m in _LABELLED.finditer(text)]
    if labelled:
        if sorted(aspect for aspect, _ in labelled) != sorted(ASPECTS):
            return None  # an aspect missing or scored twice
        by_aspect = dict(labelled)
        fives.append([by_aspect[aspect] for aspect in ASPECTS])
    for run in _RUN.finditer(text):
        numbers = re.findall(_NUMBER, run.group())
        if len(numbers) == len(ASPECTS):
            fives.append(numbers)
    readings = {tuple(_score(number) for number in five) for five in fives}
    if len(readings) != 1:
        return None  # nothing to read, or two different fives
    (scores,) = readings
    return scores if _valid(scores) else None


def _score(number: str) -> int | None:
    """A number as written (step 2 of `parse_scores`) as a score 1..5, or None when it is not a valid one."""
    match = _SCORE.fullmatch(number)
    return int(match.group(1)) if match else None


def _strip_list_numbers(text: str) -> str:
    """`text` with the numbers of its numbered lists (successive marker lines numbered 1, 2, 3, …,
    at least two) dropped; a lone "1、 2、 3" line or a list that does not count from 1 is left alone."""
    lines = text.split("\n")
    lists, current = [], []  # lists: [(line index, marker end)] per numbered list
    for index, line in enumerate(lines):
        marker = _LIST_MARKER.match(line)
        if marker is None:
            continue
        number = int(marker.group(1) or marker.group(2))
        if number == len(current) + 1:
            current.append((index, marker.end()))
        else:
            lists.append(current)
            current = [(index, marker.end())] if number == 1 else []
    lists.append(current)
    for numbered in lists:
        if len(numbered) >= 2:
            for index, end in numbered:
                lines[index] = lines[index][end:]
    return "\n".join(lines)


def _valid(scores) -> bool:
    return len(scores) == len(ASPECTS) and all(type(s) is int and 1 <= s <= 5 for s in scores)


@dataclass
class JudgeResult:
    """What one `JudgeClient.judge` call got: per-item scores (criterion -> 1..5, or None when unscored)
    and what it took."""

    scores: list
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests beyond the first for a prompt
    unscored: int = 0  # items left without scores
    cache_hits: int = 0  # items answered from the cache, without a request
    unreadable: int = 0  # of the unscored, those whose prompt got a reply (or several) that did not parse

    @property
    def stats(self) -> dict:
        return {"judged": len(self.scores), "requests": self.requests, "retries": self.retries,
                "unscored": self.unscored, "unreadable": self.unreadable, "cache_hits": self.cache_hits}


class ReplyCache:
    """Valid judge replies by request key, kept in memory and, with a path, as JSON lines appended as they
    arrive (so an interrupted run keeps what it got)."""

    def __init__(self, path: str | None = None):
        self.path = path
        self.scores: dict[str, tuple[int, ...]] = {}
        self._needs_newline = False
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            # a run killed mid-write leaves a partial last line: skip it, and start the next record on a new line
            self._needs_newline = bool(text) and not text.endswith("\n")
            for number, line in enumerate(text.splitlines(), 1):
                try:
                    record = json.loads(line)
                    key, scores = record["key"], tuple(record["scores"])
                except (ValueError, KeyError, TypeError):
                    logger.warning("%s:%d: unreadable judge cache line skipped", path, number)
                    continue
                if _valid(scores):
                    self.scores[key] = scores

    def add(self, key: str, scores: tuple[int, ...], reply: str) -> None:
        self.scores[key] = scores
        if not self.path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            if self._needs_newline:
                handle.write("\n")
                self._needs_newline = False
            handle.write(json.dumps({"key": key, "scores": list(scores), "reply": reply}, ensure_ascii=False) + "\n")


class JudgeClient:
    """Asks an OpenAI-compatible endpoint (POST {base_url}/chat/completions, temperature 0) for the Fig. 3 scores.

    The key is read from the environment variable `api_key_env` (none set: no Authorization header).
    `timeout` bounds the connect and each read of a request (requests' semantics); a failed attempt is
    retried up to `retries` times after `backoff`, 2·`backoff`, 4·`backoff`… seconds; at most
    `max_workers` requests are in flight. `cache_path`: JSON-lines reply cache (None: in memory only).
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60,
                 retries: int = 3, backoff: float = 1.0, max_workers: int = 4, cache_path: str | None = None):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        key = os.environ.get(api_key_env)
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout, self.retries, self.backoff, self.max_workers = timeout, retries, backoff, max_workers
        self.cache = ReplyCache(cache_path)

    def judge(self, items: Sequence[dict], lang: str = "zh", reference_aware: bool = False) -> JudgeResult:
        """Scores for each item ({"prediction", and "reference" when `reference_aware`}), keyed SC^f…CO^f
        or SC^a…CO^a; identical prompts are asked once."""
        if reference_aware and any("reference" not in item for item in items):
            raise ValueError("reference-aware judging needs a 'reference' in every item")
        prompts = [build_prompt(item["prediction"], lang, item["reference"] if reference_aware else None)
                   for item in items]
        keys = [self._key(prompt) for prompt in prompts]
        result = JudgeResult(scores=[None] * len(items), cache_hits=sum(key in self.cache.scores for key in keys))
        pending = {key: prompt for key, prompt in zip(keys, prompts) if key not in self.cache.scores}
        unreadable = set()  # keys whose replies came back but did not parse
        if pending:
            with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
                futures = {pool.submit(self._ask, prompt): key for key, prompt in pending.items()}
                for future in as_completed(futures):
                    scores, reply, sent = future.result()
                    result.requests += sent
                    result.retries += sent - 1
                    if scores is not None:
                        self.cache.add(futures[future], scores, reply)
                    elif reply is not None:
                        unreadable.add(futures[future])
        suffix = "^a" if reference_aware else "^f"
        for index, key in enumerate(keys):
            scores = self.cache.scores.get(key)
            if scores is None:
                result.unscored += 1
                result.unreadable += key in unreadable
            else:
                result.scores[index] = {aspect + suffix: score for aspect, score in zip(ASPECTS, scores)}
        logger.info("judge %s (%s, %s): %s", self.model, lang, "reference-aware" if reference_aware else
                    "reference-free", result.stats)
        return result

    def _key(self, prompt: str) -> str:
        return hashlib.sha256(json.dumps([self.url, self.model, prompt]).encode("utf-8")).hexdigest()

    def _ask(self, prompt: str) -> tuple[tuple[int, ...] | None, str | None, int]:
        """Send `prompt` until a reply parses or the retries run out: (scores or None, reply, requests sent).
        Unscored, the reply is the last one that came back and did not parse, None when none came back."""
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0}
        attempts = self.retries + 1
        unread = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = requests.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
                problem = type(err).__name__
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    problem = f"HTTP {response.status_code}"
                elif response.status_code >= 400:  # a bad request or key: asking again gets the same answer
                    logger.error("judge request refused, not retried: HTTP %d %s", response.status_code,
                                 response.text[:200])
                    return None, unread, attempt + 1
                else:
                    reply = _reply_text(response)
                    scores = parse_scores(reply) if reply is not None else None
                    if scores is not None:
                        return scores, reply, attempt + 1
                    if reply is None:
                        problem = f"no reply text in the response {response.text[:120]!r}"
                    else:
                        unread = reply
                        problem = f"no five scores in reply {reply!r:.300}"
            logger.info("judge attempt %d/%d failed: %s", attempt + 1, attempts, problem)
        if unread is not None and not problem.startswith("no five scores"):
            problem += f", after an unreadable reply {unread!r:.300}"
        logger.warning("judge prompt unscored after %d attempts: %s", attempts, problem)
        return None, unread, attempts


def _reply_text(response: requests.Response) -> str | None:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def aggregate(*results: JudgeResult) -> dict:
    """{"scores": the mean of each of the ten CRITERIA over the items that got it (None where none did, e.g.
    the ^a scores without a reference-aware result), "stats": the results' stats summed}. Unscored items
    are left out of the means, never counted as 0; "unscored" says how many there were, "unreadable" how
    many of them got replies that did not parse."""
    values = {name: [] for name in CRITERIA}
    for result in results:
        for item in result.scores:
            for name, score in (item or {}).items():
                values[name].append(score)
    stats = {key: sum(result.stats[key] for result in results)
             for key in ("judged", "requests", "retries", "unscored", "unreadable", "cache_hits")}
    return {"scores": {name: sum(v) / len(v) if v else None for name, v in values.items()}, "stats": stats}
