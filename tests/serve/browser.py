"""The `rlm serve` page in headless Chromium: paste a document, run, watch iterations arrive
live, read the answer; open a trace file. Saves screenshots.

Usage: python browser.py BASE_URL API_KEY TRACE_FILE OUT_DIR
"""
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

base, key, trace, out = sys.argv[1:5]
DOC = "Filler.\n" * 40 + "The access code for project Falcon-12 is 48213.\n" + "More filler.\n" * 40

opts = webdriver.ChromeOptions()
for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
    opts.add_argument(a)
opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
driver = webdriver.Chrome(options=opts, service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")))


def wait(what, cond, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    driver.save_screenshot(os.path.join(out, "failure.png"))
    raise SystemExit(f"timed out waiting for {what}; status={driver.find_element(By.ID, 'status').text!r} "
                     f"message={driver.find_element(By.ID, 'message').text!r}")


try:
    driver.get(base + "/")
    wait("the page", lambda: driver.find_element(By.ID, "model").get_attribute("value"))
    driver.find_element(By.ID, "api-key").send_keys(key)
    # Paste the document (as a paste does: set the text, fire input).
    driver.execute_script("const d = document.getElementById('doc'); d.value = arguments[0]; d.dispatchEvent(new Event('input'));", DOC)
    driver.find_element(By.ID, "query").send_keys("What is the access code for project Falcon-12?")
    driver.find_element(By.ID, "run").click()
    # Live: iterations appear while the run is still running.
    wait("a live iteration", lambda: driver.find_elements(By.CSS_SELECTOR, ".iteration")
         and "running" in driver.find_element(By.ID, "status").text)
    live = len(driver.find_elements(By.CSS_SELECTOR, ".iteration"))
    driver.save_screenshot(os.path.join(out, "page-running.png"))
    wait("the answer", lambda: driver.find_element(By.ID, "answer").text == "48213")
    assert "answered" in driver.find_element(By.ID, "status").text
    iters = len(driver.find_elements(By.CSS_SELECTOR, ".iteration"))
    assert iters > live or live >= 1, (live, iters)
    assert driver.find_elements(By.CSS_SELECTOR, "pre.code span.kw"), "code is highlighted"
    driver.save_screenshot(os.path.join(out, "page-answered.png"))
    # The run is listed; a trace file opens in the same viewer.
    wait("the past run", lambda: driver.find_elements(By.CSS_SELECTOR, "#runs li .badge.answered"))
    driver.find_element(By.ID, "trace-file").send_keys(os.path.abspath(trace))
    wait("the trace", lambda: "Opened the trace" in driver.find_element(By.ID, "message").text)
    assert driver.find_elements(By.CSS_SELECTOR, ".iteration"), "trace iterations shown"
    driver.save_screenshot(os.path.join(out, "trace-view.png"))
    print(f"browser: live iterations ({live} while running, {iters} at the end), answer, trace view OK; screenshots in {out}")
finally:
    driver.quit()
