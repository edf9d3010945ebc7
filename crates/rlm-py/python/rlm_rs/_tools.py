"""Custom tools: Python functions that model code in the sandbox calls like ordinary functions.

:func:`tool` describes one (name, description, JSON schema of the parameters); ``tools=[...]``
of :class:`rlm_rs.Sandbox` accepts plain callables, ``(name, callable)`` pairs and
:func:`tool` specs. Arguments arrive as keyword arguments (model code may pass them by position,
in the order of the parameters); results go back as JSON, so return str, numbers, bools,
``None``, lists and dicts (integers of any size cross exactly, both ways). An exception becomes a
``ToolError`` in model code.

Tools run on a small pool of threads shared by the process (16; :func:`rlm_rs.set_tool_threads`).
A call ends with its step: when the step is given up (its deadline, Ctrl-C), the tool's result is
no longer awaited and :class:`rlm_rs.CallAbandoned` is raised in it if it is running Python code
(a tool blocked in C, such as ``time.sleep`` or a socket read, gets it when that call returns).
While every thread is held by such given-up calls, further tool calls fail at once with a
``ToolError`` that says so; the sandbox, ``search`` and model calls are not affected.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Union, get_type_hints

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _json_type(annotation: Any) -> Optional[str]:
    origin = getattr(annotation, "__origin__", None)
    return _JSON_TYPES.get(origin or annotation)


def tool(
    function: Callable[..., Any],
    name: Optional[str] = None,
    description: Optional[str] = None,
    parameters: Optional[dict] = None,
) -> tuple[str, str, dict, Callable[..., Any]]:
    """A tool spec for ``tools=[...]``: ``name`` (default: the function's), ``description``
    (default: its docstring) and ``parameters``, a JSON schema (default: from its signature:
    each parameter a property, typed from its annotation, required unless it has a default)."""
    name = name or getattr(function, "__name__", None)
    if not name:
        raise ValueError(f"{function!r} has no __name__: give the tool a name")
    if description is None:
        description = inspect.getdoc(function) or ""
    if parameters is None:
        parameters = _schema(function)
    return name, description, parameters, function


def _schema(function: Callable[..., Any]) -> dict:
    signature = inspect.signature(function)
    try:
        hints = get_type_hints(function)
    except Exception:  # unresolvable annotations: untyped parameters
        hints = {}
    properties: dict[str, dict] = {}
    required: list[str] = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        prop: dict[str, Any] = {}
        kind = _json_type(hints.get(p.name, p.annotation))
        if kind:
            prop["type"] = kind
        properties[p.name] = prop
        if p.default is p.empty:
            required.append(p.name)
    return {"type": "object", "properties": properties, "required": required}


def spec(item: Union[Callable[..., Any], tuple]) -> tuple[str, str, dict, Callable[..., Any]]:
    """The (name, description, parameters, function) of one entry of ``tools=[...]``."""
    if isinstance(item, tuple):
        if len(item) == 4:
            return item  # already a spec
        if len(item) == 2:
            name, function = item
            return tool(function, name=name)
        raise TypeError("a tool is a callable, a (name, callable) pair or rlm_rs.tool(...)")
    if not callable(item):
        raise TypeError(f"tools must be callables, not {type(item).__name__}")
    return tool(item)
