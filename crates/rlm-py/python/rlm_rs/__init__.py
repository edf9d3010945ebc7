"""rlm_rs: Recursive Language Models with a fast, sandboxed Python REPL, from Rust.

The package is the Python face of `rlm` (a Rust workspace): model-written Python runs in a
CPython interpreter compiled to WebAssembly, inside wasmtime, with fuel, memory and time limits
and no files, network or processes. It offers:

- :class:`Sandbox`: the REPL on its own (no model needed), with a Python ``llm_query`` handler;
- :class:`RLM`: the RLM engine (root and sub-model, depth, budgets, events, traces), with
  :meth:`RLM.run` and ``await`` :meth:`RLM.arun`;
- :class:`RecursiveLanguageModel`: the original Python project's API;
- :class:`rlm_rs.dspy.Interpreter`: a DSPy ``CodeInterpreter`` for ``dspy.RLM``.

The import name is ``rlm_rs`` (distribution ``rlm-rs``) so that it never collides with the
official ``rlms`` package, which installs a module named ``rlm``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Optional

from . import _native
from ._tools import tool
from ._native import (
    WASMTIME_VERSION,
    CallAbandoned,
    CancelToken,
    Cancelled,
    ConfigError,
    Limits,
    RlmError,
    RunResult,
    Sandbox,
    SandboxError,
    StepResult,
    engine_info,
    resolve_model,
    set_handler_threads,
    set_tool_threads,
)

__all__ = [
    "CallAbandoned",
    "CancelToken",
    "Cancelled",
    "ConfigError",
    "GUEST",
    "Limits",
    "RLM",
    "RecursiveLanguageModel",
    "RlmError",
    "RunResult",
    "Sandbox",
    "SandboxError",
    "StepResult",
    "WASMTIME_VERSION",
    "engine_info",
    "resolve_model",
    "set_handler_threads",
    "set_tool_threads",
    "tool",
]

#: The sandbox guest (CPython compiled to a WebAssembly component) shipped in the wheel, or
#: ``None`` when this package runs from a source tree without it (rlm's usual search then
#: applies: ``RLM_GUEST_WASM``, then the workspace's ``target/guest/``). Its compiled form is
#: cached in rlm's cache directory (``RLM_CACHE_DIR``, else ``~/.cache/rlm``).
GUEST: Optional[Path] = Path(__file__).with_name("_guest") / "rlm_guest.wasm"
if GUEST.is_file():
    _native.set_default_guest(str(GUEST))
else:
    GUEST = None


class RLM(_native.RLM):
    """A Recursive Language Model (see the native ``RLM`` for every setting).

    ``RLM(model, sub_model=..., max_iterations=..., max_depth=..., budget_usd=..., ...)``;
    :meth:`run` blocks (GIL released), :meth:`arun` is its ``asyncio`` form.
    """

    async def arun(self, context: Any, query: str) -> RunResult:
        """:meth:`run` for ``asyncio``: the run goes on a worker thread; cancelling the awaiting
        task cancels the run. ``on_event`` is then called on that worker thread."""
        import asyncio  # here, not at import: asyncio alone would triple `import rlm_rs`

        token = CancelToken()
        loop = asyncio.get_running_loop()
        call = functools.partial(self.run, context, query, cancel=token)
        future = loop.run_in_executor(None, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            token.cancel()
            # Wait for the run to let go of its resources, then report the cancellation.
            try:
                await future
            except Cancelled:
                pass
            raise


def _query_of(messages: Any) -> str:
    """The question of a chat: the last user message, with earlier turns as its preface."""
    if isinstance(messages, str):
        return messages
    turns = [(m.get("role", "user"), str(m.get("content", ""))) for m in messages]
    users = [i for i, (role, _) in enumerate(turns) if role == "user"]
    if not users:
        raise ValueError("messages has no user message: the last one is the question")
    last = users[-1]
    earlier = [f"{role}: {text}" for role, text in turns[:last] if role != "system"]
    system = [text for role, text in turns[:last] if role == "system"]
    parts = []
    if system:
        parts.append("Instructions: " + "\n".join(system))
    if earlier:
        parts.append("Conversation so far:\n" + "\n".join(earlier))
    parts.append(turns[last][1])
    return "\n\n".join(parts)


class RecursiveLanguageModel:
    """The original Python RLM's API over this engine.

    ``RecursiveLanguageModel("gpt-4").run(context=..., messages=[{"role": "user", "content":
    ...}], max_chunk_size=..., max_output_chars=..., max_steps=...)`` returns the answer (str).

    - ``model``: a ``provider/model`` id, or a bare name: ``gpt-*``/``o1``/``o3``/``o4`` resolve
      to OpenAI, ``claude*`` to Anthropic, ``gemini*`` to Gemini (``GOOGLE_API_KEY``), anything
      else to the OpenAI-compatible server of ``base_url``/``RLM_BASE_URL``
      (see :func:`resolve_model`).
    - ``messages``: the last user message is the question; earlier turns are given as its
      preface.
    - ``max_chunk_size`` is the sub-model's context in tokens (what one sub-call may read),
      ``max_output_chars`` the characters of each step's output the model sees, ``max_steps``
      the iterations.

    Other keyword arguments (``sub_model``, ``base_url``, ``api_key``, ``max_depth``,
    ``budget_usd``, ``on_event``, ``trace``, ...) go to :class:`RLM`. The full result of the
    last run is kept in :attr:`last_result`.
    """

    def __init__(self, model: Optional[str] = None, **options: Any) -> None:
        self.model = model
        self.options = options
        self.last_result: Optional[RunResult] = None

    def run(
        self,
        context: Any,
        messages: Any,
        max_chunk_size: Optional[int] = None,
        max_output_chars: Optional[int] = None,
        max_steps: Optional[int] = None,
    ) -> str:
        """Answer the last user message of ``messages`` about ``context``; returns the answer
        ("" when the run ended without one; :attr:`last_result` says why)."""
        options = dict(self.options)
        if max_chunk_size is not None:
            options["sub_model_context_tokens"] = max_chunk_size
        if max_output_chars is not None:
            options["max_output_chars"] = max_output_chars
        if max_steps is not None:
            options["max_iterations"] = max_steps
        rlm = RLM(self.model, **options)
        self.last_result = rlm.run(context, _query_of(messages))
        return self.last_result.answer or ""

    def __call__(self, context: Any, messages: Any, **kwargs: Any) -> str:
        return self.run(context, messages, **kwargs)
