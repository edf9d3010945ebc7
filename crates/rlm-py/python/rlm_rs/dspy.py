"""A DSPy code interpreter on rlm's sandbox: ``dspy.RLM(..., interpreter_factory=Interpreter)``.

It implements DSPy's ``CodeInterpreter`` protocol (``tools``, ``start``, ``execute``,
``shutdown``) over :class:`rlm_rs.Sandbox`: each forward pass gets a fresh CPython REPL in
wasmtime (about a millisecond to start once the guest is compiled, against seconds for DSPy's
Deno/Pyodide default), with fuel, memory and time limits and no files, network or processes.

- ``llm_query(prompt)`` and ``llm_query_batched(prompts)`` in the sandbox call the
  ``llm_query`` tool that ``dspy.RLM`` injects (batches run concurrently on host threads).
- ``SUBMIT(...)`` ends the run: ``SUBMIT(value)`` for one output field, ``SUBMIT(a, b)`` (in
  the order of the output fields) or ``SUBMIT(a=..., b=...)`` for several.
- ``variables`` are bound before each step when they changed (JSON values; strings, lists and
  dicts over 1 MiB stay on the host as lazy contexts).
- Errors in the code raise ``CodeExecutionError`` (a step stopped by a limit too; the REPL is
  restored to its state before the step), invalid syntax ``SyntaxError``.

- Other tools (``dspy.RLM(tools=[...])``) become functions of the REPL that call the host
  (by keyword or in the order of their parameters); a tool's exception reaches model code as a
  ``ToolError``, a result that is not JSON as its ``str``. The tools are bound when the REPL
  starts (DSPy gives them before its first ``execute``).
- DSPy's sandboxed sub-agents (``import dspy`` in the REPL) are not offered: their bridge
  functions have names the sandbox keeps for itself (``__dspy_*__``), so ``dspy.RLM`` runs
  without them (it logs that sub-agents are unavailable).
"""

from __future__ import annotations

import ast
import functools
import json
from typing import Any, Callable, Optional

from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreterError, FinalOutput

from . import Limits, Sandbox, SandboxError

__all__ = ["Interpreter"]

#: Values larger than this (as JSON) are attached as lazy contexts rather than copied in.
LARGE_VALUE_BYTES = 1 << 20

_COMPILE_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def _jsonable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with a result that is not JSON given as its str (as DSPy's own interpreter does)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            return str(result)
        return result

    return call


class Interpreter:
    """DSPy ``CodeInterpreter`` running code in rlm's wasmtime sandbox."""

    #: What ``dspy.RLM`` tells the model about this runtime (read from the factory).
    execution_instructions = (
        "Python runs in CPython compiled to WebAssembly (rlm's sandbox): state persists across "
        "executions; the standard library is available (re, json, collections, math, ...), but "
        "there are no files, network, subprocesses or native extensions, and each step has CPU, "
        "memory and time limits."
    )

    def __init__(
        self,
        tools: Optional[dict[str, Callable[..., Any]]] = None,
        output_fields: Optional[list[dict]] = None,
        limits: Optional[Limits] = None,
        guest: Optional[str] = None,
        cache_dir: Optional[str] = None,
    ) -> None:
        self.tools: dict[str, Callable[..., Any]] = dict(tools or {})
        self.output_fields = output_fields
        self._limits = limits
        self._guest = guest
        self._cache_dir = cache_dir
        self._sandbox: Optional[Sandbox] = None
        self._bound: dict[str, Any] = {}
        self._ended = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the REPL (idempotent; ``execute`` calls it when needed)."""
        if self._ended:
            raise CodeInterpreterError("this interpreter was shut down; create a new one")
        if self._sandbox is None:
            kwargs: dict[str, Any] = {"llm_query": self._llm_query, "tools": self._host_tools()}
            if self._limits is not None:
                kwargs["limits"] = self._limits
            if self._guest is not None:
                kwargs["guest"] = self._guest
            if self._cache_dir is not None:
                kwargs["cache_dir"] = self._cache_dir
            try:
                self._sandbox = Sandbox(**kwargs)
            except Exception as e:  # the sandbox could not start: not the code's fault
                raise CodeInterpreterError(f"the rlm sandbox could not start: {e}") from e

    def shutdown(self) -> None:
        """Drop the REPL; the interpreter cannot be used afterwards."""
        self._sandbox = None
        self._bound.clear()
        self._ended = True

    def __enter__(self) -> "Interpreter":
        return self

    def __exit__(self, *_: Any) -> None:
        self.shutdown()

    def __call__(self, code: str, variables: Optional[dict[str, Any]] = None) -> Any:
        return self.execute(code, variables)

    # -- host calls --------------------------------------------------------------------------

    def _host_tools(self) -> list[tuple[str, Callable[..., Any]]]:
        """The tools the REPL binds: all but the built-in model calls (the sandbox has those)
        and names it keeps for itself (leading underscore)."""
        return [
            (name, _jsonable(fn))
            for name, fn in self.tools.items()
            if name not in ("llm_query", "llm_query_batched") and not name.startswith("_")
        ]

    def _llm_query(self, prompt: str, model: Optional[str] = None) -> str:
        tool = self.tools.get("llm_query")
        if tool is None:
            raise RuntimeError("llm_query is not available: no llm_query tool was given")
        return str(tool(prompt))

    # -- execution ---------------------------------------------------------------------------

    def _bind(self, variables: dict[str, Any]) -> None:
        assert self._sandbox is not None
        for name, value in variables.items():
            if not name.isidentifier():
                raise CodeInterpreterError(f"invalid variable name: {name!r}")
            if name in self._bound and self._bound[name] is value:
                continue
            try:
                size = len(json.dumps(value)) if isinstance(value, (str, list, dict)) else 0
            except (TypeError, ValueError) as e:
                raise CodeInterpreterError(f"variable {name!r} is not JSON: {e}") from e
            try:
                if size > LARGE_VALUE_BYTES:
                    slot = self._sandbox.add_context(value)
                    if slot != name:
                        step = self._sandbox.exec(f"{name} = {slot}")
                        if step.error:
                            raise CodeInterpreterError(f"binding {name!r} failed: {step.error}")
                elif name.startswith("__"):
                    # The sandbox's define() keeps dunder names for itself; DSPy's facade binds
                    # one (its host token): assign it in a step instead.
                    literal = repr(json.dumps(value))
                    step = self._sandbox.exec(f"{name} = __import__('json').loads({literal})")
                    if step.error:
                        raise CodeInterpreterError(f"binding {name!r} failed: {step.error}")
                else:
                    self._sandbox.define(name, value)
            except (TypeError, SandboxError) as e:
                raise CodeInterpreterError(f"variable {name!r} cannot enter the sandbox: {e}") from e
            self._bound[name] = value

    def _final(self, answer: str) -> dict[str, Any]:
        names = [f["name"] for f in (self.output_fields or [])] or ["answer"]
        if len(names) == 1:
            return {names[0]: answer}
        try:
            value = json.loads(answer)
        except ValueError:
            return {names[0]: answer}
        if isinstance(value, list) and len(value) == len(names):
            return dict(zip(names, value))
        if isinstance(value, dict):
            return value
        return {names[0]: answer}

    def execute(self, code: str, variables: Optional[dict[str, Any]] = None) -> Any:
        """Run ``code``; returns ``FinalOutput`` after ``SUBMIT``, else the step's output (str)
        or ``None`` when it printed nothing."""
        self.start()
        assert self._sandbox is not None
        # Syntax is checked on the host (the guest is CPython too), to raise DSPy's SyntaxError.
        compile(code, "<step>", "exec", flags=_COMPILE_FLAGS, dont_inherit=True)
        self._bind(variables or {})
        step = self._sandbox.exec(code)
        if step.final is not None:
            return FinalOutput(self._final(step.final))
        if step.error is not None:
            output = (step.stdout + "\n" if step.stdout else "") + step.error
            raise CodeExecutionError(output)
        output = step.stdout + (step.stderr if step.stderr else "")
        return output if output else None
