"""Type stubs of rlm_rs._native, the Rust half of rlm_rs (see the package docstring)."""

from os import PathLike
from typing import Any, Callable, Iterable, Optional, Union

_Path = Union[str, PathLike[str]]
_Context = Union[str, list[Any], dict[str, Any]]

WASMTIME_VERSION: str

class RlmError(Exception):
    """Base class of rlm_rs errors."""

class SandboxError(RlmError):
    """The sandbox could not start or continue."""

class ConfigError(RlmError):
    """An unusable setting: a model id, a key, a limit or a budget."""

class Cancelled(RlmError):
    """The run was cancelled (CancelToken.cancel(), or its asyncio task was cancelled)."""

class CallAbandoned(BaseException):
    """Raised inside a Python tool whose step was given up (its deadline passed, or it was
    stopped): nothing waits for its result. Let it propagate so the tool's thread is free."""

class Limits:
    """The limits every step of a sandbox runs under; each has a safe default."""

    def __init__(
        self,
        *,
        fuel_per_step: Optional[int] = None,
        cpu_seconds: Optional[float] = None,
        memory_bytes: Optional[int] = None,
        max_memory_bytes: Optional[int] = None,
        step_timeout: Optional[float] = None,
        max_output_bytes: Optional[int] = None,
        max_host_calls_per_step: Optional[int] = None,
        max_search_results: Optional[int] = None,
        max_journal_bytes: Optional[int] = None,
    ) -> None: ...
    @property
    def fuel_per_step(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...
    @property
    def max_memory_bytes(self) -> int: ...
    @property
    def step_timeout(self) -> float:
        """Seconds."""
    @property
    def max_output_bytes(self) -> int: ...
    @property
    def max_host_calls_per_step(self) -> int: ...
    @property
    def max_search_results(self) -> int: ...
    @property
    def max_journal_bytes(self) -> int: ...

class StepResult:
    """What one step produced."""

    stdout: str
    stderr: str
    error: Optional[str]
    """The exception as a traceback, or the limit that stopped the step."""
    final: Optional[str]
    """The answer given with FINAL, FINAL_VAR or SUBMIT."""
    fuel: int
    ms: float
    limit: Optional[str]
    """"fuel", "deadline", "stack" or "crash" when a limit stopped the step."""
    host_calls: int
    restored: bool
    reset: bool
    recovery_ms: float
    replayed: int
    """Earlier steps re-run while the REPL was rebuilt (those after its checkpoint)."""
    from_checkpoint: bool
    """The REPL was rebuilt from a checkpoint of its state."""
    checkpoint_ms: float
    """Milliseconds spent saving the REPL's state after the step (0 when not saved)."""
    stdout_dropped: int
    stderr_dropped: int
    @property
    def ok(self) -> bool: ...

class Sandbox:
    """A persistent, sandboxed Python REPL (CPython in wasmtime)."""

    def __init__(
        self,
        context: Optional[_Context] = None,
        *,
        llm_query: Optional[Callable[..., str]] = None,
        rlm_query: Optional[Callable[..., str]] = None,
        tools: Optional[Iterable[Union[Callable[..., Any], tuple]]] = None,
        limits: Optional[Limits] = None,
        seed: Optional[bytes] = None,
        guest: Optional[_Path] = None,
        cache_dir: Optional[_Path] = None,
    ) -> None: ...
    def exec(self, code: str) -> StepResult:
        """Run one step; exceptions and limits are reported in the result, not raised."""
    def define(self, name: str, value: Any) -> None: ...
    def add_context(self, context: _Context) -> str: ...
    @property
    def steps(self) -> int: ...
    @property
    def seed(self) -> bytes: ...
    @property
    def memory_held(self) -> int: ...
    @property
    def limits(self) -> Limits: ...

class CancelToken:
    """Cancels a run from another thread."""

    def __init__(self) -> None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

class RunResult:
    """The outcome of a run."""

    answer: Optional[str]
    stop: str
    """"final", "max_iterations", "budget" or "error"."""
    stop_message: Optional[str]
    iterations: int
    elapsed: float
    """Seconds."""
    @property
    def usage(self) -> dict[str, Any]:
        """{"total": {...}, "by_model": {id: {...}}, "by_role": [{"role", "depth", ...}]}."""
    @property
    def cost_usd(self) -> float: ...
    @property
    def events(self) -> list[dict[str, Any]]: ...

class RLM:
    """A Recursive Language Model."""

    def __init__(
        self,
        model: Optional[str] = None,
        *,
        sub_model: Optional[str] = None,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        max_iterations: Optional[int] = None,
        max_depth: Optional[int] = None,
        max_output_chars: Optional[int] = None,
        sub_model_context_tokens: Optional[int] = None,
        budget_usd: Optional[float] = None,
        budget_tokens: Optional[int] = None,
        budget_sub_calls: Optional[int] = None,
        budget_seconds: Optional[float] = None,
        concurrency: int = 16,
        on_event: Optional[Callable[[dict[str, Any]], Any]] = None,
        tools: Optional[Iterable[Union[Callable[..., Any], tuple]]] = None,
        trace: Optional[_Path] = None,
        limits: Optional[Limits] = None,
        seed: Optional[bytes] = None,
        guest: Optional[_Path] = None,
        cache_dir: Optional[_Path] = None,
    ) -> None: ...
    @property
    def model(self) -> str: ...
    @property
    def sub_model(self) -> str: ...
    def run(self, context: _Context, query: str, *, cancel: Optional[CancelToken] = None) -> RunResult: ...

def resolve_model(name: str, base_url: Optional[str] = None) -> str:
    """The provider/model id of a model name (a bare name resolves by its prefix)."""

def engine_info(guest: Optional[_Path] = None, cache_dir: Optional[_Path] = None) -> dict[str, str]: ...
def set_default_guest(path: Optional[_Path]) -> None: ...
def set_tool_threads(threads: int) -> int:
    """Set how many threads the process runs Python tools on (1 to 1024; default 16); returns
    the size before."""
def set_handler_threads(threads: int) -> int:
    """Set how many threads the process runs a Sandbox's llm_query / rlm_query handlers on (1 to
    1024; default 64); returns the size before."""
