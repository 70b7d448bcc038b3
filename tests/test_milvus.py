"""The Milvus store on Milvus Lite (pip-installed, in-process, no server): build, ask, incremental
update, delete, a rebuild that dies midway, a SIGKILLed rebuild, bad URIs, and parity with FAISS."""
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from conftest import write_corpus  # noqa: E402
from rag.config import REPO_ROOT, Settings  # noqa: E402
from rag.store import build_index  # noqa: E402

SMALL = {
    "laws/a.md": "---\ntitle: 甲法\nkind: law\n---\n# 甲法\n\n## 第一条\n\n消费者有权退货。\n\n## 第二条\n\n经营者应当赔偿损失。\n",
    "guides/g.md": "---\ntitle: 乙指南\nkind: guide\n---\n# 乙指南\n\n## 一、取证\n\n开箱录像，保留证据。\n",
}
TYPICAL = {"typical_questions/laws/a.yaml": "第一条:\n  - 网上买的东西不想要了能退吗\n第二条:\n  - 商家要不要赔我钱\n"}


@pytest.fixture
def kb(tmp_path):
    from rag import milvus_store

    corpus = write_corpus(tmp_path / "corpus", {**SMALL, **TYPICAL})
    s = Settings().with_(corpus_dir=corpus, index_dir=tmp_path / "kb1", embedding_cache=tmp_path / "emb.sqlite3",
                         store="milvus", milvus_uri=str(tmp_path / "milvus.db"))
    yield s
    milvus_store.close(s)


def rows_written(monkeypatch, store):
    """Count the rows each write call sends to Milvus."""
    calls = {"upsert": 0, "delete": 0, "insert": 0}
    client = store.client
    for name in calls:
        real = getattr(client, name)

        def spy(*a, _real=real, _name=name, **kw):
            data = kw.get("ids") if _name == "delete" else (a[1] if len(a) > 1 else kw.get("data"))
            calls[_name] += len(data)
            return _real(*a, **kw)

        monkeypatch.setattr(client, name, spy)
    return calls


def test_build_and_ask_on_milvus_lite(kb):
    from rag.pipeline import Assistant
    from rag.store import get_store

    report = build_index(kb)
    store = get_store(kb)
    assert report.documents == 2 and report.chunks == 3 and not report.unchanged
    assert store.client.describe_alias("kb_kb1")["collection_name"] == "kb_kb1__a"
    stats = store.stats()
    assert stats["documents"] == 2 and stats["chunks"] == 3 and stats["rows"] == 5  # 3 passages + 2 questions
    a = Assistant(kb)
    r = a.ask("网上买的东西不想要了能退吗")
    assert r["index_version"].startswith("kb_kb1__a@mv-")
    assert r["retrieved"][0]["source"] == "laws/a.md" and r["retrieved"][0]["section"] == "第一条"
    assert r["citations"] and not r["refused"]
    text = (kb.corpus_dir / "laws/a.md").read_text(encoding="utf-8")
    p = r["retrieved"][0]
    assert text[p["start"]:p["end"]] == p["text"]  # offsets survive the round trip through Milvus fields
    # keyword and dense modes go through the store's own searches
    assert Assistant(kb).ask("经营者赔偿损失", mode="keyword")["retrieved"][0]["section"] == "第二条"
    assert a.ask("开箱录像", mode="dense")["retrieved"][0]["source"] == "guides/g.md"


def test_unchanged_corpus_writes_nothing(kb, monkeypatch):
    from rag.store import get_store

    first = build_index(kb)
    store = get_store(kb)
    calls = rows_written(monkeypatch, store)
    t0 = time.time()
    report = build_index(kb)
    assert report.unchanged and report.embedded == 0 and report.version == first.version
    assert calls == {"upsert": 0, "delete": 0, "insert": 0}
    assert time.time() - t0 < 2.0


def test_edit_upserts_only_the_changed_rows_and_serving_switches(kb, monkeypatch):
    from rag.pipeline import Assistant
    from rag.store import get_store

    build_index(kb)
    a = Assistant(kb)
    assert "全部损失" not in a.ask("经营者赔偿损失")["retrieved"][0]["text"]
    store = get_store(kb)
    p = kb.corpus_dir / "laws/a.md"
    p.write_text(p.read_text(encoding="utf-8").replace("赔偿损失", "赔偿全部损失"), encoding="utf-8")
    build_index(kb)  # first change: the standby collection is new, so it is written whole (vectors reused)
    assert store.serving() == "kb_kb1__b"
    p.write_text(p.read_text(encoding="utf-8").replace("有权退货", "有权无理由退货"), encoding="utf-8")
    calls = rows_written(monkeypatch, store)
    report = build_index(kb)
    # The standby (__a) holds the version before last: only what differs from it is written.
    assert report.embedded == 1 and store.serving() == "kb_kb1__a"
    assert calls["upsert"] == 4 and calls["delete"] == 4 + 1  # 第一条 and 第二条 (+ 1 question each), meta
    time.sleep(1.1)  # the alias is polled once per second
    texts = [h["text"] for h in a.ask("经营者赔偿损失")["retrieved"]]
    assert any("赔偿全部损失" in t for t in texts) and any("有权无理由退货" in t for t in texts)


def test_deleted_document_leaves_the_collection(kb):
    from rag.store import get_store

    build_index(kb)
    (kb.corpus_dir / "guides/g.md").unlink()
    report = build_index(kb)
    view = get_store(kb).open()
    assert report.documents == 1 and {c.source for c in view.chunks} == {"laws/a.md"}
    assert view.stats()["rows"] == 4
    build_index(kb)  # and back on the other side, by deleting rows
    view = get_store(kb).open()
    assert {c.source for c in view.chunks} == {"laws/a.md"}
    ids = view.client.query(view.collection, filter="", output_fields=["id"])
    assert len(ids) == 4 + 1  # rows + the manifest


def test_rebuild_that_fails_midway_leaves_the_served_collection_intact(kb, monkeypatch):
    from rag.pipeline import Assistant
    from rag.store import get_store

    build_index(kb)
    store = get_store(kb)
    a = Assistant(kb)
    before = a.ask("经营者赔偿损失")
    write_corpus(kb.corpus_dir, {f"laws/extra{i}.md": f"# 法{i}\n\n## 第一条\n\n第{i}号规定：经营者赔偿{i}倍。\n"
                                 for i in range(3)})
    real = store.client.upsert
    monkeypatch.setattr(store.client, "upsert", lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("进程被杀")))
    with pytest.raises(RuntimeError):
        build_index(kb)
    assert store.serving() == "kb_kb1__a"  # the alias never moved
    time.sleep(1.1)
    after = a.ask("经营者赔偿损失")
    assert after["index_version"] == before["index_version"]
    assert [p["source"] for p in after["retrieved"]] == [p["source"] for p in before["retrieved"]]
    assert not a.store.open().manifest.get("documents", {}).get("laws/extra0.md")
    monkeypatch.setattr(store.client, "upsert", real)
    report = build_index(kb)  # the next rebuild repairs the half-written standby and switches
    assert report.documents == 5 and store.serving() == "kb_kb1__b"
    assert any(c.source == "laws/extra2.md" for c in store.open().chunks)


@pytest.mark.parametrize("delay", [1.5, 4.0])
def test_sigkill_during_milvus_rebuild_keeps_the_served_collection(kb, delay):
    from rag import milvus_store
    from rag.store import get_store

    build_index(kb)
    before = get_store(kb).current()
    milvus_store.close(kb)  # Milvus Lite: one process at a time holds the file
    nonce = uuid.uuid4().hex
    write_corpus(kb.corpus_dir, {f"laws/extra{i}.md": f"# 法{i}\n\n## 第一条\n\n第{i}号新规定（{nonce}），关于退货{i}。\n"
                                 for i in range(30)})
    env = dict(os.environ, RAG_MILVUS_URI=kb.milvus_uri, RAG_STORE="milvus")
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", "--corpus", str(kb.corpus_dir),
                             "--index", str(kb.index_dir)], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = get_store(kb)
    view = store.open()  # the old version or the complete new one, never a half-written one
    assert len(view.chunks) == (3 if store.current() == before else 33)
    build_index(kb)
    assert any(c.source == "laws/extra29.md" for c in get_store(kb).open().chunks)


@pytest.mark.parametrize("uri, words", [
    ("http://127.0.0.1:1", "无法连接 Milvus"),
    ("/nonexistent-dir/x.db", "不存在"),
    ("{tmp}/milvus.txt", ".db 结尾"),
    ("ftp://example.org:19530", "无法识别"),
])
def test_bad_uri_says_so_in_chinese_and_exits_2(tmp_path, uri, words):
    env = dict(os.environ, RAG_MILVUS_URI=uri.format(tmp=tmp_path), RAG_STORE="milvus")
    for args in (["ask", "网上买的衣服不喜欢能退吗"], ["index", "--corpus", str(write_corpus(tmp_path / "c", SMALL))]):
        r = subprocess.run([sys.executable, "-m", "rag.cli", *args, "--index", str(tmp_path / "kb")], env=env,
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("错误：") and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_lite_file_held_by_another_process_is_named(tmp_path):
    db = tmp_path / "held.db"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom pymilvus import MilvusClient\n"
        f"MilvusClient({str(db)!r}).list_collections()\nprint('ready', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        env = dict(os.environ, RAG_MILVUS_URI=str(db), RAG_STORE="milvus")
        r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "退货", "--index", str(tmp_path / "kb")],
                           env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "另一个进程" in r.stderr, r.stderr
    finally:
        holder.kill()
        holder.wait()


def test_unknown_store_is_a_user_error(tmp_path):
    env = dict(os.environ, RAG_STORE="elastic")
    r = subprocess.run([sys.executable, "-m", "rag.cli", "ask", "退货", "--index", str(tmp_path / "kb")],
                       env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "RAG_STORE" in r.stderr, r.stderr


def test_expansion_weight_rides_on_query_word_counts():
    from rag.milvus_store import bm25_query, collection_name, search_text

    assert bm25_query("邮费谁出？", "运费", 0.5) == "邮费谁出 邮费谁出 运费"
    assert bm25_query("邮费谁出", "运费", 0.0) == "邮费谁出"
    assert bm25_query("邮费谁出", "", 0.5) == "邮费谁出"
    assert search_text("ＡＢＣ１５日，退货！") == "abc15日 退货"
    assert collection_name(Settings().with_(index_dir="/srv/kb/index")) == "kb_index"
    taobao, jd = (collection_name(Settings().with_(index_dir=f"/srv/kb/{n}")) for n in ("淘宝", "京东"))
    assert taobao != jd and taobao.startswith("kb____") and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", taobao)
    assert collection_name(Settings().with_(index_dir="/x", milvus_collection="shop_a")) == "shop_a"


@pytest.mark.parametrize("weight, found", [(0.5, True), (0.0, False)])
def test_lexicon_hints_reach_the_legal_term_on_milvus(tmp_path, weight, found):
    from rag import milvus_store
    from rag.pipeline import Assistant

    write_corpus(tmp_path / "corpus", {"laws/mini.md": (
        "---\ntitle: 迷你法\nkind: law\n---\n# 迷你法\n\n"
        "第一条 消费者退货的，商品退回所产生的运费由消费者承担。\n\n"
        "第二条 本法自公布之日起施行，解释权归起草单位。\n")})
    s = Settings().with_(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "mini", store="milvus",
                         milvus_uri=str(tmp_path / "m.db"), embedding_cache=tmp_path / "emb.sqlite3")
    try:
        build_index(s)
        r = Assistant(s.with_(expansion_weight=weight)).ask("邮费谁出", mode="keyword")
        assert any("运费" in p["text"] for p in r["retrieved"]) is found
    finally:
        milvus_store.close(s)


def test_milvus_retrieval_matches_faiss_on_the_shipped_corpus(shipped_settings, tmp_path):
    """Same corpus, same vectors: the engine's hybrid ranking finds what FAISS finds, and refuses alike."""
    from eval.metrics import score
    from eval.run import load_questions
    from rag import milvus_store
    from rag.pipeline import Assistant

    qs = load_questions(REPO_ROOT / "eval" / "questions.jsonl", "tuning")[:60]
    mv = shipped_settings.with_(index_dir=tmp_path / "shipped", store="milvus", milvus_uri=str(tmp_path / "s.db"))
    try:
        build_index(mv)
        runs = {}
        for name, s in (("faiss", shipped_settings), ("milvus", mv)):
            a = Assistant(s)
            runs[name] = {q["id"]: a.ask(q["question"], qid=q["id"]) for q in qs}
        m = {name: score(qs, res, corpus_dir=shipped_settings.corpus_dir) for name, res in runs.items()}
        assert abs(m["milvus"]["recall@5"] - m["faiss"]["recall@5"]) <= 0.05, m
        assert abs(m["milvus"]["mrr@10"] - m["faiss"]["mrr@10"]) <= 0.05, m
        assert [runs["milvus"][q["id"]]["refused"] for q in qs] == [runs["faiss"][q["id"]]["refused"] for q in qs]
        diffs = {i: (runs["milvus"][i]["confidence"], runs["faiss"][i]["confidence"]) for i in runs["faiss"]}
        assert all(abs(a - b) < 1e-3 for a, b in diffs.values()), {i: d for i, d in diffs.items() if abs(d[0] - d[1]) >= 1e-3}
    finally:
        milvus_store.close(mv)


def test_health_and_document_list_describe_the_milvus_index(kb):
    """The API's health and the administrator's document list read the serving Milvus collection,
    not FAISS files that a Milvus deployment does not have."""
    import httpx

    from conftest import free_port
    from rag.auth import AdminPassword, KeyStore, hash_password
    from ui.server import serve

    build_index(kb)
    _, admin_key = KeyStore.for_settings(kb).create("运维", "admin")
    running = serve(kb, port=free_port(), block=False, admin=AdminPassword(hash_password("admin-pass-123")))
    try:
        base = running.url.rstrip("/")
        health = httpx.get(base + "/api/v1/health", timeout=30)
        assert health.status_code == 200
        h = health.json()
        assert h["store"] == "milvus" and h["index_version"].startswith("kb_kb1__a@mv-")
        assert h["documents"] == 2 and h["chunks"] == 3 and "e5" in h["model"]
        docs = httpx.get(base + "/api/v1/kb/documents", headers={"Authorization": f"Bearer {admin_key}"},
                         timeout=30).json()
        assert docs["index_version"] == h["index_version"]
        assert [d["source"] for d in docs["documents"]] == ["guides/g.md", "laws/a.md"]
    finally:
        running.close()
