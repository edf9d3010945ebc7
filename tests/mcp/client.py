"""`rlm mcp` driven by the official MCP Python SDK over stdio, with the scripted model.

Usage: python client.py RLM FAST_MOCK_URL SLOW_MOCK_URL WORKDIR. Exits non-zero (with the reason)
on failure. Checks: tool listing and schemas, a call with progress notifications (and its round
trip time), list/read of the run's trace, traces private to the roots that made them (owner-only
files in a directory of their own; a server over another root, sharing --trace-dir, neither lists
nor reads them), a cancelled call (the run stops: its trace stops growing, no final answer), and
refused paths (`..`, absolute, a symlink out of the root).
"""
import importlib.metadata
import json
import os
import stat
import sys
import time

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

rlm, fast_url, slow_url, work = sys.argv[1:5]
root = os.path.join(work, "root")
traces = os.path.join(work, "traces")
other_root = os.path.join(work, "other-root")
os.makedirs(os.path.join(root, "docs"), exist_ok=True)
os.makedirs(other_root, exist_ok=True)
os.makedirs(traces, exist_ok=True)
DOC = "Filler.\n" * 40 + "The access code for project Falcon-12 is 48213.\n" + "More filler.\n" * 40
Q = "What is the access code for project Falcon-12?"
with open(os.path.join(root, "docs", "notes.md"), "w") as f:
    f.write(DOC)
with open(os.path.join(work, "secret.txt"), "w") as f:
    f.write("outside the root")
link = os.path.join(root, "escape.txt")
if not os.path.lexists(link):
    os.symlink(os.path.join(work, "secret.txt"), link)


def server(url: str, trace_dir: str, root: str = root) -> StdioServerParameters:
    return StdioServerParameters(
        command=rlm,
        args=["mcp", "--root", root, "--model", "compat/scripted", "--base-url", url, "--trace-dir", trace_dir],
        env={"RLM_LOG": "warn"},
    )


def trace_files(base: str) -> list[str]:
    """The trace files under `base`: all in one owner-only directory of its own, each 0600."""
    [sub] = os.listdir(base)
    d = os.path.join(base, sub)
    assert sub.startswith("roots-") and os.path.isdir(d), sub
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, oct(os.stat(d).st_mode)
    files = [os.path.join(d, n) for n in os.listdir(d)]
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, (f, oct(os.stat(f).st_mode))
    return files


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def fast() -> float:
    async with stdio_client(server(fast_url, traces)) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert set(tools) >= {"ask_file", "ask_directory", "ask_text", "list_traces", "read_trace"}, tools
            for name in ("ask_file", "ask_directory", "ask_text"):
                t = tools[name]
                assert len(t.description) > 80, (name, t.description)
                props = t.input_schema["properties"]
                assert {"question", "model", "max_depth", "max_iterations", "budget_usd", "budget_seconds"} <= set(props), (name, props)
                assert "question" in t.input_schema.get("required", []), t.input_schema
            assert "name" in tools["read_trace"].input_schema["properties"]

            progress = []

            async def on_progress(p: float, total, message) -> None:
                progress.append((p, message))

            started = time.monotonic()
            r = await session.call_tool("ask_file", {"path": "docs/notes.md", "question": Q}, progress_callback=on_progress)
            round_trip = time.monotonic() - started
            assert not r.is_error, text(r)
            assert r.content[0].text == "48213", text(r)
            assert "answered" in r.content[1].text and "trace mcp-" in r.content[1].text, text(r)
            assert progress, "no progress notifications"
            assert all("iteration" in (m or "") and "tokens" in (m or "") for _, m in progress), progress
            assert [p for p, _ in progress] == sorted(p for p, _ in progress), progress

            r = await session.call_tool("ask_directory", {"path": "docs", "question": Q, "max_depth": 0})
            assert not r.is_error and r.content[0].text == "48213", text(r)
            r = await session.call_tool("ask_text", {"text": DOC, "question": Q, "max_iterations": 5})
            assert not r.is_error and r.content[0].text == "48213", text(r)

            listed = json.loads(text(await session.call_tool("list_traces", {})))
            assert len(listed) == 3, listed
            trace = text(await session.call_tool("read_trace", {"name": listed[0]["name"]}))
            assert '"type":"final_answer"' in trace.replace(" ", ""), trace[:500]
            assert len(trace_files(traces)) == 3

            for bad in ["../secret.txt", "docs/../../secret.txt", os.path.join(work, "secret.txt"), "escape.txt", "/etc/passwd"]:
                r = await session.call_tool("ask_file", {"path": bad, "question": Q})
                assert r.is_error and "outside the allowed roots" in text(r), (bad, text(r))
            r = await session.call_tool("ask_directory", {"path": "..", "question": Q})
            assert r.is_error and "outside the allowed roots" in text(r), text(r)
            r = await session.call_tool("read_trace", {"name": "../secret.txt"})
            assert r.is_error, text(r)
            r = await session.call_tool("ask_file", {"path": "docs/notes.md", "question": Q, "model": "openai/gpt-5"})
            assert r.is_error and "not allowed" in text(r), text(r)
    # A server over another root, sharing the trace directory, sees none of those traces.
    async with stdio_client(server(fast_url, traces, other_root)) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            assert json.loads(text(await session.call_tool("list_traces", {}))) == []
            r = await session.call_tool("read_trace", {"name": listed[0]["name"]})
            assert r.is_error, text(r)
            r = await session.call_tool("ask_file", {"path": os.path.join(root, "docs", "notes.md"), "question": Q})
            assert r.is_error and "outside the allowed roots" in text(r), text(r)
    return round_trip


async def cancelled() -> None:
    slow_traces = os.path.join(work, "slow-traces")
    os.makedirs(slow_traces, exist_ok=True)
    async with stdio_client(server(slow_url, slow_traces)) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            first = anyio.Event()

            async def on_progress(p: float, total, message) -> None:
                first.set()

            finished = []

            async def call() -> None:
                finished.append(await session.call_tool("ask_file", {"path": "docs/notes.md", "question": Q, "max_depth": 1}, progress_callback=on_progress))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                with anyio.fail_after(30):
                    await first.wait()
                # Abandoning the call sends notifications/cancelled for it.
                tg.cancel_scope.cancel()
            assert not finished, "the call finished before it was cancelled"
            [path] = trace_files(slow_traces)
            await anyio.sleep(1.0)
            size = os.path.getsize(path)
            await anyio.sleep(3.0)
            assert os.path.getsize(path) == size, "the cancelled run kept going"
            with open(path) as f:
                assert '"final_answer"' not in f.read(), "the cancelled run reached an answer"
            # The server still answers.
            assert len((await session.list_tools()).tools) == 5


async def main() -> None:
    round_trip = await fast()
    await cancelled()
    print(f"mcp {importlib.metadata.version('mcp')}: tools listed, ask_file with progress "
          f"(round trip {round_trip * 1000:.0f} ms), ask_directory, ask_text, traces (private to their roots), "
          f"refused paths, cancellation all OK")


anyio.run(main)
