"""rlm_rs.Sandbox: real Python in the real guest, from the installed wheel."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

import rlm_rs
from rlm_rs import Limits, Sandbox


def test_the_installed_package_runs_its_own_guest():
    assert rlm_rs.GUEST is not None and rlm_rs.GUEST.is_file()
    assert "site-packages" in str(rlm_rs.GUEST)
    assert rlm_rs.engine_info()["guest"] == str(rlm_rs.GUEST)


def test_variables_persist_and_output_is_captured():
    sb = Sandbox()
    r = sb.exec("x = 6 * 7\nprint('x is', x)")
    assert r.ok and r.stdout == "x is 42\n" and r.error is None and r.final is None
    assert r.fuel > 0 and r.ms > 0 and r.limit is None
    r = sb.exec("import sys\nprint(x + 1)\nprint('warn', file=sys.stderr)")
    assert r.stdout == "43\n" and r.stderr == "warn\n"
    assert sb.steps == 2


@pytest.mark.parametrize(
    "context, code, expected",
    [
        ("The key is 42.", "print(context.split()[-1])", "42.\n"),
        (["doc one", "doc two"], "print(len(context), context[1])", "2 doc two\n"),
        ({"a": [1, 2, {"b": "deep"}]}, "print(context['a'][2]['b'])", "deep\n"),
    ],
)
def test_contexts_of_each_shape(context, code, expected):
    assert Sandbox(context).exec(code).stdout == expected


def test_more_contexts_and_defined_variables():
    sb = Sandbox("first")
    assert sb.add_context(["second"]) == "context_1"
    sb.define("query", {"q": "what?", "n": [1, 2]})
    r = sb.exec("print(context, context_1[0], query['q'], sum(query['n']))")
    assert r.stdout == "first second what? 3\n"
    with pytest.raises(ValueError):
        sb.define("not a name", 1)
    with pytest.raises(TypeError):
        sb.define("s", {1, 2})


def test_final_answers():
    sb = Sandbox()
    assert sb.exec("FINAL('done')").final == "done"
    assert sb.exec("result = [1, 2]\nFINAL_VAR('result')").final == "[1, 2]"
    assert sb.exec("SUBMIT(answer='yes')").final == "yes"


def test_exceptions_are_reported_not_raised():
    sb = Sandbox()
    sb.exec("a = 1")
    r = sb.exec("print('before')\n1 / 0")
    assert not r.ok and "ZeroDivisionError" in r.error and r.stdout == "before\n"
    assert sb.exec("print(a)").stdout == "1\n"


def test_fuel_limit_stops_a_runaway_step_and_restores_the_repl():
    sb = Sandbox(limits=Limits(cpu_seconds=0.05))
    sb.exec("kept = 'yes'")
    r = sb.exec("while True:\n    pass")
    assert r.limit == "fuel" and r.restored and not r.reset
    assert "fuel" in r.error and r.recovery_ms >= 0
    assert sb.exec("print(kept)").stdout == "yes\n"


def test_memory_limit():
    sb = Sandbox(limits=Limits(memory_bytes=64 << 20, max_memory_bytes=64 << 20))
    r = sb.exec("big = bytearray(200 << 20)")
    assert not r.ok
    assert sb.exec("print('alive')").stdout == "alive\n"


def test_output_limit():
    sb = Sandbox(limits=Limits(max_output_bytes=1000))
    r = sb.exec("print('x' * 5000)")
    assert len(r.stdout) <= 1000 and r.stdout_dropped > 0


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError):
        Limits(memory_bytes=1 << 20)
    with pytest.raises(ValueError):
        Limits(step_timeout=0)
    assert Limits().fuel_per_step > 0 and Limits(step_timeout=2.5).step_timeout == 2.5


def test_llm_query_calls_the_python_handler():
    seen = []

    def handler(prompt, model=None):
        seen.append((prompt, model))
        return prompt.upper()

    sb = Sandbox(llm_query=handler)
    r = sb.exec("print(llm_query('hi'))\nprint(llm_batch(['a', 'b']))\nprint(llm_query('m', model='small'))")
    assert r.stdout == "HI\n['A', 'B']\nM\n"
    assert ("hi", None) in seen and ("m", "small") in seen
    # rlm_query falls back to the llm_query handler
    assert sb.exec("print(rlm_query('deep'))").stdout == "DEEP\n"


def test_a_failing_handler_is_an_error_string_for_the_model():
    def handler(prompt, model=None):
        raise RuntimeError("model is down")

    r = Sandbox(llm_query=handler).exec("print(llm_query('x'))")
    assert r.ok and r.stdout.startswith("Error:") and "model is down" in r.stdout


def test_without_a_handler_llm_query_says_so():
    r = Sandbox().exec("print(llm_query('x'))")
    assert r.stdout.startswith("Error:") and "llm_query" in r.stdout


def test_seed_makes_randomness_repeatable():
    seed = bytes(range(32))
    code = "import random, os\nprint(random.random(), os.urandom(4).hex())"
    a = Sandbox(seed=seed).exec(code).stdout
    assert a == Sandbox(seed=seed).exec(code).stdout
    assert Sandbox(seed=seed).seed == seed
    with pytest.raises(ValueError):
        Sandbox(seed=b"short")


def test_the_gil_is_released_while_a_step_runs():
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    sb = Sandbox()
    t = threading.Thread(target=count)
    t.start()
    time.sleep(0.05)
    before = len(ticks)
    r = sb.exec("n = 0\nfor i in range(3_000_000):\n    n += i")
    during = len(ticks) - before
    stop.set()
    t.join()
    assert r.ok and r.ms > 100, "the step should be long enough to observe"
    assert during > 10, f"the other thread ran only {during} times during the step"


def test_ctrl_c_stops_a_step_and_keeps_the_repl():
    sb = Sandbox()
    sb.exec("kept = 41")
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sb.exec("while True:\n    kept = kept")
    assert time.monotonic() - started < 10
    r = sb.exec("print(kept + 1)")
    assert r.stdout == "42\n", r


def test_the_type_stubs_cover_the_native_module():
    import ast
    from pathlib import Path

    stub = Path(rlm_rs.__file__).with_name("_native.pyi")
    tree = ast.parse(stub.read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    stubbed |= {t.target.id for t in tree.body if isinstance(t, ast.AnnAssign)}
    public = {n for n in dir(rlm_rs._native) if not n.startswith("_")}
    assert public <= stubbed, public - stubbed
    for cls in ("Sandbox", "RLM", "StepResult", "RunResult", "Limits"):
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
        names = {m.name for m in node.body if isinstance(m, ast.FunctionDef)}
        names |= {m.target.id for m in node.body if isinstance(m, ast.AnnAssign)}
        members = {n for n in dir(getattr(rlm_rs._native, cls)) if not n.startswith("_")}
        assert members <= names, (cls, members - names)


def test_a_cycle_through_a_handler_is_collected():
    import gc
    import weakref

    class Owner:
        def __init__(self):
            self.sb = Sandbox(llm_query=self.answer)

        def answer(self, prompt, model=None):
            return prompt

    owner = Owner()
    assert owner.sb.exec("print(llm_query('echo'))").stdout == "echo\n"
    ref = weakref.ref(owner)
    del owner
    gc.collect()
    assert ref() is None


def test_custom_tools_are_functions_of_the_repl():
    calls = []

    def get_weather(city: str, unit: str = "C") -> dict:
        """The weather in a city."""
        calls.append((city, unit))
        return {"city": city, "temp": 21, "unit": unit}

    def fail(reason: str):
        raise ValueError(reason)

    sb = Sandbox(tools=[get_weather, ("broken", fail), rlm_rs.tool(lambda: [1, 2], name="pair", description="Two numbers.")])
    r = sb.exec("w = get_weather('Paris')\nprint(w['temp'], w['unit'], get_weather(city='Oslo', unit='F')['unit'], pair())")
    assert r.stdout == "21 C F [1, 2]\n", r
    assert calls == [("Paris", "C"), ("Oslo", "F")]
    r = sb.exec("try:\n    broken('nope')\nexcept ToolError as e:\n    print('caught', e)")
    assert "caught" in r.stdout and "nope" in r.stdout
    with pytest.raises(ValueError, match="tool"):
        Sandbox(tools=[("print", get_weather)])
    spec = rlm_rs.tool(get_weather)
    assert spec[0] == "get_weather" and spec[1] == "The weather in a city."
    assert spec[2] == {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}
