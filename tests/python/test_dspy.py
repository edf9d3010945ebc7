"""rlm_rs.dspy.Interpreter under dspy.RLM, driven by DSPy's own scripted LM (DummyLM)."""

from __future__ import annotations

import pytest

dspy = pytest.importorskip("dspy")

from dspy.primitives.code_interpreter import (  # noqa: E402
    CodeExecutionError,
    CodeInterpreter,
    FinalOutput,
)
from dspy.utils import DummyLM  # noqa: E402

from rlm_rs import Limits  # noqa: E402
from rlm_rs.dspy import Interpreter  # noqa: E402


def test_it_is_a_dspy_code_interpreter():
    assert isinstance(Interpreter(), CodeInterpreter)
    assert "WebAssembly" in Interpreter.execution_instructions


def test_execute_keeps_state_and_reports_errors():
    with Interpreter() as it:
        assert it.execute("x = 2") is None
        assert it.execute("print(x * 21)") == "42\n"
        assert it.execute("print(y + 1)", variables={"y": 1}) == "2\n"
        with pytest.raises(SyntaxError):
            it.execute("def broken(:")
        with pytest.raises(CodeExecutionError, match="ZeroDivisionError"):
            it.execute("print('partial')\n1 / 0")
        assert it.execute("print(x)") == "2\n"


def test_a_limit_is_a_recoverable_error():
    with Interpreter(limits=Limits(cpu_seconds=0.05)) as it:
        it.execute("kept = 1")
        with pytest.raises(CodeExecutionError, match="fuel"):
            it.execute("while True:\n    pass")
        assert it.execute("print(kept)") == "1\n"


def test_submit_maps_onto_the_output_fields():
    it = Interpreter(output_fields=[{"name": "answer"}, {"name": "confidence", "type": "int"}])
    assert it.execute("SUBMIT('yes', 3)") == FinalOutput({"answer": "yes", "confidence": 3})
    assert it.execute("SUBMIT(answer='no', confidence=1)") == FinalOutput({"answer": "no", "confidence": 1})
    one = Interpreter(output_fields=[{"name": "result"}])
    assert one.execute("SUBMIT(result='only')") == FinalOutput({"result": "only"})
    it.shutdown()
    one.shutdown()


def test_large_variables_stay_on_the_host():
    big = "line of text\n" * 200_000  # 2.6 MB
    with Interpreter() as it:
        assert it.execute("print(len(doc), doc.count('line'))", variables={"doc": big}) == "2600000 200000\n"
        # the same object is not sent again
        assert it.execute("print(doc[:4])", variables={"doc": big}) == "line\n"


def test_dspy_rlm_runs_on_it():
    lm = DummyLM([
        {"reasoning": "Look at the data.",
         "code": "```python\nprint(len(context))\nsub = llm_query('summarise: ' + context[:11])\nprint(sub)\n```"},
        {"reasoning": "Answer from what I saw.",
         "code": "```python\nSUBMIT(answer=f'{len(context)} chars, sub-LM said ' + sub.split()[-1])\n```"},
    ])
    sub_lm = DummyLM([{"response": "greeting"}])
    made = []

    def factory():
        made.append(Interpreter())
        return made[-1]

    factory.execution_instructions = Interpreter.execution_instructions
    with dspy.context(lm=lm):
        rlm = dspy.RLM("context, query -> answer", max_iters=4, sub_lm=sub_lm, interpreter_factory=factory)
        pred = rlm(context="hello world " * 10, query="What is it?")
    assert pred.answer == "120 chars, sub-LM said greeting"
    assert [step["output"].splitlines()[0] for step in pred.trajectory[:1]] == ["120"]
    assert len(made) == 1 and made[0]._ended, "dspy.RLM shuts its interpreter down"


def test_dspy_rlm_sees_code_errors_and_goes_on():
    lm = DummyLM([
        {"reasoning": "Try.", "code": "```python\nprint(undefined_name)\n```"},
        {"reasoning": "Fix.", "code": "```python\nSUBMIT(answer=query.upper())\n```"},
    ])
    with dspy.context(lm=lm):
        rlm = dspy.RLM("query -> answer", max_iters=3, interpreter_factory=Interpreter)
        pred = rlm(query="shout")
    assert pred.answer == "SHOUT"
    assert "NameError" in pred.trajectory[0]["output"]


def test_an_interpreter_left_without_shutdown_is_collected():
    import gc
    import weakref

    it = Interpreter()
    it.execute("x = 1")
    ref = weakref.ref(it)
    del it
    gc.collect()
    assert ref() is None, "the sandbox's handler must not keep its interpreter alive"


def test_dspy_tools_are_callable_from_model_code():
    def lookup(key: str) -> str:
        """Look a key up in the host's table."""
        return {"alpha": "first", "beta": "second"}[key]

    lm = DummyLM([
        {"reasoning": "Use the tool.", "code": "```python\nfound = lookup('beta')\nprint(found)\n```"},
        {"reasoning": "Done.", "code": "```python\nSUBMIT(answer=found)\n```"},
    ])
    with dspy.context(lm=lm):
        rlm = dspy.RLM("query -> answer", max_iters=3, tools=[lookup], interpreter_factory=Interpreter)
        pred = rlm(query="what is beta?")
    assert pred.answer == "second"
    assert pred.trajectory[0]["output"].strip() == "second"
