"""The Gradio web demo (app.py): its functions without a browser, then one end-to-end run in headless Chromium.

The browser test needs Debian's chromium and chromium-driver (`make test` installs them when run as root);
set FLEXMUSE_APP_TEST_MODEL to run it on another model (e.g. out/dpo) than the tiny one. docs/app.png is
made by docs/make_screenshot.py.
"""

import html
import importlib.util
import json
import os
import shutil
import subprocess
import sys

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


def test_write_article_html_downloads_and_table(model_dir, photos):
    first = app.write_article(TOPIC, photos[:2], model=model_dir, **FAST)
    second = app.write_article(TOPIC, photos[:3], model=model_dir, **FAST)
    assert len(first.article.paragraphs) == 2 and all(first.article.paragraphs)
    for paragraph in first.article.paragraphs:
        assert f"<p>{html.escape(paragraph)}</p>" in first.html
    assert first.html.count("<img src=\"data:image/png;base64,") == 2
    assert "<body" not in first.html  # the article's own page style does not leak into the app's page
    # downloads: HTML, Markdown, JSON in a fresh folder per request
    assert [os.path.basename(f) for f in first.files] == ["article.html", "article.md", "article.json"]
    assert all(os.path.isfile(f) for f in first.files + second.files)
    assert first.folder != second.folder and not os.path.commonpath([first.files[0], second.files[0]]).endswith("article")
    saved = json.load(open(first.files[2], encoding="utf-8"))
    assert [s["paragraph"] for s in saved["sections"]] == first.article.paragraphs
    # the table: one row per paragraph with the gate similarity and whether the topic was kept
    assert [row[0] for row in second.table] == [1, 2, 3]
    for row, section in zip(second.table, second.article.sections):
        assert row[1] == section.metadata["gate_similarity"]
        assert row[2] == ("yes" if section.metadata["gate_keep"] else "no")
    shutil.rmtree(first.folder), shutil.rmtree(second.folder)


def test_each_photo_is_normalised_once(model_dir, photos, normalised):
    result = app.write_article(TOPIC, photos[:2], model=model_dir, **FAST)
    assert len(normalised) == 2  # by the app; the pipeline and the processor use its pictures
    shutil.rmtree(result.folder)


def test_model_is_loaded_once(model_dir):
    assert app.get_pipeline(model_dir) is app.get_pipeline(model_dir)


@pytest.mark.parametrize("topic, files, message", [
    ("", 2, "empty topic"),
    ("   ", 1, "empty topic"),
    (TOPIC, 0, "no text-to-image part"),
    (TOPIC, 9, "9 photos uploaded: upload at most 8"),
    (TOPIC, "text", "cannot read image"),
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
        article, downloads, table, status = app.on_write(topic, files, 3, "model default", 0, 8, "beam search", 1,
                                                         progress=lambda *a, **k: None)
    finally:
        app._model_arg = None
    assert status.startswith("**Error:**") and message in status, status
    assert (article, downloads, table) == ("", None, [])
    assert "Traceback" not in status


def test_missing_model_says_make_demo(tmp_path, monkeypatch, photos):
    monkeypatch.chdir(tmp_path)  # no out/dpo here
    monkeypatch.delenv("FLEXMUSE_MODEL", raising=False)
    assert "make demo" in app.model_status()
    *_, status = app.on_write(TOPIC, photos[:1], 3, "model default", 0, 8, "beam search", 1,
                              progress=lambda *a, **k: None)
    assert "make demo" in status and status.startswith("**Error:**")
    monkeypatch.setenv("FLEXMUSE_MODEL", str(tmp_path / "nowhere" / "model"))
    assert "does not exist" in app.model_status() and "make demo" in app.model_status()


def test_model_package_does_not_import_gradio():
    code = "import sys, pipeline_flexmuse, flexmuse_cli, writing_flexmuse; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


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
    expected = app.write_article(TOPIC, photos[:2], model=model, **FAST).article.paragraphs
    with open(tmp_path / "server.log", "w") as log:
        server, url = browser.serve_app(model, log)
    driver = None
    try:
        driver = browser.headless_chrome(1800)
        wait = WebDriverWait(driver, 30)
        driver.get(url)
        topic = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#topic textarea"))
        topic.send_keys(TOPIC)
        driver.find_element(By.CSS_SELECTOR, "#photos input[type=file]").send_keys("\n".join(photos[:2]))
        wait.until(lambda d: all(f"photo{n}" in d.find_element(By.ID, "photos").text for n in (1, 2)))  # uploaded
        # the max-new-tokens slider's number box
        length = driver.find_elements(By.CSS_SELECTOR, "input[type=number][aria-label*='max new tokens']")
        if length:
            length[0].clear(), length[0].send_keys("8")
        driver.find_element(By.ID, "write").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#article .flexmuse-article img")) == 2)
        shown = [p.text for p in driver.find_elements(By.CSS_SELECTOR, "#article .flexmuse-article p")]
        assert len(shown) == 2 and all(shown), shown
        if length:
            assert shown == [p.strip() for p in expected]
        assert driver.find_element(By.CSS_SELECTOR, "#article h1").text == TOPIC
        wait.until(lambda d: all(ext in d.find_element(By.ID, "downloads").text for ext in (".html", ".md", ".json")))
        assert "topic kept" in driver.find_element(By.ID, "gate-table").text
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
