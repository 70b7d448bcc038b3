"""One server for the web app and the HTTP API: FastAPI with the Gradio Blocks mounted at ``/``.

Why one server: the page, ``/api/v1/…``, the OpenAI-compatible ``/v1/chat/completions``
and the OpenAPI page at ``/docs`` share one loaded model and index, one port, and one
place that decides who may change the knowledge base.

Why ``serve`` refuses some addresses: on anything but a loopback address the page is
reachable by others, so the knowledge base must be protected by an administrator
password (``RAG_ADMIN_PASSWORD_HASH`` or ``RAG_ADMIN_PASSWORD``); without one,
``serve`` raises ``ExposureError`` (``rag serve`` prints it and exits with status 2).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

import gradio as gr
from fastapi import FastAPI

from rag.auth import AdminPassword, KeyStore, check_exposure
from rag.config import Settings

from .api import MAX_FILES_PER_UPLOAD, add_api
from .app import LAUNCH_OPTIONS, App, build_app

log = logging.getLogger("ui")
JSON_BODY_LIMIT = 1024 * 1024  # questions and chat messages; uploads have their own limit


class BodyLimit:
    """ASGI middleware: refuse request bodies over a per-path limit with 413, before storing them.

    The Content-Length is checked first; a body without one (chunked) is counted as it
    arrives. Gradio's own upload route is left to Gradio's ``max_file_size``."""

    def __init__(self, app, settings: Settings):
        self.app = app
        self.upload_limit = settings.max_upload_bytes * MAX_FILES_PER_UPLOAD + 1024 * 1024
        self.upload_mb = settings.max_upload_bytes / 1024 / 1024

    def limit_for(self, scope) -> tuple[int, str] | None:
        path = scope.get("path", "")
        if scope.get("method") == "POST" and path.rstrip("/") == "/api/v1/kb/documents":
            return self.upload_limit, (f"上传的内容太大：每个文件不超过 {self.upload_mb:g} MB，"
                                       f"每次最多 {MAX_FILES_PER_UPLOAD} 个文件。")
        if path.startswith(("/api/", "/v1/")):
            return JSON_BODY_LIMIT, "请求体太大（上限 1 MB）。"
        return None

    async def __call__(self, scope, receive, send):
        limit = self.limit_for(scope) if scope["type"] == "http" else None
        if limit is None:
            return await self.app(scope, receive, send)
        cap, message = limit
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > cap:
            return await self._refuse(send, message)
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > cap:
                    raise _TooLarge
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, message)

    @staticmethod
    async def _refuse(send, message: str) -> None:
        body = json.dumps({"detail": message, "error": {"message": message, "type": "request_too_large",
                                                        "code": 413}}, ensure_ascii=False).encode("utf-8")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_server(settings: Settings, admin: AdminPassword | None = None,
                  keys: KeyStore | None = None) -> tuple[FastAPI, App, gr.Blocks]:
    """The FastAPI application: HTTP API routes, then the web app mounted at ``/``."""
    app = App(settings, admin=admin)
    demo = build_app(settings, app)
    # After every event Gradio's queue rebuilds a pandas summary of up to 10,000 past events for its
    # monitoring page, which this app does not serve: 2–6 ms of the interpreter per answer (measured).
    # Keep 100 events and summarise every 1,000 instead. Read when the queue is made, just below.
    os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "100")
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    # default 1: the knowledge-base events (one change at a time); the ask events set their own limit
    # (Settings.web_concurrency, ui/app.py), so questions from different shoppers run side by side.
    demo.queue(default_concurrency_limit=1)
    api = FastAPI(title="售后问答 HTTP API", version="1",
                  description="网购售后问答：带引用的回答（/api/v1/ask）、OpenAI 兼容的对话接口"
                              "（/v1/chat/completions）和知识库管理（需要 admin 密钥）。"
                              "密钥放在请求头 Authorization: Bearer <密钥>，用 rag keys create 创建。",
                  docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
    add_api(api, app, keys or KeyStore.for_settings(settings))
    api.add_middleware(BodyLimit, settings=settings)
    gr.mount_gradio_app(api, demo, path="/", max_file_size=settings.max_upload_bytes, **LAUNCH_OPTIONS)
    return api, app, demo


class Running:
    """A server started with ``block=False``: ``url``, ``app`` (the App), ``close()``."""

    def __init__(self, server, thread: threading.Thread, app: App, demo: gr.Blocks, url: str):
        self.server, self.thread, self.app, self.demo, self.url = server, thread, app, demo, url

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


_FROM_ENV = object()


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
          admin=_FROM_ENV, keys: KeyStore | None = None):
    """Serve the web app and the API; blocks unless ``block=False`` (then returns ``Running``).

    ``admin`` defaults to the password from the environment (rag/auth.py); raises
    ExposureError for a non-loopback ``host`` without one."""
    import uvicorn

    if admin is _FROM_ENV:
        admin = AdminPassword.from_env()
    check_exposure(host, admin)
    logging.getLogger("ui").setLevel(logging.INFO)
    api, app, demo = create_server(settings, admin=admin, keys=keys)
    config = uvicorn.Config(api, host=host, port=port, log_level="info" if block else "warning",
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    if block:
        print(f"售后问答：http://{shown}:{port}/ （HTTP API 文档：http://{shown}:{port}/docs）", file=sys.stderr)
        server.run()
        return None
    thread = threading.Thread(target=server.run, name="rag-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"服务没能在 {host}:{port} 上启动")
        time.sleep(0.05)
    return Running(server, thread, app, demo, f"http://{shown}:{port}/")
