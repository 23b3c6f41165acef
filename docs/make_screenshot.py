"""docs/app.png: the web demo in headless Chromium, writing a held-out article of the offline corpus
with the model `make demo` trains.

    python docs/make_screenshot.py [--model out/dpo] [--data data/corpus] [--article 0]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from flexmuse_training.data import load_articles

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian's chromium, chromium-driver


def serve_app(model: str, log) -> tuple[subprocess.Popen, str]:
    """app.py with `model` on a free local port, and its URL once it answers (tests/test_app.py too)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    server = subprocess.Popen([sys.executable, "app.py", "--model", model, "--port", str(port)], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=2)
            return server, url
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"app.py exited with code {server.returncode}")
            time.sleep(0.5)
    server.terminate()
    raise TimeoutError(f"app.py did not answer at {url} within a minute")


def headless_chrome(height: int = 1500) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size=1400,{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="out/dpo")
    parser.add_argument("--data", default="data/corpus")
    parser.add_argument("--article", type=int, default=0, help="which test article's topic and images")
    parser.add_argument("--out", default=os.path.join(REPO, "docs", "app.png"))
    args = parser.parse_args()
    article = load_articles(args.data, "test")[args.article]
    folder = tempfile.mkdtemp()
    photos = []
    for number, image in enumerate(article["images"], start=1):
        photos.append(os.path.join(folder, f"photo{number}.png"))
        image.save(photos[-1])
    server, url = serve_app(args.model, None)
    driver = None
    try:
        driver = headless_chrome(1900)
        wait = WebDriverWait(driver, 120)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#topic textarea")).send_keys(article["topic"])
        driver.find_element(By.CSS_SELECTOR, "#photos input[type=file]").send_keys("\n".join(photos))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) == len(photos))
        driver.find_element(By.ID, "write").click()
        wait.until(lambda d: "Wrote" in d.find_element(By.ID, "status").text)
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(1)
        driver.save_screenshot(args.out)
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
