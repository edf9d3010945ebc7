"""Python custom tools at the host's edge: a tool that never returns ends with its step and holds
one of a few threads (the sandbox, search and other sandboxes keep working); a tool looping in
Python is interrupted when its step is given up; integers of any size cross exactly, both ways."""

from __future__ import annotations

import os
import threading
import time

import pytest

import rlm_rs
from rlm_rs import Limits, Sandbox

POOL = 2


def threads() -> int:
    """Threads of this process now."""
    return len(os.listdir("/proc/self/task"))


def wait_for(condition, what: str, seconds: float = 30.0) -> None:
    """Wait until `condition()` holds (a generous bound: behaviour, not timing, is tested)."""
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def small_pool():
    """A pool of POOL tool threads for the test; the size before is restored after."""
    before = rlm_rs.set_tool_threads(POOL)
    yield POOL
    rlm_rs.set_tool_threads(before)


def test_the_pool_size_is_bounded():
    before = rlm_rs.set_tool_threads(3)
    try:
        assert rlm_rs.set_tool_threads(3) == 3
        for bad in (0, 1025):
            with pytest.raises(ValueError, match="between 1 and 1024"):
                rlm_rs.set_tool_threads(bad)
        with pytest.raises(OverflowError):
            rlm_rs.set_tool_threads(-1)
    finally:
        rlm_rs.set_tool_threads(before)
    assert before == 16


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_a_tool_that_never_returns_costs_a_few_threads_and_the_sandbox_goes_on(small_pool):
    release = threading.Event()
    entered = []

    def hang() -> str:
        entered.append(1)
        release.wait()  # blocked in C: nothing can stop it before it is released
        return "late"

    sb = Sandbox(context="alpha beta gamma", tools=[hang], limits=Limits(step_timeout=0.3))
    assert sb.exec("x = 1").error is None
    before = threads()
    try:
        # The first calls take a thread each and end with their step, at its deadline.
        for _ in range(small_pool):
            r = sb.exec("hang()")
            assert r.limit == "deadline" and r.restored, r
        assert len(entered) == small_pool
        # Then every thread is held by a call given up; many times more calls than the pool has
        # threads cost no more threads: the pool's, the one that interrupts given-up calls, and
        # slack for tokio's own (without the pool, every stuck call kept a thread: +38).
        call = "try:\n    hang()\nexcept ToolError as e:\n    print(e)"
        results = [sb.exec(call) for _ in range(3 * (small_pool + 10))]
        assert threads() - before <= small_pool + 1 + 4, (before, threads())
        # They fail at once, saying why, and never reach the tool.
        for r in results:
            assert r.limit is None and r.error is None, r
            assert "threads for Python tool calls are held by earlier calls" in r.stdout, r
            assert "set_tool_threads" in r.stdout
        assert len(entered) == small_pool
        # The REPL, its search and another sandbox's search still work.
        r = sb.exec("print(x, search('beta'))")
        assert r.error is None and r.stdout.startswith("1 "), r
        other = Sandbox(context="one two three")
        r = other.exec("print(search('two'))")
        assert r.error is None and "two" in r.stdout, r
    finally:
        release.set()
    # Once the stuck calls return, their threads serve calls again.
    wait_for(lambda: sb.exec("print(hang())").stdout == "late\n", "a free tool thread")
    wait_for(lambda: threads() <= before + 4, "the pool's threads to end")


def test_a_tool_looping_in_python_is_interrupted_when_its_step_is_given_up(small_pool):
    stop = threading.Event()
    outcome: list[str] = []

    def spin() -> str:
        try:
            while not stop.is_set():
                pass
        except BaseException as e:
            outcome.append(type(e).__name__)
            raise
        outcome.append("returned")
        return "stopped"

    sb = Sandbox(tools=[spin], limits=Limits(step_timeout=0.3))
    try:
        # More calls than the pool has threads: each call's thread is freed by the interruption.
        for n in range(1, 2 * small_pool + 2):
            r = sb.exec("spin()")
            assert r.limit == "deadline", r
            wait_for(lambda: len(outcome) == n, "the tool to be interrupted")
        assert set(outcome) == {"CallAbandoned"}
        assert issubclass(rlm_rs.CallAbandoned, BaseException)
        assert not issubclass(rlm_rs.CallAbandoned, Exception)
    finally:
        stop.set()
    # The interruption does not leak into the thread's next call.
    assert sb.exec("print(spin())").stdout == "stopped\n"
    assert outcome[-1] == "returned"


BIG = [
    "2**53 + 1",
    "-(2**53 + 1)",
    "2**63",
    "2**64 + 1",
    "-(2**70)",
    "10**400 + 7",
    "[2**53 + 1, {'n': -(2**70), 'm': [2**64 + 1]}]",
]


@pytest.mark.parametrize("expr", BIG)
def test_big_integers_cross_the_tool_boundary_exactly(expr):
    value = eval(expr)
    seen = []

    def echo(x):
        seen.append(x)
        return {"back": x, "made": value}

    sb = Sandbox(tools=[echo])
    code = (
        f"v = {expr}\n"
        "r = echo(v)\n"
        "print(r['back'] == v, repr(r['back']) == repr(v), r['made'] == v, repr(r['made']) == repr(v))"
    )
    r = sb.exec(code)
    assert r.error is None, r
    # Model code to the tool: exact, and ints (not floats).
    assert seen == [value] and repr(seen[0]) == repr(value)
    # The tool to model code, what it was given and what it made: exact.
    assert r.stdout == "True True True True\n", r


def test_what_is_not_json_is_a_tool_error():
    sb = Sandbox(tools=[("nan", lambda: float("nan")), ("a_set", lambda: {1})])
    for name in ("nan", "a_set"):
        r = sb.exec(f"try:\n    {name}()\nexcept ToolError as e:\n    print(e)")
        assert r.error is None and "not plain JSON" in r.stdout, r


def test_big_integers_cross_the_tool_boundary_of_an_rlm_run_exactly(scripted):
    from conftest import root_turns

    seen = []

    def echo(x):
        seen.append(x)
        return {"back": x, "made": -(2**70)}

    def reply(messages):
        if root_turns(messages) == 0:
            return (
                "```repl\nv = [2**64 + 1, 10**400 + 7]\nr = echo(v)\n"
                "ok = str(r == {'back': v, 'made': -(2**70)})\n```"
            )
        return "FINAL_VAR(ok)"

    server = scripted(reply)
    r = rlm_rs.RLM("compat/scripted", base_url=server.url, tools=[echo]).run("ctx", "q")
    assert seen == [[2**64 + 1, 10**400 + 7]] and repr(seen[0][0]) == repr(2**64 + 1)
    assert r.answer == "True", r


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_a_model_handler_that_never_returns_costs_a_few_threads_and_the_sandbox_goes_on():
    # The llm_query handler of a Sandbox runs on a pool of its own, as tools do.
    before_size = rlm_rs.set_handler_threads(POOL)
    release = threading.Event()
    entered = []

    def stuck(prompt: str) -> str:
        entered.append(prompt)
        release.wait()
        return "late"

    try:
        sb = Sandbox(context="alpha beta", llm_query=stuck, limits=Limits(step_timeout=0.3))
        assert sb.exec("x = 1").error is None
        before = threads()
        for _ in range(POOL):
            r = sb.exec("llm_query('q')")
            assert r.limit == "deadline" and r.restored, r
        # A batch of many prompts and many more calls cost no more threads.
        results = [sb.exec("print(llm_batch(['a'] * 20)[0])") for _ in range(10)]
        assert threads() - before <= POOL + 1 + 4, (before, threads())
        for r in results:
            assert r.limit is None and r.error is None, r
            assert "threads for Python model handler calls are held" in r.stdout, r
            assert "set_handler_threads" in r.stdout
        assert len(entered) == POOL
        r = sb.exec("print(x, search('beta'))")
        assert r.error is None and r.stdout.startswith("1 "), r
    finally:
        release.set()
        rlm_rs.set_handler_threads(before_size)
    wait_for(lambda: sb.exec("print(llm_query('q'))").stdout == "late\n", "a free handler thread")
    assert rlm_rs.set_handler_threads(64) == 64
