"""The Milvus store: one collection per knowledge base, on Milvus Lite (a local file) or a Milvus server.

Rows (one collection, ``kb_<index name>`` by default, or ``RAG_MILVUS_COLLECTION``):

- one **passage row** per chunk: the chunk's metadata as fields (source, title, kind, section,
  article, start, end, part, heading path, text, typical questions), its passage vector, and
  ``search`` = the chunk text and its typical questions for Milvus' own BM25 (jieba analyzer);
- one **question row** per typical question, ``chunk`` pointing at its passage row, with the
  question's vector (embedded like a query) and the same ``search`` text as its chunk;
- **meta rows** holding the manifest (written last: a collection without them is incomplete).

Row ids are content hashes (model, vector key, every field), so a rebuild compares ids only:
rows whose id is new are upserted, rows whose id is gone are deleted, and an unchanged corpus
(same manifest digest in the serving collection) writes nothing.

Versions: the name ``kb_x`` is an **alias** of one of two physical collections, ``kb_x__a`` and
``kb_x__b``. A rebuild synchronises the one that is *not* serving (which holds the version
before last, so the difference is small), verifies it and only then moves the alias. A rebuild
killed midway leaves the alias, and so the served collection, untouched; the next rebuild
repairs the half-written standby by the same id comparison.

Retrieval (``engine_search``): one ``hybrid_search`` — dense inner product over passage and
question rows + BM25 over ``search`` — fused by Milvus' ``RRFRanker``. Done on the client, on the
engine's candidates, because the engine cannot express them:

- best of passage / question rows per chunk (the engine ranks rows; a chunk scores its best row);
- the lexicon expansion's weight (0.5): RRF has no weights, and BM25 scores a query word by how
  often it occurs in the query, so the asked words are sent 1/weight times (2×) and the
  lexicon's words once — one BM25 list whose scores equal the FAISS store's asked + 0.5·added;
- the guide → article score passing (``rag/retrieve.py``, ``guide_basis``), the top-k cut and
  the refusal confidence, from the raw cosines of one plain dense search (the same vectors and
  the same inner products as FAISS, so the confidence needs no recalibration).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np

from .chunking import Chunk
from .config import Settings
from .documents import DocumentError
from .index import (FORMAT_VERSION, REBUILD, BuildReport, IndexError_, build_lock, choose_index_type, collect_chunks,
                    embed_missing, entries_for, load_typical_questions, text_hash)
from .keyword import STOPWORDS, tokenize

log = logging.getLogger(__name__)
SCHEMA = 1  # bump when fields change: an older collection is dropped and written anew
ROW_PASSAGE, ROW_QUESTION, ROW_META = 0, 1, 2
META_PART = 20_000  # characters of manifest JSON per meta row (VARCHAR holds 65,535 bytes)
BATCH = 500
SIDES = ("a", "b")
POLL_S = 1.0  # how often a serving process asks which collection the alias points at
_PUNCT = re.compile(r"[\s\W_]+", re.U)
ANALYZER = {"tokenizer": {"type": "jieba", "mode": "search"},
            "filter": ["lowercase", "removepunct", {"type": "stop", "stop_words": sorted(STOPWORDS)}]}
HINT = "请检查 RAG_MILVUS_URI（本地文件路径，以 .db 结尾，用 Milvus Lite；或 http://主机:19530）和 RAG_MILVUS_TOKEN"
_clients: dict[tuple[str, str], object] = {}
_clients_lock = threading.Lock()


class MilvusError(IndexError_):
    """Milvus unreachable, locked or inconsistent; one Chinese sentence (the CLI exits 2)."""


def search_text(text: str) -> str:
    """What Milvus' analyzer sees: NFKC + lower case like rag/keyword.py, punctuation as spaces."""
    return _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def bm25_query(question: str, added: str, weight: float) -> str:
    """One BM25 query text for asked words at weight 1 and the lexicon's words at ``weight``.

    Milvus scores a query word by its count in the query, so repeating the question r = 1/weight
    times gives the asked words r times the lexicon words' weight (r = 2 for the default 0.5)."""
    asked = search_text(question)
    added = search_text(added) if weight > 0 else ""
    if not added:
        return asked
    reps = max(1, min(8, round(1.0 / weight)))
    return " ".join([asked] * reps + [added])


def resolve_uri(settings: Settings) -> tuple[str, bool]:
    """(uri, is_lite). Default: Milvus Lite in ``<index_dir>/milvus.db``."""
    uri = (settings.milvus_uri or "").strip() or str(Path(settings.index_dir) / "milvus.db")
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri):
        if not uri.startswith(("http://", "https://", "tcp://", "unix://")):
            raise MilvusError(f"Milvus 地址 {uri} 无法识别。{HINT}")
        return uri, False
    path = Path(uri).expanduser()
    if path.suffix != ".db":
        raise MilvusError(f"Milvus Lite 的数据文件名应以 .db 结尾（收到 {uri}）。{HINT}")
    if not path.parent.is_dir():
        if path.parent == Path(settings.index_dir):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                raise MilvusError(f"无法建立文件夹 {path.parent}，Milvus Lite 的数据文件放不下。{HINT}") from None
        else:
            raise MilvusError(f"Milvus Lite 的数据文件夹 {path.parent} 不存在。{HINT}")
    return str(path.resolve()), True


def collection_name(settings: Settings) -> str:
    """``kb_<name of --index>`` (letters, digits, _), or RAG_MILVUS_COLLECTION: the same on every replica."""
    raw = settings.milvus_collection or "kb_" + Path(settings.index_dir).name
    name = re.sub(r"[^0-9A-Za-z_]", "_", raw)
    if name != raw:  # 淘宝 and 京东 must not both become kb___
        name += "_" + hashlib.sha1(raw.encode("utf-8")).hexdigest()[:8]
    if not re.match(r"[A-Za-z_]", name):
        name = "kb_" + name
    if len(name) > 200:
        name = name[:191] + "_" + hashlib.sha1(raw.encode()).hexdigest()[:8]
    return name


def connect(settings: Settings):
    """A MilvusClient for the settings' URI, shared in this process; MilvusError in Chinese when it can't be had."""
    uri, lite = resolve_uri(settings)
    token = os.environ.get("RAG_MILVUS_TOKEN", "")
    with _clients_lock:
        client = _clients.get((uri, token))
        if client is not None:
            return client
        try:
            logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
            import jieba

            jieba.setLogLevel(logging.WARNING)  # Milvus Lite's analyzer uses this module; loaded only when text is analysed
            from pymilvus import MilvusClient

            for name in ("pymilvus", "pymilvus.client.iterator.query_iterator"):  # its iterator warns on Milvus Lite
                logging.getLogger(name).setLevel(logging.CRITICAL)
            if lite:  # Milvus Lite's in-process gRPC server logs the iterator's AllocTimestamp probe as an error
                logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
        except ImportError:
            raise MilvusError("没有安装 pymilvus：请运行 pip install pymilvus milvus-lite（或 make install）") from None
        try:
            client = MilvusClient(uri=uri, token=token, timeout=float(os.environ.get("RAG_MILVUS_TIMEOUT", "10")))
            client.list_collections()
        except Exception as e:  # pymilvus raises its own exception types, and gRPC ones
            reason = getattr(e, "message", None) or str(e)
            if lite and "Open local milvus failed" in reason and Path(uri).exists():
                raise MilvusError(f"无法打开 Milvus Lite 数据文件 {uri}：它可能正被另一个进程使用（Milvus Lite "
                                  f"同一时间只允许一个进程打开，例如正在运行的 rag serve）。请先停止那个进程，"
                                  f"或在网页的知识库页重建，或改用 Milvus 服务（http://主机:19530）") from None
            raise MilvusError(f"无法连接 Milvus（{uri}）：{reason}。{HINT}") from None
        _clients[(uri, token)] = client
        return client


def close(settings: Settings) -> None:
    """Drop this process's client for the settings' URI; for Milvus Lite also stop its in-process server,
    which releases the data file's lock (another process, e.g. ``rag index``, may then open it)."""
    uri, lite = resolve_uri(settings)
    with _clients_lock:
        for key in [k for k in _clients if k[0] == uri]:
            client = _clients.pop(key)
            try:
                client.close()
            except Exception:
                pass
    if lite:
        try:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(uri)
        except ImportError:
            pass


def _h(*parts) -> str:
    return hashlib.sha1("\x00".join(str(p) for p in parts).encode("utf-8")).hexdigest()


def _schema(client, dim: int):
    from pymilvus import DataType, Function, FunctionType

    s = client.create_schema(auto_id=False, enable_dynamic_field=False, description=f"shouhou-rag schema {SCHEMA}")
    # (the names must stay those in SCHEMA_FIELDS)
    s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    s.add_field("chunk", DataType.VARCHAR, max_length=64)  # owner passage row (own id for a passage)
    s.add_field("row", DataType.INT8)  # 0 passage, 1 typical question, 2 meta
    s.add_field("vkey", DataType.VARCHAR, max_length=64)  # embedding key: model id + embedded text
    s.add_field("search", DataType.VARCHAR, max_length=65535, enable_analyzer=True, analyzer_params=ANALYZER)
    s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    s.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
    for name, size in (("source", 1024), ("title", 1024), ("kind", 16), ("section", 1024), ("article", 256)):
        s.add_field(name, DataType.VARCHAR, max_length=size)
    for name in ("start", "end", "part"):
        s.add_field(name, DataType.INT64)
    s.add_field("heading_path", DataType.VARCHAR, max_length=8192)  # JSON list
    s.add_field("body", DataType.VARCHAR, max_length=65535)  # chunk text / question text / manifest part
    s.add_field("questions", DataType.VARCHAR, max_length=65535)  # JSON list (passage rows)
    s.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["search"],
                            output_field_names=["sparse"]))
    return s


SCHEMA_FIELDS = {"id", "chunk", "row", "vkey", "search", "sparse", "dense", "source", "title", "kind", "section",
                 "article", "start", "end", "part", "heading_path", "body", "questions"}


def _dense_index(n_rows: int, settings: Settings, lite: bool) -> tuple[dict, dict]:
    """(index params, search params) for the dense field, following RAG_ANN like the FAISS store."""
    kind = choose_index_type(n_rows, settings.ann, settings.ann_min_vectors, settings.ann_ivf_min_vectors)
    if kind == "hnsw":
        return ({"index_type": "HNSW", "metric_type": "IP", "params": {"M": 32, "efConstruction": 80}},
                {"metric_type": "IP", "params": {"ef": 128}})
    if kind == "ivf":
        nlist = max(1, min(65536, int(2 ** round(np.log2(4 * np.sqrt(max(n_rows, 1)))))))
        return ({"index_type": "IVF_FLAT", "metric_type": "IP", "params": {"nlist": nlist}},
                {"metric_type": "IP", "params": {"nprobe": 48}})
    return {"index_type": "FLAT", "metric_type": "IP", "params": {}}, {"metric_type": "IP", "params": {}}


def _chunk_key(model_id: str, c: Chunk) -> str:
    d = c.to_dict()
    d.pop("id", None)
    return "p" + _h(model_id, json.dumps(d, ensure_ascii=False, sort_keys=True))[:40]


def desired_rows(chunks: list[Chunk], keys: list[str], model_id: str) -> list[dict]:
    """Every row of the version being built, without vectors (row i of entries_for = keys[i])."""
    rows = []
    chunk_keys = [_chunk_key(model_id, c) for c in chunks]
    searches = [search_text(c.embed_text + "\n" + "\n".join(c.meta.get("questions", []))) for c in chunks]
    for i, c in enumerate(chunks):
        rows.append({
            "id": chunk_keys[i], "chunk": chunk_keys[i], "row": ROW_PASSAGE, "vkey": keys[i], "search": searches[i],
            "source": c.source, "title": c.title, "kind": c.kind, "section": c.section, "article": c.article or "",
            "start": c.start, "end": c.end, "part": c.part, "heading_path": json.dumps(c.heading_path, ensure_ascii=False),
            "body": c.text, "questions": json.dumps(c.meta.get("questions", []), ensure_ascii=False)})
    e = len(chunks)
    for i, c in enumerate(chunks):
        for q in c.meta.get("questions", []):
            rows.append({
                "id": "q" + _h(chunk_keys[i], keys[e], q)[:40], "chunk": chunk_keys[i], "row": ROW_QUESTION,
                "vkey": keys[e], "search": searches[i], "source": c.source, "title": "", "kind": c.kind,
                "section": "", "article": "", "start": 0, "end": 0, "part": 0, "heading_path": "[]", "body": q,
                "questions": "[]"})
            e += 1
    return rows


def _meta_rows(manifest: dict, dim: int) -> list[dict]:
    text = json.dumps(manifest, ensure_ascii=False)
    parts = [text[i:i + META_PART] for i in range(0, len(text), META_PART)] or [""]
    zero = [0.0] * dim
    return [{"id": f"meta-{j:05d}-of-{len(parts):05d}", "chunk": "", "row": ROW_META, "vkey": "", "search": "",
             "dense": zero, "source": "", "title": "", "kind": "", "section": "", "article": "", "start": 0, "end": 0,
             "part": j, "heading_path": "[]", "body": p, "questions": "[]"} for j, p in enumerate(parts)]


def ensure_loaded(client, name: str) -> None:
    """Milvus serves only loaded collections; a reopened Milvus Lite file starts with all of them released."""
    try:
        state = str(client.get_load_state(name).get("state", ""))
    except Exception:
        state = ""
    if "Loaded" not in state or "NotLoad" in state:
        client.load_collection(name)


def _read_manifest(client, name: str) -> dict | None:
    try:
        ensure_loaded(client, name)
        rows = client.query(name, filter=f"row == {ROW_META}", output_fields=["id", "body", "part"],
                            consistency_level="Strong")
    except Exception:
        return None
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: r["part"])
    want = rows[0]["id"].rsplit("-of-", 1)[-1]
    if len(rows) != int(want) if want.isdigit() else True:
        return None
    try:
        m = json.loads("".join(r["body"] for r in rows))
    except ValueError:
        return None
    return m if isinstance(m, dict) else None


def _all_ids(client, name: str) -> set[str]:
    out: set[str] = set()
    it = client.query_iterator(name, batch_size=5000, filter="", output_fields=["id"])
    try:
        while True:
            page = it.next()
            if not page:
                break
            out.update(r["id"] for r in page)
    finally:
        it.close()
    return out


class MilvusStore:
    kind = "milvus"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = collection_name(settings)
        self._client = None
        self._polled: tuple[float, str | None] | None = None

    @property
    def client(self):
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def side(self, which: str) -> str:
        return f"{self.name}__{which}"

    def serving(self) -> str | None:
        """The physical collection the alias points at (None: no index yet)."""
        c = self.client
        try:
            return c.describe_alias(self.name).get("collection_name") or None
        except Exception:
            return None

    def current(self) -> str | None:
        """The serving version ("<collection>@<manifest version>"), asked of Milvus at most once per POLL_S."""
        now = time.monotonic()
        if self._polled is not None and now - self._polled[0] < POLL_S:
            return self._polled[1]
        name = self.serving()
        version = None
        if name is not None:
            m = _read_manifest(self.client, name)
            version = f"{name}@{m.get('version')}" if m else None
        self._polled = (now, version)
        return version

    def open(self, model_id: str | None = None) -> "MilvusView":
        name = self.serving()
        if name is None:
            raise MilvusError(f"在 Milvus（{resolve_uri(self.settings)[0]}）中没有找到知识库 {self.name} 的索引。"
                              f"请先运行 `rag index --store milvus` 建立索引")
        manifest = _read_manifest(self.client, name)
        if manifest is None:
            raise MilvusError(f"Milvus 集合 {name} 的清单缺失或已损坏。{REBUILD}")
        if manifest.get("format") != FORMAT_VERSION or manifest.get("schema") != SCHEMA:
            raise MilvusError(f"Milvus 中的索引格式版本不符。{REBUILD}")
        if manifest.get("chunker") != self.settings.chunker_id():
            raise MilvusError(f"索引是用另一套切分设置建立的。{REBUILD}")
        if model_id is not None and manifest.get("model_id") != model_id:
            raise MilvusError(f"索引是用另一个向量模型（{manifest.get('model_id')}）建立的。{REBUILD}")
        self._polled = None
        return MilvusView(self, name, manifest)

    def manifest(self) -> dict | None:
        name = self.serving()
        return _read_manifest(self.client, name) if name else None

    def stats(self) -> dict:
        name = self.serving()
        out = {"store": "milvus", "where": resolve_uri(self.settings)[0], "collection": self.name, "serving": name}
        if name:
            m = _read_manifest(self.client, name) or {}
            out.update(version=m.get("version"), documents=len(m.get("documents", {})), chunks=m.get("chunks"),
                       rows=m.get("entries"))
        return out

    # ------------------------------------------------------------------ building

    def build(self, embedder=None, progress=None, strict: bool = False, wait: bool = False) -> BuildReport:
        t0 = time.time()
        s = self.settings
        index_dir = Path(s.index_dir)
        with build_lock(index_dir, wait=wait):  # one builder per machine; across machines see docs/deploy-milvus.md
            docs, chunks, skipped, hashes, warnings = collect_chunks(s, strict=strict)
            if not docs:
                raise DocumentError(f"知识库文件夹 {s.corpus_dir} 里没有可索引的文档")
            tq_hashes = load_typical_questions(s, chunks)
            from .embedding import model_id_for

            model_id = embedder.model_id if embedder is not None else model_id_for(s)
            entries, owners = entries_for(chunks)
            keys = [text_hash(model_id, ("Q\x00" if is_q else "P\x00") + t) for t, is_q in entries]
            rows = desired_rows(chunks, keys, model_id)
            ids = [r["id"] for r in rows]
            manifest = {
                "format": FORMAT_VERSION, "schema": SCHEMA, "store": "milvus", "model_id": model_id,
                "chunker": s.chunker_id(), "keyword": "milvus-bm25-jieba",
                "documents": {d.source: {"sha256": hashes[d.source], "title": d.title, "kind": d.kind,
                                         "chunks": sum(1 for c in chunks if c.source == d.source)} for d in docs},
                "typical_questions": tq_hashes,
                "skipped": [{"file": f, "reason": r} for f, r in skipped],
                "warnings": warnings, "chunks": len(chunks), "entries": len(entries),
            }
            digest = _h(json.dumps(manifest, ensure_ascii=False, sort_keys=True), *sorted(ids))
            client = self.client
            serving = self.serving()
            old_manifest = _read_manifest(client, serving) if serving else None
            if old_manifest is not None and old_manifest.get("digest") == digest:
                if progress:
                    progress(len(entries), len(entries))
                return BuildReport(documents=len(docs), chunks=len(chunks), reused=len(entries), embedded=0,
                                   skipped=skipped, seconds=time.time() - t0, version=f"{serving}@{old_manifest['version']}",
                                   unchanged=True, warnings=warnings)
            target = self.side("b" if serving == self.side("a") else "a")
            existing = self._standby_ids(target, model_id)  # None: (re)create it
            # The standby's manifest goes first: until the new one is written last, it is incomplete.
            have = existing or set()
            todo_rows = [r for r in rows if r["id"] not in have]
            vectors, embedded = self._vectors_for(todo_rows, entries, keys, serving, embedder, progress)
            dim = vectors.shape[1] if todo_rows else self._dim(target)
            if existing is None:
                self._create(target, len(rows), dim)
            stale = sorted((have - set(ids)) | {i for i in have if i.startswith("meta-")})
            for i in range(0, len(stale), BATCH):
                client.delete(target, ids=stale[i:i + BATCH])
            for i in range(0, len(todo_rows), BATCH):
                batch = [dict(r, dense=vectors[j].tolist()) for j, r in enumerate(todo_rows[i:i + BATCH], start=i)]
                client.upsert(target, batch)
            version = f"mv-{time.strftime('%Y%m%d-%H%M%S')}-{digest[:8]}"
            manifest.update(digest=digest, version=version, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                            collection=target)
            client.insert(target, _meta_rows(manifest, dim))
            client.flush(target)
            self._verify(target, len(rows), digest)
            if serving is None:
                try:
                    client.create_alias(target, self.name)
                except Exception:
                    client.alter_alias(target, self.name)
            else:
                client.alter_alias(target, self.name)
            self._polled = None
        return BuildReport(documents=len(docs), chunks=len(chunks), reused=len(entries) - embedded, embedded=embedded,
                           skipped=skipped, seconds=time.time() - t0, version=f"{target}@{version}", warnings=warnings)

    def _dim(self, name: str) -> int:
        for f in self.client.describe_collection(name).get("fields", []):
            if f.get("name") == "dense":
                return int(f.get("params", {}).get("dim"))
        raise MilvusError(f"Milvus 集合 {name} 没有向量字段。{REBUILD}")

    def _standby_ids(self, target: str, model_id: str) -> set[str] | None:
        """The ids the standby collection holds; None when it must be (re)created (missing, other schema or model)."""
        c = self.client
        if c.has_collection(target):
            fields = {f.get("name") for f in c.describe_collection(target).get("fields", [])}
            ok = fields == SCHEMA_FIELDS  # a half-written standby has no manifest yet: its fields tell
            if ok:
                m = _read_manifest(c, target)
                ok = m is None or (m.get("schema") == SCHEMA and m.get("model_id") == model_id)
                if ok:
                    return _all_ids(c, target)
            c.drop_collection(target)
        return None

    def _create(self, target: str, n_rows: int, dim: int) -> None:
        c = self.client
        idx, _ = _dense_index(n_rows, self.settings, resolve_uri(self.settings)[1])
        params = c.prepare_index_params()
        params.add_index("dense", index_type=idx["index_type"], metric_type="IP", params=idx["params"])
        params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                         params={"bm25_k1": 1.2, "bm25_b": 0.75})  # the FAISS store's BM25 parameters
        c.create_collection(target, schema=_schema(c, dim), index_params=params, consistency_level="Bounded")

    def _vectors_for(self, todo_rows, entries, keys, serving, embedder, progress) -> tuple[np.ndarray, int]:
        """Vectors of the rows to write: from the serving collection (same vector key), else the cache or the model."""
        if not todo_rows:
            return np.zeros((0, 1), np.float32), 0
        want = sorted({r["vkey"] for r in todo_rows})
        old: dict[str, np.ndarray] = {}
        if serving is not None:
            for i in range(0, len(want), BATCH):
                part = want[i:i + BATCH]
                expr = "vkey in [" + ",".join(json.dumps(k) for k in part) + "]"
                for r in self.client.query(serving, filter=expr, output_fields=["vkey", "dense"]):
                    old[r["vkey"]] = np.asarray(r["dense"], dtype=np.float32)
        by_key = {k: i for i, k in enumerate(keys)}
        sub_entries = [entries[by_key[k]] for k in want]
        vecs, todo, _ = embed_missing(self.settings, sub_entries, want, old, embedder, progress)
        pos = {k: i for i, k in enumerate(want)}
        return np.stack([vecs[pos[r["vkey"]]] for r in todo_rows]), len(todo)

    def _verify(self, target: str, n_rows: int, digest: str) -> None:
        c = self.client
        res = c.query(target, filter="", output_fields=["count(*)"], consistency_level="Strong")
        count = int(res[0]["count(*)"]) if res else -1
        m = _read_manifest(c, target)
        metas = len(_meta_rows(m, 1)) if m else 0
        if m is None or m.get("digest") != digest or count != n_rows + metas:
            raise MilvusError(f"写入 Milvus 集合 {target} 后核对失败（行数 {count}，应为 {n_rows + metas}），"
                              f"正在服务的索引没有改变。{REBUILD}")


class _KeywordAdapter:
    """``kw_index`` for rag/retrieve.py on Milvus: BM25 scores per chunk and the corpus vocabulary."""

    def __init__(self, view: "MilvusView"):
        self.view = view

    @property
    def vocab(self):
        return self.view.vocab

    def scores(self, tokens: list[str]) -> np.ndarray:
        return self.view.keyword_search(tokens)


class MilvusView:
    """One served version: chunk metadata held here (guide passing and hits need it), search in Milvus."""

    kind = "milvus"

    def __init__(self, store: MilvusStore, collection: str, manifest: dict):
        self.store = store
        self.client = store.client
        self.collection = collection
        self.manifest = manifest
        self.settings = store.settings
        self._vocab = None
        order = {src: i for i, src in enumerate(manifest.get("documents", {}))}
        rows = []
        it = self.client.query_iterator(collection, batch_size=5000, filter=f"row == {ROW_PASSAGE}",
                                        output_fields=["id", "source", "title", "kind", "section", "article", "start",
                                                       "end", "part", "heading_path", "body", "questions"])
        try:
            while True:
                page = it.next()
                if not page:
                    break
                rows.extend(page)
        finally:
            it.close()
        rows.sort(key=lambda r: (order.get(r["source"], len(order)), r["start"], r["part"]))
        self.chunks: list[Chunk] = []
        self.position: dict[str, int] = {}
        for i, r in enumerate(rows):
            qs = json.loads(r["questions"] or "[]")
            self.chunks.append(Chunk(id=str(i), source=r["source"], title=r["title"], kind=r["kind"],
                                     section=r["section"], heading_path=json.loads(r["heading_path"] or "[]"),
                                     article=r["article"] or None, start=int(r["start"]), end=int(r["end"]),
                                     text=r["body"], part=int(r["part"]), meta={"questions": qs} if qs else {}))
            self.position[r["id"]] = i
        if len(self.chunks) != manifest.get("chunks"):
            raise MilvusError(f"Milvus 集合 {collection} 中的片段数与清单不一致。{REBUILD}")
        n_rows = int(manifest.get("entries") or len(self.chunks))
        _, self.search_params = _dense_index(n_rows, self.settings, resolve_uri(self.settings)[1])

    @property
    def version(self) -> str:
        return f"{self.collection}@{self.manifest.get('version')}"

    @property
    def path(self) -> Path:
        return Path(self.settings.index_dir)

    def fetch(self, ids) -> list[Chunk]:
        return [self.chunks[int(i)] for i in ids]

    @property
    def vocab(self) -> set[str]:
        """Words of the sources, by rag/keyword.py's tokenizer (rag/gaps.py asks it); computed on first use."""
        if self._vocab is None:
            self._vocab = {t for c in self.chunks for t in tokenize(c.embed_text)}
        return self._vocab

    def keyword_index(self, typical_questions: bool = True) -> _KeywordAdapter:
        return _KeywordAdapter(self)

    def stats(self) -> dict:
        return {"store": "milvus", "where": resolve_uri(self.settings)[0], "collection": self.collection,
                "version": self.version, "documents": len(self.manifest.get("documents", {})),
                "chunks": len(self.chunks), "rows": self.manifest.get("entries")}

    # ------------------------------------------------------------------ search

    def _positions(self, hits) -> list[tuple[int, float, dict]]:
        out = []
        for h in hits:
            ent = h.get("entity", {})
            pos = self.position.get(ent.get("chunk"))
            if pos is not None:
                out.append((pos, float(h["distance"]), ent))
        return out

    def dense_search(self, query_vector: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Best passage cosine and best typical-question cosine per chunk (-1 = not among the top ``depth``).

        Two searches, passage rows and question rows, like the FAISS store's two indexes: one search over
        all rows would be almost all typical questions (they are embedded like queries, so they sit closer
        to a query than any passage) and the best passage, which the confidence needs, would be missing."""
        n = len(self.chunks)
        out = []
        qv = [np.asarray(query_vector, np.float32).tolist()]
        for row in (ROW_PASSAGE, ROW_QUESTION):
            arr = np.full(n, -1.0, dtype=np.float32)
            res = self.client.search(self.collection, data=qv, anns_field="dense", limit=min(depth, 16384),
                                     filter=f"row == {row}", search_params=self.search_params, output_fields=["chunk"])
            for pos, sim, _ in self._positions(res[0]):
                if sim > arr[pos]:
                    arr[pos] = sim
            out.append(arr)
        return out[0], out[1]

    def keyword_search(self, tokens: list[str], typical_questions: bool = True) -> np.ndarray:
        """Milvus BM25 per chunk for the words (bigram tokens dropped: Milvus' analyzer has its own words)."""
        n = len(self.chunks)
        out = np.zeros(n, dtype=np.float32)
        text = search_text(" ".join(t for t in tokens if not t.startswith("§")))
        if not text:
            return out
        res = self.client.search(self.collection, data=[text], anns_field="sparse", limit=max(self.settings.candidates, 50),
                                 search_params={"metric_type": "BM25"}, output_fields=["chunk"])
        for pos, score, _ in self._positions(res[0]):
            out[pos] = max(out[pos], abs(score))  # Milvus Lite reports BM25 as a negative distance
        return out

    def engine_search(self, query_vector: np.ndarray, question: str, added: str, s: Settings):
        """Hybrid in the engine: (fused, passage cosine, question cosine, keyword) per chunk; see the module doc."""
        from pymilvus import AnnSearchRequest, RRFRanker

        n = len(self.chunks)
        depth = max(s.candidates * 4, 200)
        qv = np.asarray(query_vector, np.float32).tolist()
        rows_filter = "" if s.typical_questions else f"row == {ROW_PASSAGE}"
        # Each engine list as deep as each FAISS list (candidates); deeper lists measured no better on the
        # tuning split (150 rows: recall@5 0.933 vs 0.948 at 50).
        dense_limit = bm25_limit = s.candidates
        reqs = [AnnSearchRequest(data=[qv], anns_field="dense", param=self.search_params, limit=dense_limit,
                                 expr=rows_filter or None)]
        text = bm25_query(question, added, s.expansion_weight)
        if text:
            reqs.append(AnnSearchRequest(data=[text], anns_field="sparse", param={"metric_type": "BM25"},
                                         limit=bm25_limit, expr=rows_filter or None))
        res = self.client.hybrid_search(self.collection, reqs, ranker=RRFRanker(s.rrf_k),
                                        limit=dense_limit + bm25_limit, output_fields=["chunk"])
        fused = np.zeros(n, dtype=np.float64)
        for pos, score, _ in self._positions(res[0]):
            if score > fused[pos]:
                fused[pos] = score  # a chunk scores its best row (client-side best-of)
        dense, dense_q = self.dense_search(query_vector, depth)
        if not s.typical_questions:
            dense_q[:] = -1.0
        return fused, dense, dense_q, np.zeros(n, dtype=np.float32)
