"""The LLM-judge client against a scripted local OpenAI-compatible server: no network, a few seconds."""

import json
import socket
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import flexmuse_training.judge as judge_module
from flexmuse_training.judge import CRITERIA, JudgeClient, JudgeResult, aggregate, build_prompt, parse_scores

FAST = {"backoff": 0.01, "timeout": 5}


class ScriptedServer(ThreadingHTTPServer):
    """Answers each prompt by the script of the first marker it contains; the script's steps are used in
    turn, the last one over again. A step: a reply text, ("status", code), ("sleep", seconds, text) or
    ("raw", body). Prompts with no marker get "3,3,3,3,3"."""

    daemon_threads = True  # a handler still sleeping past the client's timeout must not block shutdown

    def __init__(self, scripts):
        super().__init__(("127.0.0.1", 0), Handler)
        self.scripts, self.turns = scripts, {}
        self.received = []  # (headers, body) of every request, in arrival order
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0

    def next_step(self, prompt):
        marker = next((m for m in self.scripts if m in prompt), None)
        if marker is None:
            return "3,3,3,3,3"
        with self.lock:
            turn = self.turns.get(marker, 0)
            self.turns[marker] = turn + 1
        steps = self.scripts[marker]
        return steps[min(turn, len(steps) - 1)]

    def handle_error(self, request, client_address):
        pass  # the client hung up on a slow reply: expected here

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with server.lock:
            server.received.append((dict(self.headers), body))
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        self.answer(server.next_step(body["messages"][0]["content"]), body)

    def answer(self, step, body):
        if isinstance(step, str):
            step = ("sleep", 0, step)
        if step[0] == "status":
            return self.send(step[1], b'{"error": "scripted"}')
        if step[0] == "raw":
            return self.send(200, step[1])
        time.sleep(step[1])
        reply = {"choices": [{"message": {"role": "assistant", "content": step[2]}}], "model": body["model"]}
        self.send(200, json.dumps(reply, ensure_ascii=False).encode("utf-8"))

    def send(self, code, payload):
        # out of flight before the reply leaves: once the client has it, its worker may send the next
        # request, which must not find this one still counted
        with self.server.lock:
            self.server.in_flight -= 1
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def serve():
    servers = []

    def start(scripts=None):
        server = ScriptedServer(scripts or {})
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def items(*markers, reference="参考"):
    return [{"prediction": f"文本 {m}", "reference": reference} for m in markers]


S = (5, 4, 3, 4, 5)  # the five most of the replies below hold


@pytest.mark.parametrize("reply, expected", [
    # a bare run, alone or after prose
    ("5,4,3,4,5", S),
    ("5, 4, 1, 3, 2", (5, 4, 1, 3, 2)),
    ("5，4，3，4，5", S),
    ("1、2、3、4、5。", (1, 2, 3, 4, 5)),
    ("1、 2、 3、 4、 5", (1, 2, 3, 4, 5)),  # one line, not a numbered list
    ("Scores: 5, 4, 3, 4, 5.", S),
    ("我认为这篇文本风格统一，但略显平淡。\n得分：5，4，3，4，5", S),
    ("I think the text is fine.\n\n4\n3\n5\n2\n1\n", (4, 3, 5, 2, 1)),
    ("Step 1 done; scores 2 2 2 2 2", (2, 2, 2, 2, 2)),  # "1" is a run of its own, of one
    ("step2: 1,1,1,1,1", (1, 1, 1, 1, 1)),  # "2" is glued to a word: not a number
    ("５，４，３，４，５", S),  # full-width digits
    ("评分：５，４，３，４，５。", S),
    # scores first, an explanation after
    ("5，4，3，4，5\n\n理由：文本风格统一，语义前后一致，但创意略显不足。", S),
    ("5, 4, 3, 4, 5\n\nThe style is consistent throughout; the ending is a little rushed (2 sentences).", S),
    ("5，4，3，4，5\n（1分最差，5分最优）", S),  # the scale on the next line is not a sixth score
    ("5, 4, 3, 4, 5 (out of 5)", S),
    ("5, 4, 3, 4, 5\n\n总分：21分", S),
    ("Scores: 5, 4, 3, 4, 5\n\n1. The style is consistent.\n2. The story holds together.", S),
    # score forms
    ("**5**, **4**, **3**, **4**, **5**", S),
    ("5/5, 4/5, 3/5, 4/5, 5/5", S),
    ("5分，4分，3分，4分，5分", S),
    ("(5) (4) (3) (4) (5)", S),
    ("[5, 4, 3, 4, 5]", S),
    ("| SC | CC | CV | RN | CO |\n|---|---|---|---|---|\n| 5 | 4 | 3 | 4 | 5 |", S),
    ("<think>The style is fine, maybe 4,4,4,4,4... no.</think>\n5,4,3,4,5", S),  # the thinking is not read
    # one per line, numbered or bulleted
    ("1. 5\n2. 4\n3. 3\n4. 4\n5. 5", S),
    ("1) 5\n2) 4\n3) 3\n4) 4\n5) 5", S),
    ("- 5\n- 4\n- 3\n- 4\n- 5", S),
    # labelled
    ("SC: 5\nCC: 4\nCV: 3\nRN: 4\nCO: 5", S),
    ("SC 5, CC 4, CV 3, RN 4, CO 5", S),
    ("CC: 4, SC: 5, CV: 3, RN: 4, CO: 5", S),  # ordered by label, not as written
    ("CO=1; RN=2; CV=3; CC=4; SC=5", (5, 4, 3, 2, 1)),
    ('{"SC": 5, "CC": 4, "CV": 3, "RN": 4, "CO": 5}', S),
    ("SC^f: 5, CC^f: 4, CV^f: 3, RN^f: 4, CO^f: 5", S),
    ("风格一致性：5\n语义一致性：4\n创造性：3\n丰富度：4\n逻辑连贯性：5", S),
    ("**风格一致性**：5分，风格统一。\n**语义一致性**：4分，个别句子跑题。\n**创造性**：3分\n**丰富度**：4分\n**逻辑连贯性**：5分", S),
    ("1. 风格一致性：5/5\n2. 语义一致性：4/5\n3. 创造性：3/5\n4. 丰富度：4/5\n5. 逻辑连贯性：5/5", S),
    ("风格一致性得分为5分；语义一致性得分为4分；创造性得分为3分；丰富度得分为4分；逻辑连贯性得分为5分。", S),
    ("风格一致性（SC）：5\n语义一致性（CC）：4\n创造性（CV）：3\n丰富度（RN）：4\n逻辑连贯性（CO）：5", S),
    ("**Style consistency**: 5/5 - the tone never wavers.\n**Semantic consistency**: 4/5\n**Creativity**: 3/5\n"
     "**Richness**: 4/5\n**Logical coherence**: 5/5\n\nOverall a solid text.", S),
    ("Creativity (3), Richness (4), Logical coherence (5), Style consistency (5), Semantic consistency (4)", S),
    ("style consistency: 5 out of 5\nsemantic consistency: 4 out of 5\ncreativity: 3 out of 5\n"
     "richness: 4 out of 5\nlogical coherence: 5 out of 5", S),
    ("SC: 5, CC: 4, CV: 3, RN: 4, CO: 5\n\nIn order: 5, 4, 3, 4, 5", S),  # the two readings agree
    # refused: not exactly one valid five
    ("5，4，3", None),
    ("5,4,3,2,1,4", None),
    ("7", None),
    ("The text is coherent and creative.", None),
    ("文本风格统一，语义连贯，创造性一般。", None),
    ("", None),
    ("6,4,3,4,5", None),
    ("0,4,3,4,5", None),
    ("15,4,3,4,5", None),  # not "5,4,3,4,5" with a stray 1
    ("4.5, 4, 3, 4, 5", None),  # a decimal is not a score
    ("4.5, 4, 3, 4, 5, 2", None),  # ... nor does it leave the five after it
    ("4/10, 4, 3, 4, 5", None),  # another scale
    ("5/5, 4/5, 3/5, 4/5", None),
    ("5, 4, 3, 4, 5\n\nOn reflection: 4, 4, 4, 4, 4", None),  # two different fives
    ("5，4，3，4，5\n4，4，3，4，5", None),  # two lines, ten numbers
    ("5\n4\n3\n4\n5\n2", None),  # six scores, one per line
    ("SC: 5, CC: 4", None),  # aspects missing
    ("SC: 5\nCC: 4\nCV: 3\nRN: 4\nCO: 5\nSC: 4", None),  # an aspect twice
    ("风格一致性：5\n语义一致性：4\n创造性：3.5\n丰富度：4\n逻辑连贯性：5", None),
    ("SC: 5, CC: 4, CV: 3, RN: 4, CO: 5\n\n4, 4, 4, 4, 4", None),  # labels and a run disagree
    ("风格一致性：6\n语义一致性：4\n创造性：3\n丰富度：4\n逻辑连贯性：5", None),
])
def test_parse_scores(reply, expected):
    assert parse_scores(reply) == expected


def test_prompts_are_filled_in_the_requested_language(serve, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = serve()
    client = JudgeClient(server.url, "judge-m", **FAST)
    client.judge([{"prediction": "PRED-zh", "reference": "REF-zh"}], lang="zh", reference_aware=True)
    client.judge([{"prediction": "PRED-en", "reference": "REF-en"}], lang="en", reference_aware=True)
    client.judge([{"prediction": "PRED-en-free", "reference": "REF-unused"}], lang="en")
    client.judge([{"prediction": "PRED-zh-free"}], lang="zh")
    prompts = [body["messages"][0]["content"] for _, body in server.received]
    assert len(prompts) == 4
    zh_aware, en_aware, en_free, zh_free = prompts
    assert "参考文本： REF-zh\n\n待测文本： PRED-zh" in zh_aware and zh_aware.startswith("任务描述")
    assert "Reference text: REF-en\n\nText to be tested: PRED-en" in en_aware and "参考" not in en_aware
    assert en_free.endswith("Text to be tested: PRED-en-free") and "REF-unused" not in en_free
    assert "Creativity" in en_free and "Reference text" not in en_free
    assert zh_free.endswith("待测文本： PRED-zh-free") and "参考文本" not in zh_free
    assert not any("{prediction}" in p or "{ground_truth}" in p for p in prompts)
    headers, body = server.received[0]
    assert body["model"] == "judge-m" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert "Authorization" not in headers


def test_api_key_from_the_named_environment_variable(serve, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test-123")
    server = serve()
    JudgeClient(server.url, "m", api_key_env="JUDGE_TEST_KEY", **FAST).judge(items("a"))
    assert server.received[0][0]["Authorization"] == "Bearer sk-test-123"


def test_build_prompt_rejects_other_languages_and_keeps_braces():
    with pytest.raises(ValueError):
        build_prompt("text", lang="fr")
    assert build_prompt("a {ground_truth} b", lang="en").endswith("Text to be tested: a {ground_truth} b")


def test_reference_aware_needs_references(serve):
    server = serve()
    with pytest.raises(ValueError):
        JudgeClient(server.url, "m", **FAST).judge([{"prediction": "x"}], reference_aware=True)
    assert server.received == []


def test_scores_retries_and_unscored(serve):
    server = serve({
        "good": ["Scores: 5，4，3，4，5。"],
        "three": ["5，4，3"],
        "six": ["5,4,3,2,1,4"],
        "seven": ["7"],
        "prose": ["The text is lovely."],
        "flaky": [("status", 500), ("status", 429), "1,2,3,4,5"],
        "late-fix": ["I cannot decide.", "2、2、2、2、2"],
        "not-json": [("raw", b"<html>oops</html>"), ("raw", b'{"choices": []}'), "4 4 4 4 4"],
    })
    client = JudgeClient(server.url, "m", retries=2, **FAST)
    result = client.judge(items("good", "three", "six", "seven", "prose", "flaky", "late-fix", "not-json"))
    assert result.scores == [
        {"SC^f": 5, "CC^f": 4, "CV^f": 3, "RN^f": 4, "CO^f": 5}, None, None, None, None,
        {"SC^f": 1, "CC^f": 2, "CV^f": 3, "RN^f": 4, "CO^f": 5},
        {f"{a}^f": 2 for a in ("SC", "CC", "CV", "RN", "CO")},
        {f"{a}^f": 4 for a in ("SC", "CC", "CV", "RN", "CO")},
    ]
    # 21 requests: good 1, four malformed x 3 attempts, flaky 3, late-fix 2, not-json 3; 13 of them retries
    assert (result.requests, result.retries, result.unscored, result.cache_hits) == (21, 13, 4, 0)
    assert result.unreadable == 4  # all four unscored got replies, none of them readable
    assert len(server.received) == 21


def test_unreadable_replies_are_counted_apart_from_failures(serve):
    server = serve({
        "unreadable": ["The text is lovely, I would give it a high score."],  # the same at every retry
        "down": [("status", 503)],
        "garbled": [("raw", b"<html>oops</html>")],  # a response, but no reply text in it
        "half-read": ["I cannot decide.", ("status", 500)],  # a reply came back and did not parse
        "refused": [("status", 401)],
        "fine": ["SC: 5\nCC: 4\nCV: 3\nRN: 4\nCO: 5"],
    })
    client = JudgeClient(server.url, "m", retries=2, **FAST)
    result = client.judge(items("unreadable", "down", "garbled", "half-read", "refused", "fine", "unreadable"))
    assert [s is None for s in result.scores] == [True, True, True, True, True, False, True]
    # per item: "unreadable" twice (one prompt, asked once), "half-read"; not "down", "garbled", "refused"
    assert (result.unscored, result.unreadable) == (6, 3)
    assert result.stats["unreadable"] == 3 and result.stats["unscored"] == 6
    assert result.requests == 3 + 3 + 3 + 3 + 1 + 1


def test_slow_reply_times_out_and_is_retried(serve):
    server = serve({"slow-once": [("sleep", 1.0, "5,5,5,5,5"), "4,4,4,4,4"], "always-slow": [("sleep", 1.0, "5,5,5,5,5")]})
    client = JudgeClient(server.url, "m", timeout=0.2, retries=1, backoff=0.01)
    result = client.judge(items("slow-once", "always-slow"))
    assert result.scores[0] == {f"{a}^f": 4 for a in ("SC", "CC", "CV", "RN", "CO")}
    assert result.scores[1] is None
    assert (result.requests, result.retries, result.unscored) == (4, 2, 1)


def test_client_errors_are_not_retried(serve):
    server = serve({"bad": [("status", 400), "5,5,5,5,5"]})
    result = JudgeClient(server.url, "m", retries=3, **FAST).judge(items("bad"))
    assert (result.scores, result.requests, result.retries, result.unscored) == ([None], 1, 0, 1)


def test_unreachable_endpoint_is_unscored_after_exponential_backoff(monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps = []
    monkeypatch.setattr(judge_module, "time", types.SimpleNamespace(sleep=sleeps.append))
    result = JudgeClient(f"http://127.0.0.1:{port}/v1/", "m", retries=3, backoff=0.5).judge(items("x"))
    assert (result.scores, result.requests, result.retries, result.unscored) == ([None], 4, 3, 1)
    assert sleeps == [0.5, 1.0, 2.0]


def test_cache_resumes_without_requests(serve, tmp_path):
    cache = tmp_path / "sub" / "judge_cache.jsonl"
    server = serve({"bad": ["prose only"]})
    batch = items("a", "b", "c", "bad")
    first = JudgeClient(server.url, "m", retries=1, cache_path=str(cache), **FAST).judge(batch, reference_aware=True)
    assert (first.requests, first.unscored, first.cache_hits) == (5, 1, 0)
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 3  # the failure is not cached

    server.scripts = {}  # the failed prompt now gets an answer: it must be asked again, the others not
    second = JudgeClient(server.url, "m", retries=1, cache_path=str(cache), **FAST).judge(batch, reference_aware=True)
    assert (second.requests, second.unscored, second.cache_hits) == (1, 0, 3)
    assert second.scores[:3] == first.scores[:3]
    assert second.scores[3] == {f"{a}^a": 3 for a in ("SC", "CC", "CV", "RN", "CO")}

    sent = len(server.received)
    third = JudgeClient(server.url, "m", cache_path=str(cache), **FAST).judge(batch, reference_aware=True)
    assert len(server.received) == sent and third.requests == 0 and third.cache_hits == 4
    assert third.scores == second.scores

    other_model = JudgeClient(server.url, "other", cache_path=str(cache), **FAST).judge(batch, reference_aware=True)
    assert other_model.requests == 4 and other_model.cache_hits == 0  # the model is part of the key


def test_cache_survives_a_partial_last_line(serve, tmp_path):
    cache = tmp_path / "judge_cache.jsonl"
    server = serve()
    JudgeClient(server.url, "m", cache_path=str(cache), **FAST).judge(items("a"))
    with open(cache, "a", encoding="utf-8") as handle:
        handle.write('{"key": "cut sho')  # a run killed mid-write
    resumed = JudgeClient(server.url, "m", cache_path=str(cache), **FAST).judge(items("a", "b"))
    assert (resumed.requests, resumed.cache_hits, resumed.unscored) == (1, 1, 0)
    again = JudgeClient(server.url, "m", cache_path=str(cache), **FAST).judge(items("a", "b"))
    assert (again.requests, again.cache_hits) == (0, 2)


def test_identical_prompts_are_asked_once(serve):
    server = serve()
    result = JudgeClient(server.url, "m", **FAST).judge(items("same", "same"))
    assert len(server.received) == 1 and result.scores[0] == result.scores[1] is not None


def test_concurrency_is_bounded_by_max_workers(serve):
    server = serve({f"w{i}": [("sleep", 0.1, "5,5,5,5,5")] for i in range(6)})
    result = JudgeClient(server.url, "m", max_workers=2, **FAST).judge(items(*(f"w{i}" for i in range(6))))
    assert result.unscored == 0 and server.max_in_flight == 2


def test_aggregate_leaves_unscored_out_of_the_means():
    free = JudgeResult(scores=[dict(zip(CRITERIA[:5], (5, 4, 3, 2, 1))), None, dict(zip(CRITERIA[:5], (3, 2, 1, 2, 3)))],
                       requests=7, retries=4, unscored=1, cache_hits=0)
    aware = JudgeResult(scores=[dict(zip(CRITERIA[5:], (2, 2, 2, 2, 5))), None, None],
                        requests=1, retries=0, unscored=2, cache_hits=2)
    out = aggregate(free, aware)
    assert out["scores"] == {"SC^f": 4.0, "CC^f": 3.0, "CV^f": 2.0, "RN^f": 2.0, "CO^f": 2.0,
                             "SC^a": 2.0, "CC^a": 2.0, "CV^a": 2.0, "RN^a": 2.0, "CO^a": 5.0}
    assert out["stats"] == {"judged": 6, "requests": 8, "retries": 4, "unscored": 3, "unreadable": 0, "cache_hits": 2}
    free.unreadable, aware.unreadable = 1, 1
    assert aggregate(free, aware)["stats"]["unreadable"] == 2
    only_free = aggregate(free)["scores"]
    assert only_free["SC^f"] == 4.0 and all(only_free[name] is None for name in CRITERIA[5:])


def test_results_md_states_the_share_of_unreadable_replies():
    from flexmuse_training.evaluation import EvaluationResult

    info = {"articles": 60, "paragraphs": 180,
            "judge": {"model": "m", "judged": 120, "requests": 130, "retries": 10, "unscored": 3, "unreadable": 2,
                      "cache_hits": 0}}
    report = EvaluationResult(articles=[], metrics={}, info=info).to_markdown("Model")
    assert ("Judge `m`: 3 of 120 judgements unscored (2 with replies the parser could not read, 1.7 % of the "
            "judgements; "
            "1 without a reply: connection, timeout or HTTP failures)") in report
    info["judge"].update(unscored=1, unreadable=1)
    assert "(1 with replies the parser could not read, 0.8 % of the judgements; 0 without a reply" in \
        EvaluationResult(articles=[], metrics={}, info=info).to_markdown("Model")
