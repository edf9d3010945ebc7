"""rlm_rs.RLM and RecursiveLanguageModel over a scripted model server (real HTTP)."""

from __future__ import annotations

import _thread
import asyncio
import json
import threading
import time

import pytest

import rlm_rs
from rlm_rs import RLM, ConfigError, RecursiveLanguageModel
from conftest import is_root, root_turns

DOC = "Filler line.\n" * 50 + "The access code is 48213.\n" + "More filler.\n" * 50


def two_step(messages):
    """Root: read the context and ask a sub-call, then answer with its reply."""
    if not is_root(messages):
        return "sub saw: " + messages[-1]["content"]
    if root_turns(messages) == 0:
        return (
            "Let me look.\n```repl\nimport re\ncode = re.search(r'access code is (\\d+)', context).group(1)\n"
            "sub = llm_query('check ' + code)\nprint(code, sub)\n```"
        )
    return "Found it.\nFINAL_VAR(sub)"


def test_run_answers_with_usage_events_and_trace(scripted, tmp_path):
    server = scripted(two_step)
    live = []
    trace = tmp_path / "run.jsonl"
    rlm = RLM("compat/scripted", base_url=server.url, on_event=live.append, trace=str(trace),
              max_iterations=5)
    assert rlm.model == "compat/scripted" and rlm.sub_model == "compat/scripted"
    r = rlm.run(DOC, "What is the access code?")
    assert r.answer == "sub saw: check 48213"
    assert r.stop == "final" and r.stop_message is None and r.iterations == 2
    usage = r.usage
    assert usage["total"]["calls"] == 3
    assert usage["by_model"]["compat/scripted"]["input_tokens"] == 300
    roles = {(u["role"], u["depth"]): u["calls"] for u in usage["by_role"]}
    assert roles == {("root", 0): 2, ("sub_call", 1): 1}
    # events arrive live, in order, as dicts, and are the run's events
    assert live and live[0]["type"] == "run_started" and live == r.events
    assert {"iteration", "model_reply"} <= {e["type"] for e in live}
    lines = [json.loads(l) for l in trace.read_text().splitlines()]
    assert [e["type"] for e in lines] == [e["type"] for e in r.events]
    # the sub-call's prompt reached the server
    assert any(req["messages"][-1]["content"] == "check 48213" for req in server.requests)


def test_contexts_of_each_shape_reach_the_repl(scripted):
    def reply(messages):
        if root_turns(messages) == 0:
            return "```repl\nprint(type(context).__name__)\n```"
        out = messages[-1]["content"]
        return "FINAL(" + ("list" if "list" in out else "dict" if "dict" in out else "str") + ")"

    server = scripted(reply)
    rlm = RLM("compat/scripted", base_url=server.url)
    assert rlm.run(["a", "b"], "q").answer == "list"
    assert rlm.run({"k": [1, 2]}, "q").answer == "dict"
    assert rlm.run("text", "q").answer == "str"


def test_iterations_and_budgets_stop_runs(scripted):
    server = scripted(lambda m: "```repl\nprint('still looking')\n```")
    r = RLM("compat/scripted", base_url=server.url, max_iterations=2).run("x", "q")
    assert r.stop == "max_iterations" and r.iterations == 2
    r = RLM("compat/scripted", base_url=server.url, budget_tokens=150).run("x", "q")
    assert r.stop == "budget" and "token" in r.stop_message
    with pytest.raises(ConfigError):
        RLM("compat/scripted", base_url=server.url, budget_usd=-1)


def test_a_raising_event_callback_stops_the_run(scripted):
    server = scripted(lambda m: "```repl\nprint(1)\n```")

    def boom(event):
        if event["type"] == "iteration":
            raise ValueError("stop here")

    with pytest.raises(ValueError, match="stop here"):
        RLM("compat/scripted", base_url=server.url, on_event=boom).run("x", "q")


def test_arun_and_its_cancellation(scripted):
    server = scripted(two_step)
    rlm = RLM("compat/scripted", base_url=server.url)

    async def both():
        return await asyncio.gather(rlm.arun(DOC, "q"), rlm.arun(DOC, "q"))

    results = asyncio.run(both())
    assert [r.answer for r in results] == ["sub saw: check 48213"] * 2

    slow = scripted(two_step, delay=30)
    slow_rlm = RLM("compat/scripted", base_url=slow.url)

    async def cancel_one():
        task = asyncio.ensure_future(slow_rlm.arun(DOC, "q"))
        await asyncio.sleep(0.3)
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(cancel_one()) < 10


def test_cancel_token_and_ctrl_c_stop_a_blocking_run(scripted):
    slow = scripted(two_step, delay=30)
    rlm = RLM("compat/scripted", base_url=slow.url)
    token = rlm_rs.CancelToken()
    threading.Timer(0.3, token.cancel).start()
    with pytest.raises(rlm_rs.Cancelled):
        rlm.run(DOC, "q", cancel=token)
    threading.Timer(0.3, _thread.interrupt_main).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        rlm.run(DOC, "q")
    assert time.monotonic() - started < 10


def test_model_names():
    assert rlm_rs.resolve_model("gpt-4") == "openai/gpt-4"
    assert rlm_rs.resolve_model("o3-mini") == "openai/o3-mini"
    assert rlm_rs.resolve_model("claude-sonnet-4-5") == "anthropic/claude-sonnet-4-5"
    assert rlm_rs.resolve_model("gemini-2.5-flash") == "gemini/gemini-2.5-flash"
    assert rlm_rs.resolve_model("llama3", base_url="http://h/v1") == "compat/llama3"
    assert rlm_rs.resolve_model("openai/gpt-5") == "openai/gpt-5"
    with pytest.raises(ConfigError, match="provider/model"):
        rlm_rs.resolve_model("mystery-model")
    with pytest.raises(ConfigError, match="local"):
        RLM("local/qwen2.5-coder-0.5b")


def test_missing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        RLM("gpt-4")


def test_the_original_projects_api(scripted):
    server = scripted(two_step)
    rlm = RecursiveLanguageModel("scripted", base_url=server.url)
    answer = rlm.run(
        context=DOC,
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "What is the access code?"},
        ],
        max_chunk_size=8000,
        max_output_chars=500,
        max_steps=4,
    )
    assert answer == "sub saw: check 48213"
    assert rlm.last_result.iterations == 2
    first = server.requests[0]["messages"]
    question = next(m["content"] for m in first if m["role"] == "user")
    assert "What is the access code?" in question and "user: Hi" in question
    # max_steps is the iteration limit
    looping = scripted(lambda m: "```repl\nprint(1)\n```")
    rlm = RecursiveLanguageModel("scripted", base_url=looping.url)
    rlm.run(context="x", messages=[{"role": "user", "content": "q"}], max_steps=3)
    assert rlm.last_result.iterations == 3 and rlm.last_result.stop == "max_iterations"


def test_a_cycle_through_on_event_is_collected(scripted):
    import gc
    import weakref

    server = scripted(two_step)

    class App:
        def __init__(self):
            self.seen = []
            self.rlm = RLM("compat/scripted", base_url=server.url, on_event=self.record)

        def record(self, event):
            self.seen.append(event["type"])

    app = App()
    assert app.rlm.run(DOC, "q").answer == "sub saw: check 48213" and app.seen
    ref = weakref.ref(app)
    del app
    gc.collect()
    assert ref() is None


def test_no_model_named_takes_the_model_of_the_key_set(monkeypatch):
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "RLM_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    assert RLM().model == "gemini/gemini-2.5-flash"
    monkeypatch.delenv("GOOGLE_API_KEY")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        RLM()


def test_tools_reach_every_repl_of_a_run(scripted):
    looked_up = []

    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        looked_up.append(key)
        return {"alpha": "first", "beta": "second"}[key]

    def reply(messages):
        if root_turns(messages) == 0:
            return "```repl\nw = lookup('beta')\nprint(w)\n```"
        return "FINAL_VAR(w)"

    server = scripted(reply)
    rlm = RLM("compat/scripted", base_url=server.url, tools=[lookup])
    r = rlm.run("ctx", "q")
    assert r.answer == "second" and looked_up == ["beta"]
    calls = [e for e in r.events if e["type"] == "tool_call"]
    assert len(calls) == 1 and "lookup" in json.dumps(calls[0])
    system = next(m["content"] for m in server.requests[0]["messages"] if m["role"] == "system")
    assert "lookup" in system and "Look a key up" in system
