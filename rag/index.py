"""Building, persisting and loading the search index (FAISS + BM25 + chunk metadata).

Layout of an index folder::

    index/CURRENT            name of the version that serves
    index/v-<time>-<pid>/    one complete, verified version
        chunks.jsonl vectors.npy owners.npy keys.json dense.faiss questions.faiss bm25/ bm25q/
        manifest.json (written last)
    index/.lock              held while a rebuild runs

Why versions: a rebuild writes a new folder beside the serving one and only
flips CURRENT (an atomic rename) once the new one is complete and verified, so
a crash or SIGKILL at any moment leaves the previous index loadable. Vectors of
unchanged chunks are reused from the previous version (keyed by model id +
embedded text hash), which makes an unchanged rebuild take seconds.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chunking import Chunk, chunk_document
from .config import Settings
from .docbase import top_folder
from .documents import DocumentError, discover, guess_kind, load_document
from .embed_cache import open_cache
from .keyword import KeywordIndex

log = logging.getLogger(__name__)
FORMAT_VERSION = 2
KEYWORD_MODE = "jieba+bigram"
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
# IVF-Flat above ann_ivf_min_vectors: HNSW's build grows to minutes there on two cores (estimated ~500 s at
# 1M), while IVF trains on a 100k sample and builds 1M in about a minute. nprobe 48 is one step above the
# smallest setting that reached recall@10 ≥ 0.95 at 100k and 1M in eval/bench.py (32), for margin.
IVF_NPROBE = 48
REBUILD = "请运行 `rag index` 重新建立索引"
# What CURRENT may name: a version folder written by build_index (no path separators, no ..).
VERSION_NAME = re.compile(r"v-[0-9A-Za-z_-]+")
# Folders whose files win when two files have the same content (see README: laws/ and guides/).
CANONICAL_FOLDERS = ("laws", "guides")
STRICT_HINT = "（用 `rag index --strict` 可让这类问题直接失败）"


def ivf_train_size(n: int, nlist: int) -> int:
    """At least 40 points per list (below 39 faiss warns), at least 100k, at most all vectors."""
    return min(n, max(100_000, 40 * nlist))


class IndexError_(RuntimeError):
    """The index is missing, damaged or incompatible; the message says to rebuild."""


class IndexBusy(RuntimeError):
    pass


@dataclass
class BuildReport:
    documents: int = 0
    chunks: int = 0
    reused: int = 0
    embedded: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    version: str = ""
    unchanged: bool = False
    # Corpus problems a maintainer must not miss (a law left out, two copies of one document):
    # printed as 警告 lines; ``strict`` turns them into failures.
    warnings: list[str] = field(default_factory=list)
    # What the build repaired on its own (previous vectors that failed their check): 注意 lines.
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"文档 {self.documents} 篇，片段 {self.chunks} 个；复用向量 {self.reused}，新计算 {self.embedded}；"
            f"用时 {self.seconds:.1f} 秒；版本 {self.version}",
        ]
        for name, why in self.skipped:
            lines.append(f"  跳过 {name}: {why}")
        lines += [f"注意：{n}" for n in self.notes]
        lines += [f"警告：{w}" for w in self.warnings]
        if self.warnings:
            lines.append(STRICT_HINT)
        return "\n".join(lines)


def text_hash(model_id: str, text: str) -> str:
    return hashlib.sha1(f"{model_id}\x00{text}".encode("utf-8")).hexdigest()


@dataclass
class LoadedIndex:
    path: Path
    manifest: dict
    chunks: list[Chunk]
    vectors: np.ndarray  # one row per entry: chunks first, then typical questions
    owners: np.ndarray  # entry row -> chunk index
    faiss_index: object  # passage vectors (row i = chunk i)
    question_index: object  # typical-question vectors (row j = entry n + j)
    keyword: KeywordIndex  # chunk text only
    keyword_q: KeywordIndex  # chunk text + typical questions

    kind = "faiss"

    @property
    def version(self) -> str:
        return self.path.name

    # The store-view surface (rag/store.py).
    def fetch(self, ids) -> list[Chunk]:
        return [self.chunks[int(i)] for i in ids]

    @property
    def vocab(self):
        return self.keyword.vocab

    def dense_search(self, query_vector: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """Best cosine per chunk: (its passage vector, its best typical question); -1 = not in the candidates."""
        n = len(self.chunks)
        q = query_vector[None, :].astype(np.float32)
        passage = np.full(n, -1.0, dtype=np.float32)
        sims, ids = self.faiss_index.search(q, min(n, depth))
        ok = ids[0] >= 0
        passage[ids[0][ok]] = sims[0][ok]
        question = np.full(n, -1.0, dtype=np.float32)
        nq = self.question_index.ntotal
        if nq:
            sims, ids = self.question_index.search(q, min(nq, depth))
            # rows are sorted by similarity, so the first time an owner appears is its best question
            for sim, row in zip(sims[0][::-1], ids[0][::-1]):
                if row >= 0:
                    question[self.owners[n + row]] = sim
        return passage, question

    def keyword_index(self, typical_questions: bool = True) -> KeywordIndex:
        return self.keyword_q if typical_questions else self.keyword

    def keyword_search(self, tokens: list[str], typical_questions: bool = True) -> np.ndarray:
        return self.keyword_index(typical_questions).scores(tokens)

    def stats(self) -> dict:
        return {"store": "faiss", "where": str(self.path), "version": self.version,
                "documents": len(self.manifest.get("documents", {})), "chunks": len(self.chunks),
                "rows": int(len(self.vectors)), "ann": self.manifest.get("ann")}


def current_version(index_dir: Path) -> Path | None:
    """The serving version's folder; None when there is none or CURRENT is unreadable (a rebuild
    then starts afresh and rewrites it: see ``load_index`` for the message a reader gets)."""
    name = _read_current(Path(index_dir))
    return Path(index_dir) / name if name else None


def _read_current(index_dir: Path) -> str | None:
    try:
        data = (index_dir / "CURRENT").read_bytes()
    except OSError:  # missing, or index_dir is a file (NotADirectoryError)
        return None
    try:
        name = data.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return name if VERSION_NAME.fullmatch(name) else None


def check_index_dir(index_dir: Path) -> None:
    if Path(index_dir).exists() and not Path(index_dir).is_dir():
        raise IndexError_(f"索引位置 {index_dir} 是一个文件，不是文件夹；请用 --index 指定一个文件夹")


@contextmanager
def build_lock(index_dir: Path, wait: bool = False):
    check_index_dir(index_dir)
    try:
        index_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise IndexError_(f"无法建立索引文件夹 {index_dir}：路径中有一段是文件而不是文件夹") from None
    except PermissionError:
        raise IndexError_(f"没有权限建立索引文件夹 {index_dir}") from None
    with open(index_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise IndexBusy("另一个索引重建正在进行，请稍后再试") from None
            raise
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_chunks(path: Path) -> list[Chunk]:
    with open(path, encoding="utf-8") as fh:
        return [Chunk(**json.loads(line)) for line in fh if line.strip()]


def choose_index_type(n: int, setting: str = "auto", ann_min: int = 50_000, ivf_min: int = 200_000) -> str:
    """Exact search up to ``ann_min`` vectors (it is both exact and fast there), HNSW up to ``ivf_min``, IVF above."""
    if setting in ("flat", "hnsw", "ivf"):
        return setting
    if setting != "auto":
        raise ValueError(f"unknown ann setting {setting!r} (auto | flat | hnsw | ivf)")
    return "flat" if n < ann_min else "hnsw" if n < ivf_min else "ivf"


def ivf_nlist(n: int) -> int:
    """≈ 4·√n lists, a power of two, with at least 39 training points per list (faiss's minimum)."""
    nlist = 2 ** int(round(np.log2(4 * np.sqrt(max(n, 1)))))
    while nlist > 1 and nlist > n / 39:
        nlist //= 2
    return nlist


def _make_faiss(vectors: np.ndarray, dim: int | None = None, kind: str = "flat"):
    import faiss

    d = dim or vectors.shape[1]
    if kind == "ivf" and len(vectors) >= 39 * 64:
        nlist = ivf_nlist(len(vectors))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        rng = np.random.default_rng(0)
        size = ivf_train_size(len(vectors), nlist)
        sample = vectors if size == len(vectors) else vectors[np.sort(rng.choice(len(vectors), size, replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.add(vectors)
        index.nprobe = IVF_NPROBE
        return index
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    else:
        index = faiss.IndexFlatIP(d)
    if len(vectors):
        index.add(vectors)
    return index


def tune_search(index) -> None:
    """Search-time knobs are set on load, not trusted from the file: the values eval/bench.py validated."""
    import faiss

    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = HNSW_EF_SEARCH
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = IVF_NPROBE


def _canonical_order(paths: list[Path], corpus_dir: Path) -> list[Path]:
    """Files in laws/ and guides/ first: of two identical files, the one where documents belong is kept."""
    return sorted(paths, key=lambda p: (top_folder(p.relative_to(corpus_dir).as_posix()) not in CANONICAL_FOLDERS, p))


def collect_chunks(settings: Settings, strict: bool = False):
    """Load and chunk every corpus file. Returns (docs, chunks, skipped, hashes, warnings); a file
    that cannot be indexed is skipped with its reason (``strict``: raises instead), and a law left
    out or a second copy of a document is also a warning (``strict``: raises too)."""
    docs, chunks, skipped, hashes, warnings = [], [], [], {}, []
    seen_content: dict[str, str] = {}
    by_title: dict[str, str] = {}
    for path in _canonical_order(discover(settings.corpus_dir), settings.corpus_dir):
        rel = path.relative_to(settings.corpus_dir).as_posix()
        doc = None
        try:
            doc = load_document(path, settings.corpus_dir, settings.max_file_bytes)
            if doc.content_hash in seen_content:
                first = seen_content[doc.content_hash]
                warnings.append(f"{rel} 是 {first} 的重复副本（《{doc.title}》），已跳过副本；请删除其中一份")
                raise DocumentError(f"{rel}: 与 {first} 内容完全相同，已跳过重复文档")
            doc_chunks = chunk_document(doc, settings.chunk_max_chars, settings.chunk_overlap)
            if not doc_chunks:
                raise DocumentError(f"{rel}: 没有切分出任何片段")
        except DocumentError as e:
            if strict:
                raise
            why = str(e).split(": ", 1)[-1]
            skipped.append((rel, why))
            lost = doc is None or doc.content_hash not in seen_content  # a duplicate's text is indexed
            if lost and (doc.kind if doc is not None else guess_kind({}, rel)) == "law":
                warnings.append(f"法律文件 {rel} 没有进入索引：{why}；问答中将缺少它的条文")
            continue
        except Exception as e:  # a broken file must not stop the rest of the corpus
            if strict:
                raise DocumentError(f"{rel}: 无法读取（{e}）") from e
            skipped.append((rel, f"无法读取（{type(e).__name__}: {e}）"))
            continue
        if doc.title in by_title:
            same = f"与 {by_title[doc.title]} 标题相同（《{doc.title}》）但内容不同"
            if strict:
                raise DocumentError(f"{rel}: {same}，请删除多余的一份")
            warnings.append(f"{rel} {same}，两份都已索引，回答可能引用其中过时的一份；请删除多余的一份")
        by_title.setdefault(doc.title, rel)
        seen_content[doc.content_hash] = rel
        hashes[doc.source] = doc.content_hash
        docs.append(doc)
        for c in doc_chunks:
            c.id = f"{len(chunks)}"
            chunks.append(c)
    return docs, chunks, skipped, hashes, warnings


def _previous_vectors(index_dir: Path, model_id: str) -> tuple[dict[str, np.ndarray], str | None]:
    """Vectors of the serving version by key, and a note when they could not be trusted.

    Why verified: vectors are reused by every later rebuild, so one damaged ``vectors.npy``
    reused unchecked would live on in every version. Its digest (and that of ``keys.json``) in
    the manifest must match before any of it is reused; otherwise everything is embedded anew.
    """
    prev = current_version(index_dir)
    if prev is None:
        return {}, None
    try:
        manifest = json.loads((prev / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, None
    if not isinstance(manifest, dict) or manifest.get("model_id") != model_id:
        return {}, None
    digests = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    for name in ("vectors.npy", "keys.json"):
        if name == "keys.json" and name not in digests:
            continue  # versions built before keys.json had a digest
        try:
            ok = _file_digest(prev / name) == digests.get(name)
        except OSError:
            ok = False
        if not ok:
            return {}, (f"上一版索引的 {name} 已损坏（与清单中的校验值不符），其中的向量没有复用，"
                        f"已改从向量缓存取回或重新计算")
    try:
        keys = json.loads((prev / "keys.json").read_text(encoding="utf-8"))
        vecs = np.load(prev / "vectors.npy", allow_pickle=False)
    except (OSError, ValueError):
        return {}, None
    if not isinstance(keys, list) or vecs.ndim != 2 or len(keys) != len(vecs):
        return {}, None
    return dict(zip(keys, vecs)), None


def _previous_tokens(index_dir: Path) -> dict[str, list[str]]:
    """Tokenised texts of the serving version, keyed by text hash: jieba is the slow part of a rebuild."""
    prev = current_version(index_dir)
    try:
        cache = json.loads((prev / "tokens.json").read_text(encoding="utf-8"))
        return cache if isinstance(cache, dict) else {}
    except Exception:
        return {}


def _tokens(text: str, cache: dict[str, list[str]], used: dict[str, list[str]]) -> list[str]:
    from .keyword import tokenize

    key = hashlib.sha1(f"{KEYWORD_MODE}\x00{text}".encode("utf-8")).hexdigest()
    if key not in cache:
        cache[key] = tokenize(text, KEYWORD_MODE)
    used[key] = cache[key]
    return cache[key]


def load_typical_questions(settings: Settings, chunks: list[Chunk]) -> dict[str, str]:
    """Attach reviewed shopper questions (corpus/typical_questions/<doc>.yaml) to their chunks.

    Why: shoppers word things nothing like statutes; questions written per
    article are indexed beside the text (own vectors, extra keywords) so
    everyday wording lands on the right article. Returns file hashes for the manifest.
    """
    import yaml

    root = Path(settings.corpus_dir) / "typical_questions"
    hashes: dict[str, str] = {}
    by_doc: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_doc.setdefault(c.source, []).append(c)
    for source, doc_chunks in by_doc.items():
        path = (root / source).with_suffix(".yaml")
        if not path.exists():
            continue
        raw = path.read_bytes()
        hashes[source] = hashlib.sha256(raw).hexdigest()
        try:
            data = yaml.load(raw.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            log.warning("ignoring %s: %s", path, e)
            continue
        if not isinstance(data, dict):
            continue
        for c in doc_chunks:
            qs = data.get(c.section)
            if isinstance(qs, list):
                c.meta["questions"] = [str(q).strip() for q in qs if str(q).strip()]
    return hashes


def entries_for(chunks: list[Chunk]) -> tuple[list[tuple[str, bool]], np.ndarray]:
    """What gets a vector: every chunk's text (passage) and each typical question (query), with owners."""
    entries = [(c.embed_text, False) for c in chunks]
    owners = list(range(len(chunks)))
    for i, c in enumerate(chunks):
        for q in c.meta.get("questions", []):
            entries.append((q, True))
            owners.append(i)
    return entries, np.asarray(owners, dtype=np.int32)


def embed_missing(settings: Settings, entries: list[tuple[str, bool]], keys: list[str], old: dict[str, np.ndarray],
                  embedder=None, progress=None) -> tuple[np.ndarray, list[int], object]:
    """Vectors for ``entries``: from ``old`` (by key), else the embedding cache, else the model (loaded
    only when something is new). Returns (vectors, indices embedded anew, embedder)."""
    from .embedding import get_embedder

    todo = [i for i, k in enumerate(keys) if k not in old]
    cache = open_cache(settings) if todo else None
    if cache is not None:
        old.update(cache.get_many([keys[i] for i in todo]))
        todo = [i for i in todo if keys[i] not in old]
    if todo and embedder is None:  # loading the model takes seconds: only when something is new
        embedder = get_embedder(settings)
    dim = embedder.dim if embedder is not None else len(next(iter(old.values())))
    vectors = np.zeros((len(entries), dim), dtype=np.float32)
    for i, k in enumerate(keys):
        if k in old:
            vectors[i] = old[k]
    if todo:
        passages = [i for i in todo if not entries[i][1]]
        queries = [i for i in todo if entries[i][1]]
        report_to = (lambda off: (lambda d, t: progress(off + d, len(todo)))) if progress else (lambda off: None)
        if passages:
            vectors[passages] = embedder.encode_passages([entries[i][0] for i in passages], progress=report_to(0))
        if queries:
            vectors[queries] = embedder.encode_questions([entries[i][0] for i in queries],
                                                         progress=report_to(len(passages)))
        if cache is not None:
            cache.put_many({keys[i]: vectors[i] for i in todo})
    elif progress:
        progress(len(entries), len(entries))
    if cache is not None:
        cache.close()
    return vectors, todo, embedder


def build_faiss_index(settings: Settings, embedder=None, progress=None, strict: bool = False,
                      wait: bool = False) -> BuildReport:
    """``build_index`` for the FAISS store: a new version folder, verified, then CURRENT switched."""
    t0 = time.time()
    index_dir = Path(settings.index_dir)
    with build_lock(index_dir, wait=wait):
        docs, chunks, skipped, hashes, warnings = collect_chunks(settings, strict=strict)
        if not docs:
            raise DocumentError(f"知识库文件夹 {settings.corpus_dir} 里没有可索引的文档")
        tq_hashes = load_typical_questions(settings, chunks)
        from .embedding import model_id_for

        model_id = embedder.model_id if embedder is not None else model_id_for(settings)
        old, damaged = _previous_vectors(index_dir, model_id)
        entries, owners = entries_for(chunks)
        keys = [text_hash(model_id, ("Q\x00" if is_q else "P\x00") + t) for t, is_q in entries]
        vectors, todo, embedder = embed_missing(settings, entries, keys, old, embedder, progress)
        dim = vectors.shape[1]

        version = f"v-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{int(time.time() * 1000) % 1000:03d}"
        tmp = index_dir / (version + ".partial")
        tmp.mkdir(parents=True)
        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as fh:
            for c in chunks:
                fh.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
        np.save(tmp / "vectors.npy", vectors)
        np.save(tmp / "owners.npy", owners)
        (tmp / "keys.json").write_text(json.dumps(keys))
        import faiss

        kind = choose_index_type(len(entries), settings.ann, settings.ann_min_vectors, settings.ann_ivf_min_vectors)
        faiss.write_index(_make_faiss(vectors[: len(chunks)], dim, kind), str(tmp / "dense.faiss"))
        faiss.write_index(_make_faiss(vectors[len(chunks):], dim, kind), str(tmp / "questions.faiss"))
        token_cache = _previous_tokens(index_dir)
        used: dict[str, list[str]] = {}
        text_tokens = [_tokens(c.embed_text, token_cache, used) for c in chunks]
        question_tokens = [[t for q in c.meta.get("questions", []) for t in _tokens(q, token_cache, used)] for c in chunks]
        KeywordIndex(KEYWORD_MODE).build_from_tokens(text_tokens).save(tmp / "bm25")
        KeywordIndex(KEYWORD_MODE).build_from_tokens(
            [a + b for a, b in zip(text_tokens, question_tokens)]).save(tmp / "bm25q")
        (tmp / "tokens.json").write_text(json.dumps(used, ensure_ascii=False), encoding="utf-8")
        manifest = {
            "format": FORMAT_VERSION,
            "model_id": model_id,
            "dim": dim,
            "chunker": settings.chunker_id(),
            "keyword": KEYWORD_MODE,
            "ann": kind,
            "documents": {d.source: {"sha256": hashes[d.source], "title": d.title, "kind": d.kind,
                                     "chunks": sum(1 for c in chunks if c.source == d.source)} for d in docs},
            "typical_questions": tq_hashes,
            "skipped": [{"file": f, "reason": r} for f, r in skipped],
            "warnings": warnings,
            "chunks": len(chunks),
            "entries": len(entries),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "files": {name: _file_digest(tmp / name) for name in
                      ("chunks.jsonl", "vectors.npy", "keys.json", "owners.npy", "dense.faiss", "questions.faiss")},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
        load_version(tmp, settings, model_id=model_id)  # verify before switching
        final = index_dir / version
        os.replace(tmp, final)
        _switch_current(index_dir, version)
        _cleanup(index_dir, keep=version)
    report = BuildReport(documents=len(docs), chunks=len(chunks), reused=len(entries) - len(todo),
                         embedded=len(todo), skipped=skipped, seconds=time.time() - t0, version=version,
                         warnings=warnings, notes=[damaged] if damaged else [])
    return report


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _switch_current(index_dir: Path, version: str) -> None:
    tmp = index_dir / f"CURRENT.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, index_dir / "CURRENT")


def _cleanup(index_dir: Path, keep: str, keep_old: int = 1) -> None:
    """Drop partial leftovers and all but the newest previous version (a reader may still hold it)."""
    versions = sorted((p for p in index_dir.iterdir() if p.is_dir() and p.name.startswith("v-")),
                      key=lambda p: p.stat().st_mtime)
    old = [p for p in versions if p.name != keep and not p.name.endswith(".partial")]
    for p in old[:-keep_old] if keep_old else old:
        shutil.rmtree(p, ignore_errors=True)
    for p in versions:
        if p.name.endswith(".partial"):
            shutil.rmtree(p, ignore_errors=True)


def load_version(path: Path, settings: Settings, model_id: str | None = None) -> LoadedIndex:
    import faiss

    rebuild = REBUILD
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise IndexError_(f"索引不完整（缺少 manifest.json）：{path}。{rebuild}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        raise IndexError_(f"索引清单已损坏：{mpath}。{rebuild}") from None
    files = manifest.get("files", {}) if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise IndexError_(f"索引清单已损坏（内容不是预期的格式）：{mpath}。{rebuild}")
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexError_(f"索引格式版本不符。{rebuild}")
    if manifest.get("chunker") != settings.chunker_id():
        raise IndexError_(f"索引是用另一套切分设置建立的。{rebuild}")
    if model_id is not None and manifest.get("model_id") != model_id:
        raise IndexError_(f"索引是用另一个向量模型（{manifest.get('model_id')}）建立的。{rebuild}")
    for name, digest in files.items():
        if not (path / name).is_file() or _file_digest(path / name) != digest:
            raise IndexError_(f"索引文件 {name} 已损坏或被截断。{rebuild}")
    try:
        chunks = _load_chunks(path / "chunks.jsonl")
        vectors = np.load(path / "vectors.npy")
        owners = np.load(path / "owners.npy")
        index = faiss.read_index(str(path / "dense.faiss"))
        qindex = faiss.read_index(str(path / "questions.faiss"))
        tune_search(index)
        tune_search(qindex)
        mode = manifest.get("keyword", KEYWORD_MODE)
        keyword = KeywordIndex.load(path / "bm25", mode, len(chunks))
        keyword_q = KeywordIndex.load(path / "bm25q", mode, len(chunks))
    except Exception as e:
        raise IndexError_(f"索引文件无法读取（{type(e).__name__}）。{rebuild}") from e
    if not (len(chunks) == manifest.get("chunks") == index.ntotal
            and index.ntotal + qindex.ntotal == len(vectors) == len(owners) == manifest.get("entries")):
        raise IndexError_(f"索引中的向量数与片段数不一致。{rebuild}")
    if index.d != manifest.get("dim"):
        raise IndexError_(f"索引向量维度不符。{rebuild}")
    return LoadedIndex(path, manifest, chunks, vectors, owners, index, qindex, keyword, keyword_q)


def load_index(settings: Settings, model_id: str | None = None) -> LoadedIndex:
    index_dir = Path(settings.index_dir)
    check_index_dir(index_dir)
    path = current_version(index_dir)
    if path is None and (index_dir / "CURRENT").exists():
        raise IndexError_(f"索引的版本指针文件 {index_dir / 'CURRENT'} 已损坏。{REBUILD}")
    if path is None or not path.is_dir():
        raise IndexError_(f"在 {index_dir} 没有找到索引。请先运行 `rag index` 建立索引")
    return load_version(path, settings, model_id=model_id)


def progress_bar(desc: str):
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr (for the command line)."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="片段", file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update
