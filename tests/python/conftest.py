"""Fixtures of the rlm_rs tests: a scripted OpenAI-compatible model server over real HTTP."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest


class ScriptedServer:
    """An OpenAI Chat Completions server whose replies come from a Python function of the
    request's messages. Records every request; `delay` slows every reply."""

    def __init__(self, reply: Callable[[list], str], delay: float = 0.0):
        self.reply = reply
        self.delay = delay
        self.requests: list = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if server.delay:
                    time.sleep(server.delay)
                text = server.reply(body["messages"])
                payload = json.dumps({
                    "id": "scripted",
                    "object": "chat.completion",
                    "model": body.get("model", "scripted"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                }).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def scripted():
    """`scripted(reply, delay=0)` starts a server answering with `reply(messages)`."""
    servers = []

    def start(reply, delay=0.0):
        s = ScriptedServer(reply, delay)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def root_turns(messages: list) -> int:
    """How many times the root model has replied so far in this conversation."""
    return sum(1 for m in messages if m["role"] == "assistant")


def is_root(messages: list) -> bool:
    """Whether a request is the root model's (it has the REPL system prompt)."""
    return any(m["role"] == "system" and "REPL" in m["content"] for m in messages)
