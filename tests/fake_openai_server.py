"""A scripted OpenAI-compatible server for tests: real HTTP on a free local port.

Each test queues replies (``server.reply(...)``); every POST to /v1/chat/completions
takes the next one, and the request (path, headers, parsed JSON) is recorded in
``server.requests``. A reply can be a normal completion, a streamed one (SSE), an HTTP
error, a raw (malformed) body, raw stream lines, or any of these after a delay.

``mode`` chooses how the server frames its replies, to test the client against the
ordinary kinds of HTTP server:

- ``None`` (default): HTTP/1.1; JSON with Content-Length, streams end by closing.
- ``"keep-alive"``: HTTP/1.1; JSON with Content-Length, streams chunked; the connection stays open.
- ``"close"``: HTTP/1.1 with ``Connection: close`` after every reply (Content-Length bodies).
- ``"http/1.0"``: an HTTP/1.0 server: no chunking, the connection closes after every reply.
- ``"chunked"``: HTTP/1.1 with ``Transfer-Encoding: chunked`` for every body, kept alive.

``server.connections`` counts the TCP connections accepted, so a test can see reuse.
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


MODES = (None, "keep-alive", "close", "http/1.0", "chunked")


class FakeOpenAI:
    def __init__(self, host: str = "127.0.0.1", mode: str | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.replies: deque[Reply] = deque()
        self.requests: list[dict] = []
        self.connections = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0" if mode == "http/1.0" else "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def setup(self):
                super().setup()
                with fake._lock:
                    fake.connections += 1

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    parsed = json.loads(raw.decode("utf-8"))
                except ValueError:
                    parsed = None
                with fake._lock:
                    # header names as Title-Case, whatever case the client sent
                    headers = {k.title(): v for k, v in self.headers.items()}
                    fake.requests.append({"path": self.path, "headers": headers,
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

    def _start(self, h: BaseHTTPRequestHandler, status: int, headers: dict, length: int | None) -> bool:
        """Status line and headers framed for ``self.mode``; True when the body is chunked."""
        chunked = self.mode == "chunked" or (self.mode == "keep-alive" and length is None)
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            h.send_header("Content-Length", str(length))
        if self.mode == "close" or (not chunked and length is None):
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        return chunked

    @staticmethod
    def _write(h: BaseHTTPRequestHandler, data: bytes, chunked: bool) -> None:
        if chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if data:
            h.wfile.write(data)
            h.wfile.flush()

    @staticmethod
    def _end(h: BaseHTTPRequestHandler, chunked: bool) -> None:
        if chunked:
            h.wfile.write(b"0\r\n\r\n")
            h.wfile.flush()

    def _send(self, h: BaseHTTPRequestHandler, status: int, headers: dict, body: bytes) -> None:
        chunked = self._start(h, status, headers, len(body))
        if chunked:  # two pieces, so the client really has to join chunks
            self._write(h, body[:len(body) // 2], True)
            self._write(h, body[len(body) // 2:], True)
        else:
            self._write(h, body, False)
        self._end(h, chunked)

    def _serve(self, h: BaseHTTPRequestHandler, reply: Reply, request: dict) -> None:
        if not self._sleep(reply.delay):
            return
        stream = request.get("stream", False) if reply.stream is None else reply.stream
        if reply.status != 200 or reply.body is not None:
            body = reply.body if reply.body is not None else json.dumps(
                {"error": {"message": f"scripted HTTP {reply.status}", "type": "test"}}).encode()
            headers = {"Content-Type": reply.headers.get("Content-Type", "application/json")}
            headers.update((k, v) for k, v in reply.headers.items() if k != "Content-Type")
            self._send(h, reply.status, headers, body)
            return
        if not stream:
            body = json.dumps({
                "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }, ensure_ascii=False).encode("utf-8")
            self._send(h, 200, {"Content-Type": "application/json"}, body)
            return
        chunked = self._start(h, 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, None)
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
            self._write(h, line + b"\n\n", chunked)
        self._end(h, chunked)
