"""The `rlm serve` page in headless Chromium: paste a document, run, watch iterations arrive
live, read the answer; open a trace file; open a crafted trace whose every value is markup and
check that none of it runs or becomes elements. Saves screenshots.

Usage: python browser.py BASE_URL API_KEY TRACE_FILE OUT_DIR
"""
import json
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
    # With --api-key, only the page loads without the key: it asks for it, then loads the rest.
    wait("the key prompt", lambda: driver.find_element(By.ID, "key-row").is_displayed())
    assert not driver.find_element(By.ID, "model").get_attribute("value"), "nothing but the page without the key"
    driver.find_element(By.ID, "api-key").send_keys(key)
    driver.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'));")
    wait("the page", lambda: driver.find_element(By.ID, "model").get_attribute("value"))
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

    # A crafted trace: markup in every field the page shows, of every type the page reads.
    P = '<img src=x onerror="window.__xss=(window.__xss||0)+1"><script>window.__xss=1</script>'
    node = {"rlm": "root", "depth": 0}
    usage = {"input_tokens": P, "output_tokens": P}
    crafted = [
        {"type": "run_started", **node, "query": P},
        {"type": "iteration", "rlm": "root", "depth": P, "n": P},
        {"type": "iteration", **node, "n": P},
        {"type": "model_reply", **node, "iteration": P, "text": P, "model": P, "request_hash": P,
         "usage": usage, "cost_usd": P, "ms": P},
        {"type": "code_executed", **node, "iteration": 1, "code": P + "\nprint('" + P + "')", "output": P,
         "error": P, "final_answer": P, "fuel": P, "ms": P, "restored": P, "reset": P},
        {"type": "sub_call_started", **node, "id": P, "kind": P, "model": P, "prompt_chars": P},
        {"type": "sub_call_finished", **node, "id": P, "kind": P, "model": P, "request_hash": P,
         "result": {"Ok": P}, "usage": usage, "cost_usd": 1, "ms": P, "deduped": P},
        {"type": "sub_call_finished", **node, "id": "other" + P, "kind": P, "model": P,
         "result": {"Err": P}, "usage": usage, "cost_usd": P, "ms": P, "deduped": True},
        {"type": "sub_call_started", "rlm": P, "depth": P, "id": "__proto__", "kind": P, "model": P, "prompt_chars": 1},
        {"type": "run_started", "rlm": "root." + P, "depth": P, "query": P},
        {"type": "final_answer", **node, "answer": P, "stop": {"kind": P}},
        {"type": "budget_exceeded", **node, "reason": P},
        {"type": "error", **node, "message": P},
    ]
    evil = os.path.join(out, "crafted-trace.jsonl")
    with open(evil, "w") as f:
        f.write("\n".join(json.dumps(e) for e in crafted) + "\n")
    driver.find_element(By.ID, "trace-file").send_keys(os.path.abspath(evil))
    wait("the crafted trace", lambda: "crafted-trace.jsonl" in driver.execute_script(
        "return document.getElementById('run-title').textContent"))
    time.sleep(1.0)  # an injected <img onerror> fires once its load fails
    assert driver.execute_script("return window.__xss") is None, "script from a trace ran"
    injected = driver.execute_script("return document.querySelectorAll('main img, main script, main [onerror]').length")
    assert injected == 0, f"{injected} elements were made from trace values"
    wait("the crafted trace's message", lambda: "Opened the trace crafted-trace.jsonl" in driver.find_element(By.ID, "message").text)
    shown = driver.find_element(By.ID, "timeline").text
    assert "<img src=x" in shown, "the values are shown as text"
    assert "onerror" in driver.find_element(By.ID, "answer").text
    driver.save_screenshot(os.path.join(out, "crafted-trace.png"))
    print(f"browser: live iterations ({live} while running, {iters} at the end), answer, trace view, "
          f"crafted trace shown as text OK; screenshots in {out}")
finally:
    driver.quit()
