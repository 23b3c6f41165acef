"""The Gradio web demo (app.py): its functions without a browser, the page served and under load (16
concurrent requests through gradio_client), then one end-to-end run in headless Chromium.

The browser test needs Debian's chromium and chromium-driver (`make test` installs them when run as root);
set FLEXMUSE_APP_TEST_MODEL to run it on another model (e.g. out/dpo) than the tiny one. docs/app.png is
made by docs/make_screenshot.py.
"""

import contextlib
import glob
import html
import importlib.util
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

pytest.importorskip("gradio")
import app  # noqa: E402
from helpers import REPO, make_pipeline  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOPIC = "春天的西湖"
FAST = dict(max_new_tokens=8, seed=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny saved FlexMusePipeline (no T2I part) whose paragraphs are never empty."""
    pipe = make_pipeline(with_t2i=False)
    pipe.model.generation_config.min_new_tokens = 6
    # ByT5 ids are bytes + 3: only printable ASCII (and EOS, 1), so random weights still write visible text
    pipe.model.generation_config.suppress_tokens = [i for i in range(pipe.model.config.decoder.vocab_size)
                                                    if i != 1 and not 33 + 3 <= i <= 126 + 3]
    path = tmp_path_factory.mktemp("app_model") / "pipe"
    pipe.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for number, colour in enumerate([(200, 80, 40), (40, 120, 200), (90, 200, 90)], start=1):
        path = folder / f"photo{number}.png"
        Image.new("RGB", (64, 48), colour).save(path)
        paths.append(str(path))
    return paths


def write(topic, photos, model, **options):
    """Run a write request through the page's stream; (shell, streamed texts, result)."""
    items = list(app.write_stream(topic, photos, options=app.Options(**{**FAST, **options}), model=model))
    return items[0], items[1:-1], items[-1]


def test_write_streams_then_saves_html_downloads_and_table(model_dir, photos):
    shell, streamed, first = write(TOPIC, photos[:2], model_dir)
    _, _, second = write(TOPIC, photos[:3], model_dir)
    assert shell.paragraphs == ["", ""] and [s.image.size for s in shell.sections] == [(64, 48)] * 2
    assert streamed and all(len(texts) == 2 for texts in streamed)  # the page redraws while it writes
    assert streamed[-1] == first.article.paragraphs  # what streamed is what was written
    assert len(first.article.paragraphs) == 2 and all(first.article.paragraphs)
    for paragraph in first.article.paragraphs:
        assert f"<p>{html.escape(paragraph)}</p>" in first.html
    assert first.html.count("<img src=\"data:image/png;base64,") == 2
    assert "<body" not in first.html  # the article's own page style does not leak into the app's page
    # downloads: the self-contained HTML page, and a zip whose Markdown finds its images, in a fresh folder
    assert [os.path.basename(f) for f in first.files] == ["article.html", "article.zip"]
    with zipfile.ZipFile(first.files[1]) as archive:
        names = set(archive.namelist())
        markdown = archive.read("article.md").decode()
        saved = json.loads(archive.read("article.json"))
    assert {"article.md", "article.json", "images/01.png", "images/02.png"} <= names
    assert all(link in names for link in re.findall(r"\]\((images/[^)]+)\)", markdown))
    assert first.folder != second.folder
    assert [s["paragraph"] for s in saved["sections"]] == first.article.paragraphs
    assert saved["metadata"]["seed"] == FAST["seed"]  # the seed the user typed, beside the derived ones
    # the table: one row per paragraph, its image specificity and check, the msaGate's similarity and decision
    assert [row[0] for row in second.table] == [1, 2, 3]
    for row, section in zip(second.table, second.article.sections):
        assert row[1] == section.metadata["image_specificity"]
        assert row[2] == ("⚠ low" if section.metadata["image_specificity_low"] else "ok")
        assert row[3] == section.metadata["gate_similarity"]
        assert row[4].startswith("yes" if section.metadata["gate_keep"] else "no")
    shutil.rmtree(first.folder), shutil.rmtree(second.folder)


def test_a_low_paragraph_is_flagged_in_the_page(model_dir, photos):
    *_, result = write(TOPIC, photos[:3], model_dir)
    low = [s.metadata["image_specificity_low"] for s in result.article.sections]
    assert result.html.count(app.LOW_NOTE) == sum(low)
    flagged = app.article_html(result.article)
    result.article.sections[0].metadata["image_specificity_low"] = not low[0]
    assert app.article_html(result.article).count(app.LOW_NOTE) == flagged.count(app.LOW_NOTE) + (1 if not low[0] else -1)
    shutil.rmtree(result.folder)


def test_rewrite_changes_only_that_paragraph_and_a_replaced_photo(model_dir, photos):
    *_, written = write(TOPIC, photos[:3], model_dir)
    items = list(app.rewrite_stream(written.article, 2, app.Options(seed=5, decoding="sampling", max_new_tokens=8),
                                    model=model_dir))
    shell, streamed, rewritten = items[0], items[1:-1], items[-1]
    assert shell.paragraphs == written.article.paragraphs
    assert streamed and all(texts[0] == written.article.paragraphs[0] for texts in streamed)
    old, new = written.article.paragraphs, rewritten.article.paragraphs
    assert new[0] == old[0] and new[2] == old[2] and new[1] != old[1]
    assert rewritten.article.metadata["rewrites"][-1]["seed"] == 5
    # a replaced photo: its image changes, its paragraph is written for the new one, the others stay
    *_, replaced = app.rewrite_stream(rewritten.article, 1, app.Options(**FAST), model=model_dir, image=photos[2])
    assert replaced.article.sections[0].image.tobytes() == Image.open(photos[2]).convert("RGB").tobytes()
    assert replaced.article.paragraphs[1:] == new[1:]
    with pytest.raises(ValueError, match="paragraph must be a number from 1 to 3"):
        next(app.rewrite_stream(written.article, 4, model=model_dir))
    for result in (written, rewritten, replaced):
        shutil.rmtree(result.folder)


def test_moving_a_photo_moves_its_paragraph(model_dir, photos):
    *_, written = write(TOPIC, photos[:3], model_dir)
    moved_photos, moved = app.reorder(written.article, photos[:3], 3, -1)
    assert moved_photos == [photos[0], photos[2], photos[1]]
    assert moved.paragraphs == [written.article.paragraphs[i] for i in (0, 2, 1)]
    assert [s.image for s in moved.sections] == [written.article.sections[i].image for i in (0, 2, 1)]
    assert app.reorder(written.article, photos[:3], 1, -1) == (photos[:3], written.article)  # already first
    with pytest.raises(ValueError, match="photo must be a number from 1 to 3"):
        app.reorder(written.article, photos[:3], 0, 1)
    shutil.rmtree(written.folder)


def test_each_photo_is_normalised_once(model_dir, photos, normalised):
    *_, result = write(TOPIC, photos[:2], model_dir)
    assert len(normalised) == 2  # by the app; the pipeline and the processor use its pictures
    shutil.rmtree(result.folder)


def test_model_is_loaded_once(model_dir):
    assert app.get_pipeline(model_dir) is app.get_pipeline(model_dir)


def handler_status(handler, *args):
    """The status line of a page handler's last update, and whether the buttons end enabled."""
    *_, last = handler(*args)
    return last[3], last[4]["interactive"]


@pytest.mark.parametrize("topic, files, message", [
    ("", 2, "empty topic"),
    ("   ", 1, "empty topic"),
    ("x" * (app.Limits().max_topic_chars + 1), 1, f"keep it to {app.Limits().max_topic_chars}"),
    (TOPIC, 0, "no text-to-image part"),
    (TOPIC, 9, "9 photos uploaded: upload at most 8"),
    (TOPIC, "text", "photo 1 (notes.png) is not an image"),
])
def test_bad_input_gives_its_message(model_dir, photos, tmp_path, topic, files, message):
    if files == "text":
        not_image = tmp_path / "notes.png"
        not_image.write_text("not an image")
        files = [str(not_image)]
    else:
        files = (photos * 3)[:files]
    app._model_arg = model_dir
    try:
        status, enabled = handler_status(app.on_write, topic, files, 3, "model default", 0, 8, "beam search", 1, 1)
    finally:
        app._model_arg = None
    assert status.startswith("**Error:**") and message in status, status
    assert "Traceback" not in status and str(tmp_path) not in status and enabled


def test_bad_options_give_their_message(model_dir, photos):
    status, _ = handler_status(app.on_write, TOPIC, photos[:1], 3, "model default", 2**70, 8, "beam search", 1, 1)
    assert "seed must be a whole number" in status
    status, _ = handler_status(app.on_write, TOPIC, photos[:1], 3, "model default", 0, 8, "beam search", 1, 99)
    assert "rerank must be an integer from 1 to 8" in status
    status, _ = handler_status(app.on_rewrite, None, 1, None, "model default", 0, 8, "beam search", 1, 1, [])
    assert "write an article first" in status


def test_missing_model_says_make_demo(tmp_path, monkeypatch, photos):
    monkeypatch.chdir(tmp_path)  # no out/dpo here
    monkeypatch.delenv("FLEXMUSE_MODEL", raising=False)
    assert "make demo" in app.model_status()
    status, _ = handler_status(app.on_write, TOPIC, photos[:1], 3, "model default", 0, 8, "beam search", 1, 1)
    assert "make demo" in status and status.startswith("**Error:**")
    monkeypatch.setenv("FLEXMUSE_MODEL", str(tmp_path / "nowhere" / "model"))
    assert "does not exist" in app.model_status() and "make demo" in app.model_status()


def test_the_draw_slider_shows_only_for_a_model_that_can_draw(model_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("FLEXMUSE_T2I", raising=False)
    assert not app.model_can_draw(model_dir)
    drawing = tmp_path / "drawing"
    make_pipeline(with_t2i=True).save_pretrained(drawing)
    assert app.model_can_draw(str(drawing))
    monkeypatch.setenv("FLEXMUSE_T2I", "some/sd-repo")
    assert app.model_can_draw(model_dir)


def test_on_a_zerogpu_space_the_writing_runs_under_spaces_gpu():
    code = ("import sys, types; spaces = types.ModuleType('spaces'); "
            "spaces.GPU = lambda f: setattr(f, 'on_gpu', True) or f; sys.modules['spaces'] = spaces; "
            "import app; assert app.on_write.on_gpu and app.on_rewrite.on_gpu")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_model_package_does_not_import_gradio():
    code = "import sys, pipeline_flexmuse, flexmuse_cli, writing_flexmuse; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


# ---------------------------------------------------------------------- served, under load


@pytest.fixture
def own_tempdir(tmp_path, monkeypatch):
    """This test's own temporary folder, where the app's request folders go and are counted."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return str(folder)


def app_folders(tempdir) -> list[str]:
    return glob.glob(os.path.join(tempdir, "flexmuse-app-*"))


@pytest.fixture
def limits(monkeypatch):
    """Sets `app._limits` for one test: `limits(max_photos=2)`; main's options and `_model_arg` are put back too."""
    monkeypatch.setattr(app, "_model_arg", None)
    monkeypatch.setattr(app, "_limits", app.Limits())
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    return lambda **changes: monkeypatch.setattr(app, "_limits", app.Limits(**changes))


@contextlib.contextmanager
def served(model, *options):
    """The page served by `app.main` (`python app.py --model MODEL *options`) on a free local port; its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = app.main(["--model", model, "--port", str(port), *options], prevent_thread_lock=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


# on_write's images to draw, gate mode, seed, length, decoding, beams, rerank (after the topic and, but through
# the API, where they are the session's state, the photos)
WRITE_OPTIONS = (3, "model default", 0, 8, "beam search", 1, 1)


def test_a_request_folder_is_removed_once_its_downloads_are_taken(model_dir, photos, own_tempdir, limits,
                                                                 monkeypatch):
    app._model_arg = model_dir
    args = (TOPIC, photos[:2], *WRITE_OPTIONS)
    updates = app.on_write(*args)
    result = next(update for update in updates if isinstance(update[1], list))  # the update with the downloads
    with open(result[1][0], encoding="utf-8") as handle:  # there while Gradio copies them, as it sends the update
        assert "<p>" in handle.read()
    assert len(app_folders(own_tempdir)) == 1
    assert list(updates) == [] and app_folders(own_tempdir) == []  # removed when Gradio asks for what follows
    updates = app.on_write(*args)
    next(update for update in updates if isinstance(update[1], list))
    updates.close()  # a page that stops listening
    assert app_folders(own_tempdir) == []
    *_, written = app.write_stream(TOPIC, photos[:2], options=app.Options(**FAST), model=model_dir)
    shutil.rmtree(written.folder)
    assert isinstance(list(app.on_move(written.article, photos[:2], 2, -1))[0][1], list)  # a move's downloads
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "make_archive", lambda *args: 1 / 0)  # an error while saving the downloads
        with pytest.raises(ZeroDivisionError):
            app.finish(written.article)
    monkeypatch.setattr(app, "_short", lambda text: 1 / 0)  # an error in the handler once they are saved
    with pytest.raises(ZeroDivisionError):
        list(app.on_write(*args))
    assert app_folders(own_tempdir) == []


def test_the_limits_are_the_options(model_dir, limits, monkeypatch):
    launched = []
    monkeypatch.setattr(app.gr.Blocks, "launch", lambda demo, **kwargs: launched.append(kwargs))
    monkeypatch.setenv("FLEXMUSE_MAX_QUEUE", "7")  # a Space's variable
    demo = app.main(["--model", model_dir, "--concurrency", "3", "--max-file-size", "2mb"])
    events = {fn.api_name: fn for fn in demo.fns.values()}
    assert events["on_write"].concurrency_limit == events["on_rewrite"].concurrency_limit == 3
    assert events["on_write"].concurrency_id == events["on_rewrite"].concurrency_id  # one limit for both
    assert demo._queue.default_concurrency_limit == 3 and demo._queue.max_size == 7
    assert all(fn.show_progress != "hidden" for fn in events.values())  # a waiting request shows its place
    assert launched[0]["max_file_size"] == "2mb" and demo.delete_cache == (app.CACHE_SWEEP, app.CACHE_AGE)
    assert app._limits == app.Limits(concurrency=3, max_queue=7, max_file_size="2mb")
    for bad in (["--concurrency", "0"], ["--max-file-size", "10megs"]):
        with pytest.raises(SystemExit):
            app.main(bad)


def test_each_bound_is_refused_with_its_message(model_dir, photos, limits, monkeypatch, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.utils import QueueError

    limits(max_topic_chars=10, max_photos=2)
    with monkeypatch.context() as patch:
        patch.setattr(app, "get_pipeline", lambda *args: pytest.fail("a bound was checked after the model"))
        status, _ = handler_status(app.on_write, "x" * 11, photos[:1], *WRITE_OPTIONS)
        assert status.startswith("**Error:**") and "the topic has 11 characters: keep it to 10" in status
        status, _ = handler_status(app.on_write, TOPIC, photos[:3], *WRITE_OPTIONS)
        assert status.startswith("**Error:**") and "3 photos uploaded: upload at most 2" in status
    big = tmp_path / "big.png"
    Image.effect_noise((100, 100), 60).convert("RGB").save(big)  # about 30 kB, beyond 10kb
    started, release = threading.Event(), threading.Event()

    def held(*args, **kwargs):  # a request that writes until released
        started.set()
        release.wait(60)
        raise ValueError("released")
        yield  # a generator, as write_stream is

    monkeypatch.setattr(app, "write_stream", held)
    with served(model_dir, "--max-file-size", "10kb", "--concurrency", "1", "--max-queue", "1") as url:
        with open(big, "rb") as handle:
            response = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", handle, "image/png")})
        assert response.status_code == 413 and "maximum allowed size of 10240 bytes" in response.text
        client = Client(url, verbose=False, download_files=False)
        with pytest.raises(ValueError, match="exceeds the maximum file size of 10240 bytes"):
            client.predict([handle_file(str(big))], api_name="/on_upload")
        first = client.submit(TOPIC, *WRITE_OPTIONS, api_name="/on_write")
        assert started.wait(60)
        second = client.submit(TOPIC, *WRITE_OPTIONS, api_name="/on_write")
        deadline = time.monotonic() + 60
        while second.status().code.name != "IN_QUEUE" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.status().rank == 0  # next in the queue, its place shown
        with pytest.raises(QueueError, match="Queue is full"):
            client.submit(TOPIC, *WRITE_OPTIONS, api_name="/on_write").result(timeout=60)
        release.set()
        assert "released" in first.result(timeout=60)[3] and "released" in second.result(timeout=60)[3]


def serve_request(url, photos, decoding, seed, max_new_tokens, ranks=None):
    """One visitor: photos uploaded, then an article written (its own session, as one browser tab);
    (article HTML, table rows, the HTML download's URL). `ranks` gets the queue places it was shown."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    client.predict([handle_file(path) for path in photos], api_name="/on_upload")
    job = client.submit(TOPIC, 3, "model default", seed, max_new_tokens, decoding, 1, 1, api_name="/on_write")
    while not job.done():
        if ranks is not None and job.status().code.name == "IN_QUEUE":
            ranks.append(job.status().rank)
        time.sleep(0.02)
    page, downloads, table, status, *_ = job.result(timeout=120)
    assert status.startswith("Wrote"), status
    return page, table["data"], downloads[0]["url"]


@pytest.mark.slow
def test_16_concurrent_requests_are_each_as_written_alone(model_dir, photos, own_tempdir, limits, monkeypatch):
    in_flight, peak, count_lock = [0], [0], threading.Lock()
    write_stream = app.write_stream

    def counted(*args, **kwargs):
        with count_lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            yield from write_stream(*args, **kwargs)
        finally:
            with count_lock:
                in_flight[0] -= 1

    monkeypatch.setattr(app, "write_stream", counted)
    # greedy and sampled, each sampled one with a seed of its own: draws that interleaved would show
    requests = [(photos[:1 + i % 3], "sampling" if i % 2 else "beam search", 1000 + i, 24) for i in range(16)]
    with served(model_dir, "--concurrency", "4", "--max-queue", "16") as url:
        serve_request(url, *requests[0])  # the model loads on the first request
        start = time.perf_counter()
        alone = [serve_request(url, *request) for request in requests]
        sequential = time.perf_counter() - start
        ranks = []
        start = time.perf_counter()
        with ThreadPoolExecutor(len(requests)) as pool:
            together = list(pool.map(lambda request: serve_request(url, *request, ranks=ranks), requests))
        concurrent = time.perf_counter() - start
        deadline = time.monotonic() + 30
        while app_folders(own_tempdir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app_folders(own_tempdir) == []
        # Gradio copied the downloads before their folders went: the last request's page, from its cache
        article_html = httpx.get(together[-1][2], timeout=30).text
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n16 requests (4 at once): sequential {sequential:.1f} s, concurrent {concurrent:.1f} s; "
          f"peak memory of the serving process {peak_mib:.0f} MiB")
    assert [(page, table) for page, table, _ in together] == [(page, table) for page, table, _ in alone]
    sampled = {page for (page, _, _), request in zip(together, requests) if request[1] == "sampling"}
    assert len(sampled) == len(requests) // 2  # each sampled with a seed of its own: no two pages alike
    assert peak[0] == 4  # 4 written at once, never more
    assert ranks and max(ranks) >= 1  # the others waited, their place shown
    assert all(paragraph in article_html for paragraph in re.findall(r"<p>.*?</p>", together[-1][0]))


@pytest.mark.slow
def test_concurrent_drawing_requests_draw_as_alone(tmp_path, own_tempdir):
    drawing = tmp_path / "drawing"
    make_pipeline(with_t2i=True).save_pretrained(drawing)

    def draw(seed):
        *_, result = app.write_stream(TOPIC, None, 2, app.Options(seed=seed, max_new_tokens=8), model=str(drawing))
        shutil.rmtree(result.folder)
        return [section.image.tobytes() for section in result.article.sections], result.article.paragraphs

    alone = [draw(seed) for seed in range(3)]
    with ThreadPoolExecutor(3) as pool:  # one scheduler state for all: drawn at once, they would break it
        assert list(pool.map(draw, range(3))) == alone


@pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                    reason=f"needs Debian's chromium ({CHROMIUM}) and chromium-driver ({CHROMEDRIVER}): "
                           "apt-get install chromium chromium-driver (make test does it as root)")
def test_browser_end_to_end(model_dir, photos, tmp_path):
    pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By

    spec = importlib.util.spec_from_file_location("make_screenshot", os.path.join(REPO, "docs", "make_screenshot.py"))
    browser = importlib.util.module_from_spec(spec)  # the screenshot script's app server and browser
    spec.loader.exec_module(browser)
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    model = os.environ.get("FLEXMUSE_APP_TEST_MODEL") or model_dir
    length = 256  # long enough that the page is redrawn several times while it writes
    _, _, expected = write(TOPIC, photos[:2], model, max_new_tokens=length)
    expected = expected.article.paragraphs
    with open(tmp_path / "server.log", "w") as log:
        server, url = browser.serve_app(model, log)
    driver = None

    def paragraphs(d):
        return [p.text for p in d.find_elements(By.CSS_SELECTOR, "#article .flexmuse-article > p:not(.note)")]

    try:
        driver = browser.headless_chrome(1800)
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        topic = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#topic textarea"))
        topic.send_keys(TOPIC)
        driver.find_element(By.CSS_SELECTOR, "#photos input[type=file]").send_keys("\n".join(photos[:2]))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) == 2)  # the photos, in order
        box = driver.find_element(By.CSS_SELECTOR, "input[type=number][aria-label*='max new tokens']")
        box.clear(), box.send_keys(str(length), Keys.TAB)
        # every state the page shows while it writes, however quickly it passes
        driver.execute_script("""
            window.seen = [];
            new MutationObserver(() => window.seen.push([
                document.querySelector('#status').innerText,
                [...document.querySelectorAll('#article .flexmuse-article > p:not(.note)')].map(p => p.innerText),
                document.querySelector('#write').disabled])
            ).observe(document.body, {subtree: true, childList: true, characterData: true});""")
        driver.find_element(By.ID, "write").click()
        wait.until(lambda d: "Wrote 2 paragraphs" in d.find_element(By.ID, "status").text)
        shown = paragraphs(driver)
        assert shown == [p.strip() for p in expected], (shown, expected)
        partial = [texts for status, texts, disabled in driver.execute_script("return window.seen")
                   if status.startswith("Writing") and disabled and any(texts)
                   and all(expected[i].startswith(t) for i, t in enumerate(texts)) and texts != expected]
        assert partial, "no paragraph text was shown before the article was finished"
        assert driver.find_element(By.CSS_SELECTOR, "#article h1").text == TOPIC
        wait.until(lambda d: all(ext in d.find_element(By.ID, "downloads").text for ext in (".html", ".zip")))
        assert "image specificity" in driver.find_element(By.ID, "paragraph-table").text
        # photo 2 one place earlier: its paragraph moves with it
        number = driver.find_element(By.CSS_SELECTOR, "#photo-number input")
        number.clear(), number.send_keys("2", Keys.TAB)
        driver.find_element(By.ID, "earlier").click()
        wait.until(lambda d: paragraphs(d) == shown[::-1])
        # rewrite paragraph 1 (the former 2): only it changes
        number.clear(), number.send_keys("1", Keys.TAB)
        driver.find_element(By.ID, "rewrite").click()
        wait.until(lambda d: "Rewrote paragraph 1" in d.find_element(By.ID, "status").text)
        rewritten = paragraphs(driver)
        assert rewritten[1] == shown[0] and rewritten[0] != shown[1], (rewritten, shown)
        # an empty topic: its message in the page
        topic.send_keys(Keys.CONTROL, "a")
        topic.send_keys(Keys.BACKSPACE)  # clear() fires no input event
        driver.find_element(By.ID, "write").click()
        wait.until(lambda d: "empty topic" in d.find_element(By.ID, "status").text)
        assert "Traceback" not in driver.page_source
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


SPACE_RUN = r"""
import json, importlib.util, os, shutil, sys
repo = sys.argv[1]
# hide this repository: neither on the path nor through the editable install's finder
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != repo]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", type(f).__name__).lower()]
assert importlib.util.find_spec("flexmuse_training") is None and importlib.util.find_spec("app") is None
sys.path.insert(0, os.getcwd())  # what `python app.py` puts first on a Space: its own folder
import app
ours = {name: m.__file__ for name, m in sys.modules.items() if name == "app" or name.endswith("_flexmuse")}
assert all(os.path.dirname(path) == os.getcwd() for path in ours.values()), ours
app.build_demo()
(topic, photos), *_ = app.examples()
*_, result = app.write_stream(topic, photos, options=app.Options(max_new_tokens=8))
shutil.rmtree(result.folder)
print(json.dumps({"model": app.model_path(), "paragraphs": result.article.paragraphs, "modules": sorted(ours)}))
"""


def test_the_space_folder_runs_on_its_own(model_dir, tmp_path):
    from huggingface_hub import RepoCard

    from flexmuse_training.corpus import make_corpus
    from flexmuse_training.space import make_space

    make_corpus(str(tmp_path / "corpus"), 8, seed=0, eval_articles=8)
    space = tmp_path / "space"
    make_space(str(space), model_dir, data=str(tmp_path / "corpus"), examples=2)
    card = RepoCard.load(space / "README.md").data
    assert card.sdk == "gradio" and card.app_file == "app.py" and card.sdk_version
    requirements = (space / "requirements.txt").read_text().split()
    assert "gradio==" + card.sdk_version in requirements and any(r.startswith("torch==") for r in requirements)
    assert not (space / "flexmuse_cli.py").exists() and (space / "model" / "model_index.json").is_file()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run([sys.executable, "-I", "-c", SPACE_RUN, REPO], cwd=space, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["model"] == "model" and len(out["paragraphs"]) >= 2 and all(out["paragraphs"])
    assert {"app", "pipeline_flexmuse", "streaming_flexmuse", "writing_flexmuse"} <= set(out["modules"])
    with pytest.raises(FileExistsError, match="not empty"):
        make_space(str(space), model_dir)
