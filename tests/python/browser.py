"""A real browser for tests/console_browser.rs: Debian's chromium, driven through Selenium
and chromium-driver. Reads one JSON command per line on stdin and answers each with one JSON
line on stdout: {"ok": value} or {"error": "..."}.

Commands: open(url), wait(css, text?, timeout?) -> the element's text, count(css) -> number,
click(css), type(css, text), screenshot(path), eval(js) -> value, quit.
"""
import json
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def wait(driver, css, text=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            for el in driver.find_elements(By.CSS_SELECTOR, css):
                last = el.text
                if text is None or text in el.text:
                    return el.text
        except WebDriverException:
            pass  # the page re-rendered under us: look again
        time.sleep(0.05)
    raise TimeoutError(f"no {css!r} with text {text!r} within {timeout}s (last seen: {last!r})")


def main():
    driver = browser()
    print(json.dumps({"ok": "ready"}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        name = cmd.get("cmd")
        try:
            if name == "quit":
                break
            if name == "open":
                start = time.monotonic()
                driver.get(cmd["url"])
                result = time.monotonic() - start
            elif name == "wait":
                result = wait(driver, cmd["css"], cmd.get("text"), cmd.get("timeout", 10.0))
            elif name == "count":
                result = len(driver.find_elements(By.CSS_SELECTOR, cmd["css"]))
            elif name == "click":
                wait(driver, cmd["css"], None, cmd.get("timeout", 10.0))
                driver.find_element(By.CSS_SELECTOR, cmd["css"]).click()
                result = True
            elif name == "type":
                el = driver.find_element(By.CSS_SELECTOR, cmd["css"])
                el.clear()
                el.send_keys(cmd["text"])
                result = True
            elif name == "screenshot":
                result = driver.save_screenshot(cmd["path"])
            elif name == "eval":
                result = driver.execute_script(cmd["js"])
            else:
                raise ValueError(f"unknown command {name!r}")
            print(json.dumps({"ok": result}), flush=True)
        except Exception as e:  # every failure goes back to the test, which reports it
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
    driver.quit()


if __name__ == "__main__":
    main()
