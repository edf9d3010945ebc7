"""Checks a running rlm container over HTTP, from the host, as a user would reach it.

Usage: python check.py BASE_URL API_KEY TRACE_DIR. BASE_URL is the published port on the host
(http://127.0.0.1:PORT), TRACE_DIR the host side of the container's /traces volume. The server
must answer with the scripted model (rlm-mock). Only the standard library: real HTTP with
urllib, so it runs with any python3. Exits non-zero, with the reason, on failure.
"""
import json
import pathlib
import random
import sys
import time
import urllib.error
import urllib.request

base, key, trace_dir = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])


def request(path, body=None, headers=None, auth=True):
    h = dict(headers or {})
    if auth:
        h["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# The page, as a browser on the host gets it.
status, page = request("/", auth=False)
assert status == 200, (status, page[:300])
assert "<title>rlm — Recursive Language Models</title>" in page, page[:300]

# The API needs the key the container was given (RLM_SERVE_API_KEY).
status, body = request("/v1/models", auth=False)
assert status == 401, (status, body)
status, body = request("/v1/models")
assert status == 200, (status, body)
ids = [m["id"] for m in json.loads(body)["data"]]
assert "rlm" in ids and "rlm:compat/scripted" in ids, ids

# The DNS-rebinding guard: a name the server was not told about is refused.
status, body = request("/v1/models", headers={"Host": "evil.example:7860"})
assert status == 403, (status, body)

# A question through the OpenAI-compatible endpoint, answered by the scripted model on the host's
# mock: the answer (a fresh number each time) can only come from the document.
code = str(random.randrange(10_000, 100_000))
doc = "Filler.\n" * 40 + f"The access code for project Falcon-12 is {code}.\n" + "More filler.\n" * 40
before = set(trace_dir.glob("*.jsonl"))
status, body = request("/v1/chat/completions", {
    "model": "rlm",
    "messages": [{"role": "system", "content": doc},
                 {"role": "user", "content": "What is the access code for project Falcon-12?"}],
})
assert status == 200, (status, body)
reply = json.loads(body)
assert reply["choices"][0]["message"]["content"] == code, reply
assert reply["choices"][0]["finish_reason"] == "stop", reply
assert reply["usage"]["prompt_tokens"] > 0, reply

# The run's trace lands on the host side of the volume, with the run in it.
for _ in range(100):
    new = set(trace_dir.glob("*.jsonl")) - before
    if new:
        break
    time.sleep(0.05)
assert new, f"no trace file appeared in {trace_dir}"
trace = max(new).read_text()
assert code in trace, "the trace does not hold the run"
print(f"container: page, /v1/models ({len(ids)} models), auth, host guard, answer {code} "
      f"through /v1/chat/completions, trace {max(new).name} on the host: all OK")
