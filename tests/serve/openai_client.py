"""`rlm serve`'s OpenAI-compatible endpoint, driven by the official `openai` Python client.

Usage: python openai_client.py BASE_URL API_KEY. Exits non-zero (with the reason) on failure.
"""
import sys

import openai

base, key = sys.argv[1], sys.argv[2]
DOC = "Filler.\n" * 40 + "The access code for project Falcon-12 is 48213.\n" + "More filler.\n" * 40
Q = "What is the access code for project Falcon-12?"

client = openai.OpenAI(base_url=base + "/v1", api_key=key)
ids = [m.id for m in client.models.list()]
assert "rlm" in ids, ids

r = client.chat.completions.create(model="rlm", messages=[{"role": "system", "content": DOC}, {"role": "user", "content": Q}])
assert r.choices[0].message.content == "48213", r
assert r.choices[0].finish_reason == "stop", r
assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage

content, progress, usage = "", 0, None
for chunk in client.chat.completions.create(model="rlm", stream=True, messages=[{"role": "user", "content": DOC + "\n\n" + Q}]):
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        content += c.delta.content or ""
        progress += bool(getattr(c.delta, "reasoning_content", None) or (c.delta.model_extra or {}).get("reasoning_content"))
assert content == "48213", content
assert progress > 0, "progress chunks"
assert usage and usage.prompt_tokens > 0, usage

try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong").models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert "api key" in str(e).lower(), e

try:
    client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("an unknown model was accepted")
except openai.NotFoundError:
    pass

print(f"openai {openai.__version__}: models.list, create, stream (with usage and progress), auth and model errors all OK")
