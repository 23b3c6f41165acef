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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "app.py", "--model", args.model, "--port", str(port)], cwd=REPO,
                              env=dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False"))
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        options.add_argument(flag)
    driver = None
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        driver = webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=options)
        wait = WebDriverWait(driver, 120)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#topic textarea")).send_keys(article["topic"])
        driver.find_element(By.CSS_SELECTOR, "#photos input[type=file]").send_keys("\n".join(photos))
        wait.until(lambda d: all(f"photo{n}" in d.find_element(By.ID, "photos").text for n in range(1, len(photos) + 1)))
        driver.find_element(By.ID, "write").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#article .flexmuse-article img")) == len(photos))
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
