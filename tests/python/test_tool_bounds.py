"""Python custom tools at the host's edge: integers of any size cross exactly, both ways."""

from __future__ import annotations

import pytest

import rlm_rs
from rlm_rs import Sandbox


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


@pytest.mark.xfail(
    strict=True,
    reason="an RLM run's tools pass through rlm's event-recording wrapper (crates/rlm/src/tree.rs, "
    "node_tools), a JSON-value handler: integers beyond 64 bits become floats there until it "
    "wraps the tool's text handler (Tool::with_text_handler + call_text)",
)
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
