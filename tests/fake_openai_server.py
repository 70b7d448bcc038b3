"""A scripted OpenAI-compatible server for tests: real HTTP on a free local port.

Each test queues replies (``server.reply(...)``); every POST to /v1/chat/completions
takes the next one, and the request (path, headers, parsed JSON) is recorded in
``server.requests``. A reply can be a normal completion, a streamed one (SSE), an HTTP
error, a raw (malformed) body, raw stream lines, or any of these after a delay.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    content: str | None = None  # the completion text
    status: int = 200
    delay: float = 0.0  # seconds before anything is sent
    body: bytes | None = None  # raw body instead of a JSON completion
    stream: bool | None = None  # None: stream when the request asked for it
    tokens: list[str] | None = None  # stream pieces (default: content split into small pieces)
    raw_lines: list[bytes] | None = None  # raw SSE lines instead of well-formed chunks
    token_delay: float = 0.0
    headers: dict = field(default_factory=dict)


def split_tokens(text: str, size: int = 3) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


class FakeOpenAI:
    def __init__(self, host: str = "127.0.0.1"):
        self.replies: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    parsed = json.loads(raw.decode("utf-8"))
                except ValueError:
                    parsed = None
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers.items()),
                                          "json": parsed, "raw": raw})
                    reply = fake.replies.popleft() if fake.replies else Reply(status=500, body=b'{"error":"no reply scripted"}')
                try:
                    fake._serve(self, reply, parsed or {})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- scripting
    def reply(self, content: str | None = None, **kw) -> "FakeOpenAI":
        self.replies.append(Reply(content=content, **kw))
        return self

    @property
    def last(self) -> dict:
        return self.requests[-1]

    # -- lifecycle
    def start(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # wakes handlers sleeping in a delay
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- serving
    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server is stopping; False when it is."""
        return not self.stopping.wait(seconds) if seconds > 0 else True

    def _serve(self, h: BaseHTTPRequestHandler, reply: Reply, request: dict) -> None:
        if not self._sleep(reply.delay):
            return
        stream = request.get("stream", False) if reply.stream is None else reply.stream
        if reply.status != 200 or reply.body is not None:
            body = reply.body if reply.body is not None else json.dumps(
                {"error": {"message": f"scripted HTTP {reply.status}", "type": "test"}}).encode()
            h.send_response(reply.status)
            h.send_header("Content-Type", reply.headers.get("Content-Type", "application/json"))
            h.send_header("Content-Length", str(len(body)))
            for k, v in reply.headers.items():
                if k != "Content-Type":
                    h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
            return
        if not stream:
            body = json.dumps({
                "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }, ensure_ascii=False).encode("utf-8")
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        if reply.raw_lines is not None:
            lines = reply.raw_lines
        else:
            def chunk(delta: dict, finish=None) -> bytes:
                return b"data: " + json.dumps({
                    "id": "chatcmpl-test", "object": "chat.completion.chunk", "model": request.get("model"),
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]},
                    ensure_ascii=False).encode("utf-8")
            tokens = reply.tokens if reply.tokens is not None else split_tokens(reply.content or "")
            lines = [chunk({"role": "assistant"})] + [chunk({"content": t}) for t in tokens]
            lines += [chunk({}, "stop"), b"data: [DONE]"]
        for line in lines:
            if not self._sleep(reply.token_delay):
                return
            h.wfile.write(line + b"\n\n")
            h.wfile.flush()
