"""The HTTP API against a real server (uvicorn on a free port, in a thread): curl, the official
``openai`` client, keys and roles, knowledge-base administration, limits.

One server for the module, on a private copy of the shipped corpus and index
(conftest's session index), with one ``ask`` and one ``admin`` key.
"""
from __future__ import annotations

import json
import subprocess
import time

import httpx
import pytest

from conftest import free_port, private_kb
from rag.auth import AdminPassword, KeyStore, hash_password

QUESTION = "网上买的衣服不喜欢，7天内能无理由退货吗？"
OUT_OF_DOMAIN = "如何学习 Python 编程？"
CONTRACT = {"id", "question", "answer", "refused", "citations", "retrieved", "timings_ms", "confidence",
            "index_version"}
PASSAGE = {"n", "source", "title", "kind", "section", "text", "start", "end", "score"}
NEW_DOC_NAME = "qingshan-tea-rules.md"
NEW_DOC = """---
title: 青杉茶园会员售后规则
kind: guide
---
# 青杉茶园会员售后规则

## 青杉茶园茶叶受潮

青杉茶园会员收到的茶叶受潮结块，可以在签收后十日内申请青杉茶园专属补寄。补寄的运费由青杉茶园承担。
"""


@pytest.fixture(scope="module")
def server(shipped_settings, tmp_path_factory):
    from ui.server import serve

    settings = private_kb(shipped_settings, tmp_path_factory.mktemp("api-kb"))
    keys = KeyStore.for_settings(settings)
    _, ask_key = keys.create("客服系统", "ask")
    _, admin_key = keys.create("运维", "admin")
    running = serve(settings, port=free_port(), block=False, admin=AdminPassword(hash_password("admin-pass-123")))
    running.settings, running.ask_key, running.admin_key, running.keys = settings, ask_key, admin_key, keys
    yield running
    running.close()


@pytest.fixture
def require_key(server):
    """Switch the running server to key-only asking for one test."""
    before = server.app.settings
    server.app.settings = before.with_(api_require_key=True)
    yield
    server.app.settings = before


def url(server, path: str) -> str:
    return server.url.rstrip("/") + path


def curl(*args: str) -> tuple[int, dict | str]:
    """Run curl; returns (HTTP status, parsed JSON body or raw text)."""
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True,
                         timeout=120, check=True)
    body, _, status = out.stdout.rpartition("\n")
    try:
        return int(status), json.loads(body)
    except ValueError:
        return int(status), body


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --------------------------------------------------------------------------- asking


def test_health(server):
    r = httpx.get(url(server, "/api/v1/health"))
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["index_version"].startswith("v-")
    assert h["documents"] >= 10 and h["chunks"] > 100 and "e5" in h["model"]


def test_ask_with_curl_returns_the_rag_ask_json_contract(server):
    status, result = curl("-X", "POST", url(server, "/api/v1/ask"), "-H", "Content-Type: application/json",
                          "-d", json.dumps({"question": QUESTION, "k": 5, "mode": "hybrid", "id": "q1"}))
    assert status == 200, result
    assert CONTRACT <= set(result)
    assert result["id"] == "q1" and result["question"] == QUESTION and result["refused"] is False
    assert "[1]" in result["answer"] and result["citations"]
    assert len(result["retrieved"]) == 10 and [p["n"] for p in result["retrieved"]] == list(range(1, 11))
    for p in result["citations"]:
        assert PASSAGE | {"used_sentences"} <= set(p)
    assert {"embed", "retrieve", "compose", "total"} <= set(result["timings_ms"])
    # Same question, same index: the same answer as asking in-process (what `rag ask --json` prints).
    direct = server.app.assistant().ask(QUESTION, k=5, mode="hybrid", qid="q1")
    assert (direct["answer"], direct["citations"]) == (result["answer"], result["citations"])


def test_ask_accepts_history_as_turns_or_strings(server):
    turns = [{"role": "user", "content": "网购的东西坏了怎么办"}, {"role": "assistant", "content": "可以要求退换。"}]
    for history in (turns, ["网购的东西坏了怎么办"], []):
        r = httpx.post(url(server, "/api/v1/ask"), json={"question": "运费谁出？", "history": history})
        assert r.status_code == 200, r.text
        assert r.json()["question"] == "运费谁出？"


@pytest.mark.parametrize("body,status,words", [
    ({"question": ""}, 400, "问题不能为空"),
    ({"question": "   "}, 400, "问题不能为空"),
    ({"question": "衣服" * 600}, 400, "问题太长了（1200 字）"),
    ({"question": 123}, 422, "question：应为字符串"),
    ({}, 422, "question：缺少这个字段"),
    ({"question": "能退吗", "k": 0}, 422, "k：太小"),
    ({"question": "能退吗", "mode": "magic"}, 422, "mode：取值无效"),
    ({"question": "能退吗", "history": [{"role": "robot", "content": "x"}]}, 422, "history"),
    ({"question": "能退吗", "history": [123]}, 422, "history"),
    ({"question": "能退吗", "history": "运费"}, 422, "history"),
])
def test_bad_questions_get_chinese_errors(server, body, status, words):
    r = httpx.post(url(server, "/api/v1/ask"), json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and r.json()["error"]["message"] == r.json()["detail"]


def test_body_that_is_not_json(server):
    r = httpx.post(url(server, "/api/v1/ask"), content=b"\xff\xfe not json",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "UTF-8 编码的 JSON" in r.json()["detail"]
    r = httpx.post(url(server, "/api/v1/ask"), content=b'{"question": ',
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "不是有效的 JSON" in r.json()["detail"]
    r = httpx.get(url(server, "/api/v1/nothing-here"))
    assert r.status_code == 404
    r = httpx.post(url(server, "/api/v1/ask"), content=b"x" * (2 * 1024 * 1024),
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "请求体太大" in r.json()["detail"]


def test_openapi_page(server):
    assert httpx.get(url(server, "/docs")).status_code == 200
    spec = httpx.get(url(server, "/openapi.json")).json()
    for path in ("/api/v1/ask", "/api/v1/health", "/v1/chat/completions", "/api/v1/kb/documents",
                 "/api/v1/kb/documents/{source}", "/api/v1/kb/rebuild"):
        assert path in spec["paths"], path
    assert httpx.get(server.url).status_code == 200  # the web app still answers at /


# --------------------------------------------------------------------------- OpenAI-compatible


def openai_client(server, key: str | None = None):
    from openai import OpenAI

    return OpenAI(base_url=url(server, "/v1"), api_key=key or "unused", max_retries=0, timeout=60)


def test_openai_client_non_streaming(server):
    client = openai_client(server, server.ask_key)
    resp = client.chat.completions.create(model="shouhou-rag", messages=[
        {"role": "system", "content": "你是售后助手"},
        {"role": "user", "content": "网购的东西坏了怎么办"},
        {"role": "assistant", "content": "可以要求退换。"},
        {"role": "user", "content": QUESTION}])
    assert resp.model == "shouhou-rag" and resp.object == "chat.completion"
    content = resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "stop" and "[1]" in content
    extra = resp.model_extra
    assert extra["refused"] is False and extra["citations"] and PASSAGE <= set(extra["citations"][0])
    assert len(extra["retrieved"]) == 10
    direct = server.app.assistant().ask(QUESTION)
    assert content == direct["answer"]


def test_openai_client_streaming(server):
    client = openai_client(server)
    stream = client.chat.completions.create(model="my-model-name", stream=True,
                                            messages=[{"role": "user", "content": QUESTION}])
    pieces, last = [], None
    for chunk in stream:
        assert chunk.model == "my-model-name"
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    assert len(pieces) > 3
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["citations"] and last.model_extra["refused"] is False
    assert "".join(pieces) == server.app.assistant().ask(QUESTION)["answer"]


def test_openai_client_refusal_and_errors(server):
    import openai

    client = openai_client(server)
    resp = client.chat.completions.create(model="x", messages=[{"role": "user", "content": OUT_OF_DOMAIN}])
    assert resp.model_extra["refused"] is True and resp.model_extra["citations"] == []
    assert "资料中没有找到" in resp.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="x", messages=[{"role": "user", "content": "  "}])
    assert "问题不能为空" in str(e.value)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="x", messages=[{"role": "system", "content": "只有系统消息"}])
    assert "没有用户的问题" in str(e.value)
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="x", messages=[])
    assert [m.id for m in client.models.list()] == ["shouhou-rag"]


def test_curl_streaming_chat(server):
    out = subprocess.run(["curl", "-sS", "-N", url(server, "/v1/chat/completions"), "-H",
                          "Content-Type: application/json", "-d",
                          json.dumps({"model": "m", "stream": True,
                                      "messages": [{"role": "user", "content": QUESTION}]})],
                         capture_output=True, text=True, timeout=120, check=True)
    events = [line[6:] for line in out.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["citations"]


# --------------------------------------------------------------------------- keys and roles


def test_asking_is_open_by_default_whatever_key_is_sent(server):
    # OpenAI SDKs always send some key (often a dummy such as "EMPTY"); an open server ignores it.
    for headers in ({}, bearer("EMPTY"), {"Authorization": "Basic abc"}):
        r = httpx.post(url(server, "/api/v1/ask"), json={"question": QUESTION}, headers=headers)
        assert r.status_code == 200, r.text


def test_key_only_asking(server, require_key):
    import openai

    r = httpx.post(url(server, "/api/v1/ask"), json={"question": QUESTION})
    assert r.status_code == 401 and "要求 API 密钥" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.post(url(server, "/api/v1/ask"), json={"question": QUESTION}, headers=bearer("sk-rag-wrong"))
    assert r.status_code == 401 and r.json()["detail"] == "API 密钥无效或已被吊销。"
    r = httpx.post(url(server, "/api/v1/ask"), json={"question": QUESTION}, headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    for key in (server.ask_key, server.admin_key):
        assert httpx.post(url(server, "/api/v1/ask"), json={"question": QUESTION},
                          headers=bearer(key)).status_code == 200
    with pytest.raises(openai.AuthenticationError) as e:
        openai_client(server, "sk-rag-not-a-key").chat.completions.create(
            model="x", messages=[{"role": "user", "content": QUESTION}])
    assert "API 密钥无效" in str(e.value)
    assert openai_client(server, server.ask_key).chat.completions.create(
        model="x", messages=[{"role": "user", "content": QUESTION}]).choices[0].message.content
    # A revoked key stops working at once.
    key, token = server.keys.create("临时", "ask")
    assert httpx.post(url(server, "/api/v1/ask"), json={"question": QUESTION}, headers=bearer(token)).status_code == 200
    server.keys.revoke(key.id)
    assert httpx.post(url(server, "/api/v1/ask"), json={"question": QUESTION}, headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("method,path", [("GET", "/api/v1/kb/documents"), ("POST", "/api/v1/kb/rebuild"),
                                         ("GET", "/api/v1/kb/rebuild"),
                                         ("DELETE", "/api/v1/kb/documents/laws/consumer-protection-law.md")])
def test_admin_endpoints_need_an_admin_key(server, method, path):
    r = httpx.request(method, url(server, path))
    assert r.status_code == 401 and "admin" in r.json()["detail"]
    r = httpx.request(method, url(server, path), headers=bearer(server.ask_key))
    assert r.status_code == 403 and r.json()["detail"] == "这个 API 密钥只能提问，没有管理知识库的权限（需要 admin 角色）。"
    r = httpx.request(method, url(server, path), headers=bearer("sk-rag-forged"))
    assert r.status_code == 401
    assert (server.settings.corpus_dir / "laws" / "consumer-protection-law.md").exists()


def test_admin_endpoint_with_curl(server):
    status, body = curl(url(server, "/api/v1/kb/documents"))
    assert status == 401 and "admin" in body["detail"]
    status, body = curl(url(server, "/api/v1/kb/documents"), "-H", f"Authorization: Bearer {server.ask_key}")
    assert status == 403 and "没有管理知识库的权限" in body["detail"]
    status, body = curl(url(server, "/api/v1/kb/documents"), "-H", f"Authorization: Bearer {server.admin_key}")
    assert status == 200 and any(d["source"] == "laws/consumer-protection-law.md" for d in body["documents"])


# --------------------------------------------------------------------------- knowledge base


def test_upload_ask_and_delete_through_the_api(server, tmp_path):
    docs_before = httpx.get(url(server, "/api/v1/kb/documents"), headers=bearer(server.admin_key)).json()["documents"]
    doc = tmp_path / NEW_DOC_NAME
    doc.write_text(NEW_DOC, encoding="utf-8")
    status, body = curl("-X", "POST", url(server, "/api/v1/kb/documents?wait=true"),
                        "-H", f"Authorization: Bearer {server.admin_key}", "-F", f"files=@{doc}",
                        "-F", "files=@/dev/null;filename=empty.md")
    assert status == 200, body
    job = body["job"]
    assert job["state"] == "done" and job["kind"] == "upload"
    assert job["result"]["added"] == [f"uploads/{NEW_DOC_NAME}"]
    assert [r["file"] for r in job["result"]["rejected"]] == ["empty.md"]
    assert "索引已更新" in job["message"]
    assert job["result"]["index"]["documents"] == len(docs_before) + 1
    assert (server.settings.corpus_dir / "uploads" / NEW_DOC_NAME).exists()
    r = httpx.post(url(server, "/api/v1/ask"), json={"question": "青杉茶园的茶叶受潮了，签收后几天内能申请补寄？"})
    assert any(c["source"] == f"uploads/{NEW_DOC_NAME}" for c in r.json()["citations"]), r.json()["answer"]
    r = httpx.delete(url(server, f"/api/v1/kb/documents/uploads/{NEW_DOC_NAME}"), params={"wait": "true"},
                     headers=bearer(server.admin_key), timeout=180)
    assert r.status_code == 200 and r.json()["job"]["result"]["removed"] == [f"uploads/{NEW_DOC_NAME}"]
    assert not (server.settings.corpus_dir / "uploads" / NEW_DOC_NAME).exists()
    listed = httpx.get(url(server, "/api/v1/kb/documents"), headers=bearer(server.admin_key)).json()
    assert f"uploads/{NEW_DOC_NAME}" not in {d["source"] for d in listed["documents"]}


def test_bad_uploads_are_refused(server):
    from rag.index import current_version

    version = current_version(server.settings.index_dir)
    r = httpx.post(url(server, "/api/v1/kb/documents"), headers=bearer(server.admin_key), timeout=60,
                   files=[("files", ("tool.exe", b"MZ\x90\x00", "application/octet-stream")),
                          ("files", ("../../etc/passwd.md", b"# x\n\ny", "text/markdown"))])
    assert r.status_code == 400 and "没有文件加入知识库" in r.json()["detail"]
    assert {x["file"] for x in r.json()["rejected"]} == {"tool.exe", "../../etc/passwd.md"}
    six_mb = b"# big\n\n" + "退货".encode() * (2 * 1024 * 1024)
    r = httpx.post(url(server, "/api/v1/kb/documents"), headers=bearer(server.admin_key), timeout=60,
                   files=[("files", ("big.md", six_mb, "text/markdown"))])
    assert r.status_code == 413 and "文件太大" in r.json()["detail"]
    r = httpx.delete(url(server, "/api/v1/kb/documents/../outside.md"), headers=bearer(server.admin_key))
    assert r.status_code in (404, 422)
    assert current_version(server.settings.index_dir) == version


def test_sixty_megabyte_upload_is_refused_before_it_is_stored(server, tmp_path):
    big = tmp_path / "sixty.txt"
    with open(big, "wb") as fh:
        fh.truncate(60 * 1024 * 1024)
    t0 = time.monotonic()
    status, body = curl("-X", "POST", url(server, "/api/v1/kb/documents"), "-H",
                        f"Authorization: Bearer {server.admin_key}", "-F", f"files=@{big}")
    assert status == 413 and "上传的内容太大：每个文件不超过 5 MB" in body["detail"], body
    assert time.monotonic() - t0 < 30
    assert not (server.settings.corpus_dir / "uploads" / "sixty.txt").exists()


def test_rebuild_and_its_status(server):
    h = bearer(server.admin_key)
    r = httpx.post(url(server, "/api/v1/kb/rebuild"), headers=h)
    assert r.status_code in (202, 409), r.text
    for _ in range(600):
        job = httpx.get(url(server, "/api/v1/kb/rebuild"), headers=h).json()["job"]
        if job["state"] != "running":
            break
        time.sleep(0.2)
    assert job["state"] == "done" and job["kind"] == "rebuild" and "索引已更新" in job["message"], job
    assert job["result"]["index"]["version"] == httpx.get(url(server, "/api/v1/health")).json()["index_version"]
