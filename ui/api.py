"""The HTTP API: asking (``/api/v1/ask``), an OpenAI-compatible chat endpoint, knowledge-base admin.

Why these three: a script or a customer-service system wants the same JSON as
``rag ask --json``; chat front-ends and SDKs speak the OpenAI chat protocol;
and a maintainer wants to add a document without opening the web page. All of
them reuse what the web app uses (``App.assistant()``, ``ui.kb``), so the page
and the API can't drift apart.

Keys (rag/auth.py) come as ``Authorization: Bearer <key>``. Asking is open
(any key or none is accepted) unless ``Settings.api_require_key``
(``RAG_API_REQUIRE_KEY=1``); knowledge-base endpoints always need an ``admin`` key. Errors are JSON with a Chinese
``detail`` (and the same text in an OpenAI-style ``error`` object): 400 bad
question, 401 missing/invalid key, 403 key without the admin role, 409 a
rebuild already running, 413 too large, 422 malformed request, 503 no index.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Literal, Union

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.auth import ApiKey, AuthConfigError, KeyStore

from . import kb

log = logging.getLogger("ui.api")

MODEL_NAME = "shouhou-rag"
MAX_FILES_PER_UPLOAD = 10
MAX_HISTORY_TURNS = 50
MAX_TURN_CHARS = 8000
INTERNAL_ERROR = "服务器内部错误，这次没能完成；详细原因已记录在服务器日志中。"


class ApiError(Exception):
    def __init__(self, status: int, detail: str, kind: str = "invalid_request_error", extra: dict | None = None):
        super().__init__(detail)
        self.status, self.detail, self.kind, self.extra = status, detail, kind, extra or {}


def error_response(status: int, detail: str, kind: str = "invalid_request_error", extra: dict | None = None,
                   headers: dict | None = None) -> JSONResponse:
    """``{"detail": …, "error": {"message", "type", "code"}}``: plain clients read ``detail``,
    OpenAI SDKs read ``error.message``."""
    body = {"detail": detail, "error": {"message": detail, "type": kind, "code": status}, **(extra or {})}
    return JSONResponse(body, status_code=status, headers=headers)


# --------------------------------------------------------------------------- request bodies


class Turn(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=MAX_TURN_CHARS)


class AskRequest(BaseModel):
    question: str = Field(description="用户的问题（不超过 1000 字）")
    k: int | None = Field(None, ge=1, le=50, description="用于回答的段落数，默认 5")
    mode: Literal["hybrid", "dense", "keyword"] | None = Field(None, description="检索方式，默认 hybrid")
    history: list[Union[Turn, str]] | None = Field(
        None, max_length=MAX_HISTORY_TURNS,
        description="之前的对话：[{role, content}] 或字符串（视为用户之前的提问）")
    id: str | int | None = Field(None, description="原样写回结果的 id 字段")
    use_llm: bool = Field(False, description="由已配置的大模型撰写回答（引用逐句核对）")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens, … are accepted and ignored
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_HISTORY_TURNS + 1)
    stream: bool = False
    k: int | None = Field(None, ge=1, le=50)
    mode: Literal["hybrid", "dense", "keyword"] | None = None
    use_llm: bool = False


def normalise_history(history) -> list[dict]:
    """[{role, content}] from Turns and plain strings (a string is an earlier user question)."""
    out = []
    for t in history or []:
        if isinstance(t, str):
            if len(t) > MAX_TURN_CHARS:
                raise ApiError(422, f"history 中的一条太长（上限 {MAX_TURN_CHARS} 字）。")
            out.append({"role": "user", "content": t})
        else:
            out.append({"role": t.role, "content": t.content})
    return out


def _text(content) -> str:
    """Chat message content: a string or a list of {"type": "text", "text": …} parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str):
            parts.append(p["text"])
        elif isinstance(p, str):
            parts.append(p)
        else:
            raise ApiError(422, "消息内容只支持文字（content 应为字符串或 {type: text, text} 列表）。")
    return "".join(parts)


def split_chat(messages: list[ChatMessage]) -> tuple[str, list[dict]]:
    """(question, history): the last user message, and the turns before it."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise ApiError(400, "messages 中没有用户的问题（需要至少一条 role 为 user 的消息）。")
    history = [{"role": m.role, "content": _text(m.content)} for m in messages[:last]
               if m.role in ("user", "assistant", "system")]
    for h in history:
        if len(h["content"]) > MAX_TURN_CHARS:
            raise ApiError(422, f"之前的一条消息太长（上限 {MAX_TURN_CHARS} 字）。")
    return _text(messages[last].content), history


# --------------------------------------------------------------------------- validation messages

_PYDANTIC_ZH = {
    "missing": "缺少这个字段", "string_type": "应为字符串", "int_type": "应为整数", "int_parsing": "应为整数",
    "bool_type": "应为 true 或 false", "bool_parsing": "应为 true 或 false", "list_type": "应为列表",
    "dict_type": "应为对象", "model_type": "应为对象", "literal_error": "取值无效",
    "greater_than_equal": "太小", "less_than_equal": "太大", "too_long": "太长", "too_short": "太短",
    "string_too_long": "太长", "json_invalid": "不是有效的 JSON", "model_attributes_type": "应为对象",
    "union_tag_invalid": "取值无效", "extra_forbidden": "不认识这个字段",
}


def validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path")]
        where = ".".join(loc) or "请求体"
        what = _PYDANTIC_ZH.get(err.get("type", ""), "格式不对")
        if err.get("type") == "literal_error" and err.get("ctx", {}).get("expected"):
            what += f"（可选：{err['ctx']['expected']}）"
        parts.append(f"{where}：{what}")
    return "请求格式有误：" + "；".join(dict.fromkeys(parts)) + "。"


# --------------------------------------------------------------------------- rebuild jobs


class Jobs:
    """One knowledge-base change at a time (upload, delete or rebuild), run in a thread;
    ``status()`` reports the latest one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._job: dict | None = None
        self._done = threading.Event()
        self._done.set()

    def start(self, kind: str, work, cleanup=None) -> dict:
        """Run ``work(progress) -> kb.Outcome`` in the background; 409 while another job runs."""
        with self._lock:
            if self._job is not None and self._job["state"] == "running":
                raise ApiError(409, "另一个知识库更新（上传、删除或重建索引）正在进行，请稍后再试。", "conflict",
                               {"job": dict(self._job)})
            job = {"id": uuid.uuid4().hex[:12], "kind": kind, "state": "running",
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "finished": None,
                   "progress": {"done": 0, "total": 0}, "message": "正在更新知识库…", "result": None}
            self._job = job
            self._done.clear()

        def progress(done: int, total: int) -> None:
            job["progress"] = {"done": int(done), "total": int(total)}

        def run():
            try:
                out: kb.Outcome = work(progress)
                job.update(result=out.as_json(), message=out.message, state="done" if out.ok else "failed")
            except Exception:
                log.exception("knowledge-base job %s failed", kind)
                job.update(state="failed", message=INTERNAL_ERROR)
            finally:
                job["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
                if cleanup is not None:
                    cleanup()
                self._done.set()

        threading.Thread(target=run, name=f"kb-{kind}", daemon=True).start()
        return dict(job)

    def wait(self, timeout: float | None = None) -> None:
        self._done.wait(timeout)

    def status(self) -> dict:
        with self._lock:
            return dict(self._job) if self._job else {"state": "idle", "message": "还没有进行过知识库更新。"}


# --------------------------------------------------------------------------- routes


def add_api(api: FastAPI, app, keys: KeyStore) -> None:
    """Add the routes to ``api``; ``app`` is the web app's ``ui.app.App`` (settings, assistant)."""
    settings = app.settings
    jobs = Jobs()
    bearer = HTTPBearer(auto_error=False, description="rag keys create 创建的密钥")
    api.state.jobs = jobs

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.detail, exc.kind, exc.extra, headers)

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return error_response(422, validation_detail(exc))

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = {400: "请求体无法解析：应为 UTF-8 编码的 JSON（上传文件用 multipart/form-data）。",
                  404: "没有这个接口。", 405: "这个接口不支持该请求方法。"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, detail)

    @api.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        log.error("API %s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, INTERNAL_ERROR, "server_error")

    def _key(credentials: HTTPAuthorizationCredentials | None, request: Request) -> ApiKey | None:
        raw = request.headers.get("authorization")
        if credentials is None:
            if raw:
                raise ApiError(401, "Authorization 请求头格式不对，应为：Authorization: Bearer <密钥>。",
                               "authentication_error")
            return None
        try:
            key = keys.authenticate(credentials.credentials)
        except AuthConfigError as e:
            log.error("API key file: %s", e)
            raise ApiError(500, "服务器的 API 密钥文件有问题，请联系管理员。", "server_error") from None
        if key is None:
            raise ApiError(401, "API 密钥无效或已被吊销。", "authentication_error")
        return key

    def asker(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> ApiKey | None:
        """Open asking: any or no key will do (OpenAI SDKs always send one, often a dummy like
        "EMPTY"). Key-only asking: a valid ask or admin key."""
        if not app.settings.api_require_key:
            return None
        key = _key(credentials, request)
        if key is None:
            raise ApiError(401, "这个服务要求 API 密钥：请在请求头加上 Authorization: Bearer <密钥>。",
                           "authentication_error")
        return key

    def admin(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> ApiKey:
        key = _key(credentials, request)
        if key is None:
            raise ApiError(401, "管理知识库需要 admin 角色的 API 密钥：请在请求头加上 Authorization: Bearer <密钥>"
                                "（用 rag keys create --role admin 创建）。", "authentication_error")
        if key.role != "admin":
            raise ApiError(403, "这个 API 密钥只能提问，没有管理知识库的权限（需要 admin 角色）。", "permission_error")
        return key

    def assistant():
        from rag.documents import DocumentError
        from rag.embedding import ModelError
        from rag.index import IndexError_

        try:
            return app.assistant()
        except (IndexError_, DocumentError, ModelError) as e:
            raise ApiError(503, f"服务暂时不可用：{e}", "service_unavailable") from None

    def ask(question: str, k, mode, history, use_llm: bool, qid=None) -> dict:
        from rag.index import IndexError_
        from rag.pipeline import QuestionError

        a = assistant()
        try:
            result = a.ask(question, k=k, mode=mode, qid=qid, use_llm=use_llm, history=history)
        except QuestionError as e:
            raise ApiError(400, str(e)) from None
        except IndexError_ as e:
            raise ApiError(503, f"索引暂时不可用：{e}", "service_unavailable") from None
        from rag import convlog

        convlog.record(settings, result, "api", mode=mode, k=k)  # masked; written by a background thread
        return result

    # -- asking ------------------------------------------------------------------------
    @api.get("/api/v1/health", tags=["提问"], summary="服务状态：索引版本、文档数、片段数、模型")
    def health():
        m = kb.read_manifest(settings)
        if m is None:
            raise ApiError(503, "还没有索引：请先运行 rag index 或在知识库页重建索引。", "service_unavailable")
        llm = app._assistant.llm if app._assistant is not None else None
        return {"status": "ok", "index_version": kb.serving_version(settings), "store": settings.store,
                "documents": len(m.get("documents") or {}), "chunks": m.get("chunks", 0),
                "model": m.get("model_id"), "created": m.get("created"),
                "llm": None if llm is None else llm.model, "api_require_key": app.settings.api_require_key}

    @api.post("/api/v1/ask", tags=["提问"], summary="提问，返回与 rag ask --json 相同的 JSON")
    def ask_route(body: AskRequest, key: ApiKey | None = Depends(asker)):
        return ask(body.question, body.k, body.mode, normalise_history(body.history), body.use_llm, qid=body.id)

    @api.get("/v1/models", tags=["OpenAI 兼容"], summary="模型列表（OpenAI 兼容）")
    def models(key: ApiKey | None = Depends(asker)):
        return {"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "local"}]}

    @api.post("/v1/chat/completions", tags=["OpenAI 兼容"],
              summary="OpenAI 兼容的对话接口（支持 stream）；引用在 citations 字段")
    def chat(body: ChatRequest, key: ApiKey | None = Depends(asker)):
        question, history = split_chat(body.messages)
        result = ask(question, body.k, body.mode, history, body.use_llm)
        model = body.model or MODEL_NAME
        cid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())
        extra = {k: result.get(k) for k in ("citations", "retrieved", "refused", "confidence", "index_version")}
        extra.update({k: result[k] for k in ("follow_up", "rewritten_question") if k in result})  # with history
        if "llm" in result:
            extra["llm"] = result["llm"]
        answer = result["answer"]
        usage = {"prompt_tokens": len(question), "completion_tokens": len(answer),
                 "total_tokens": len(question) + len(answer)}  # counted in characters
        if not body.stream:
            return {"id": cid, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                 "finish_reason": "stop"}],
                    "usage": usage, **extra}

        def chunk(delta: dict, finish=None, more: dict | None = None) -> str:
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **(more or {})}
            return "data: " + json.dumps(obj, ensure_ascii=False) + "\n\n"

        def events():
            yield chunk({"role": "assistant", "content": ""})
            for piece in _pieces(answer):
                yield chunk({"content": piece})
            yield chunk({}, "stop", {"usage": usage, **extra})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- knowledge base (admin) ----------------------------------------------------------
    @api.get("/api/v1/kb/documents", tags=["知识库（管理员）"], summary="已索引的文档")
    def documents(key: ApiKey = Depends(admin)):
        m = kb.read_manifest(settings) or {}
        docs = [{"source": src, "title": d.get("title", ""), "kind": d.get("kind", ""),
                 "chunks": int(d.get("chunks", 0))} for src, d in sorted((m.get("documents") or {}).items())]
        return {"index_version": kb.serving_version(settings),
                "created": m.get("created"), "chunks": m.get("chunks", 0), "documents": docs,
                "skipped": [{"file": f, "reason": r} for f, r in kb.skipped_files(settings)]}

    def _job_reply(job: dict, waited: bool):
        """202 + the running job; after waiting, 200 when it worked, 409 when another rebuild was
        running, 422 when the change was refused or failed (the index is then unchanged)."""
        if not waited:
            return JSONResponse({"job": job}, status_code=202, headers={"Location": "/api/v1/kb/rebuild"})
        job = jobs.status()
        if job["state"] == "done":
            status = 200
        else:
            status = 409 if "正在进行" in (job.get("message") or "") else 422
        return JSONResponse({"job": job}, status_code=status)

    def _wait(job: dict, wait: bool):
        if wait:
            jobs.wait()
        return _job_reply(job, wait)

    @api.post("/api/v1/kb/documents", tags=["知识库（管理员）"], status_code=202,
              summary="上传文档（multipart，字段名 files，可多个）并重建索引")
    async def upload(request: Request, files: list[UploadFile] = File(..., description="文档文件"),
                     wait: bool = Query(False, description="等重建完成再返回"),
                     key: ApiKey = Depends(admin)):
        if len(files) > MAX_FILES_PER_UPLOAD:
            raise ApiError(413, f"每次最多上传 {MAX_FILES_PER_UPLOAD} 个文件。", "request_too_large")
        tmp = Path(tempfile.mkdtemp(prefix="rag-api-upload-"))
        try:
            pairs = []
            for i, f in enumerate(files):
                name = f.filename or ""
                dest = tmp / f"{i}"
                size = 0
                with open(dest, "wb") as out:
                    while chunk := await f.read(1 << 20):
                        size += len(chunk)
                        if size > settings.max_upload_bytes:
                            raise ApiError(413, f"{name}：文件太大（上限 {settings.max_upload_bytes / 1024 / 1024:g} MB）。",
                                           "request_too_large")
                        out.write(chunk)
                await f.close()
                pairs.append((dest, name))
            good, rejected = await run_in_threadpool(kb.validate_uploads, settings, pairs)
            if not good:
                raise ApiError(400, "没有文件加入知识库，现有索引保持不变。" + "".join(
                    f" {why}" for _, why in rejected), extra={"rejected": [{"file": n, "reason": w}
                                                                       for n, w in rejected]})
            originals = {str(p): n for p, n in pairs}

            def work(progress):
                out = kb.upload(settings, [(p, originals[str(p)]) for p, _ in good], progress=progress)
                out.rejected = rejected + out.rejected
                return out

            job = jobs.start("upload", work, cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if wait:
            await run_in_threadpool(jobs.wait)
        return _job_reply(job, wait)

    @api.delete("/api/v1/kb/documents/{source:path}", tags=["知识库（管理员）"], status_code=202,
                summary="删除一篇文档（如 uploads/x.md）并重建索引")
    def delete(source: str, wait: bool = Query(False, description="等重建完成再返回"),
               key: ApiKey = Depends(admin)):
        try:
            kb.resolve_in_corpus(settings, source)
        except kb.UploadRejected as e:
            raise ApiError(404, str(e)) from None
        return _wait(jobs.start("delete", lambda progress: kb.delete(settings, source, progress=progress)), wait)

    @api.post("/api/v1/kb/rebuild", tags=["知识库（管理员）"], status_code=202, summary="重建索引")
    def rebuild(wait: bool = Query(False, description="等重建完成再返回"), key: ApiKey = Depends(admin)):
        return _wait(jobs.start("rebuild", lambda progress: kb.rebuild(settings, progress=progress)), wait)

    @api.get("/api/v1/kb/rebuild", tags=["知识库（管理员）"], summary="最近一次上传/删除/重建的状态")
    def rebuild_status(key: ApiKey = Depends(admin)):
        return {"job": jobs.status()}


def _pieces(text: str, size: int = 12):
    """The answer in small pieces for streaming (lines kept whole when short)."""
    for line in text.splitlines(keepends=True):
        for i in range(0, len(line), size):
            yield line[i:i + size]
