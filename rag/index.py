"""Building, persisting and loading the search index (FAISS + BM25 + chunk metadata).

Layout of an index folder::

    index/CURRENT            name of the version that serves
    index/v-<time>-<pid>/    one complete, verified version
        chunks.jsonl  vectors.npy  dense.faiss  bm25/  manifest.json (written last)
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
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chunking import Chunk, chunk_document
from .config import Settings
from .documents import DocumentError, discover, load_document
from .keyword import KeywordIndex

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
KEYWORD_MODE = "jieba+bigram"


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

    def summary(self) -> str:
        lines = [
            f"文档 {self.documents} 篇，片段 {self.chunks} 个；复用向量 {self.reused}，新计算 {self.embedded}；"
            f"用时 {self.seconds:.1f} 秒；版本 {self.version}",
        ]
        for name, why in self.skipped:
            lines.append(f"  跳过 {name}: {why}")
        return "\n".join(lines)


def text_hash(model_id: str, text: str) -> str:
    return hashlib.sha1(f"{model_id}\x00{text}".encode("utf-8")).hexdigest()


@dataclass
class LoadedIndex:
    path: Path
    manifest: dict
    chunks: list[Chunk]
    vectors: np.ndarray
    faiss_index: object
    keyword: KeywordIndex

    @property
    def version(self) -> str:
        return self.path.name


def current_version(index_dir: Path) -> Path | None:
    cur = Path(index_dir) / "CURRENT"
    try:
        name = cur.read_text().strip()
    except FileNotFoundError:
        return None
    return Path(index_dir) / name if name else None


@contextmanager
def build_lock(index_dir: Path, wait: bool = False):
    index_dir.mkdir(parents=True, exist_ok=True)
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


def _make_faiss(vectors: np.ndarray):
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    if len(vectors):
        index.add(vectors)
    return index


def collect_chunks(settings: Settings, strict: bool = False):
    docs, chunks, skipped, hashes = [], [], [], {}
    seen_content: dict[str, str] = {}
    for path in discover(settings.corpus_dir):
        rel = path.relative_to(settings.corpus_dir).as_posix()
        try:
            doc = load_document(path, settings.corpus_dir, settings.max_file_bytes)
            if doc.content_hash in seen_content:
                raise DocumentError(f"{rel}: 与 {seen_content[doc.content_hash]} 内容完全相同，已跳过重复文档")
            doc_chunks = chunk_document(doc, settings.chunk_max_chars, settings.chunk_overlap)
            if not doc_chunks:
                raise DocumentError(f"{rel}: 没有切分出任何片段")
        except DocumentError as e:
            if strict:
                raise
            skipped.append((rel, str(e).split(": ", 1)[-1]))
            continue
        except Exception as e:  # a broken file must not stop the rest of the corpus
            if strict:
                raise DocumentError(f"{rel}: 无法读取（{e}）") from e
            skipped.append((rel, f"无法读取（{type(e).__name__}: {e}）"))
            continue
        seen_content[doc.content_hash] = rel
        hashes[rel] = doc.content_hash
        docs.append(doc)
        for c in doc_chunks:
            c.id = f"{len(chunks)}"
            chunks.append(c)
    return docs, chunks, skipped, hashes


def _previous_vectors(index_dir: Path, model_id: str) -> dict[str, np.ndarray]:
    prev = current_version(index_dir)
    try:
        manifest = json.loads((prev / "manifest.json").read_text())
        if manifest.get("model_id") != model_id:
            return {}
        old_chunks = _load_chunks(prev / "chunks.jsonl")
        vecs = np.load(prev / "vectors.npy")
        return {text_hash(model_id, c.embed_text): vecs[i] for i, c in enumerate(old_chunks)}
    except Exception:
        return {}


def build_index(settings: Settings, embedder=None, progress=None, strict: bool = False, wait: bool = False) -> BuildReport:
    """Build a new index version and switch to it. ``progress(done, total)`` reports embedding."""
    t0 = time.time()
    index_dir = Path(settings.index_dir)
    with build_lock(index_dir, wait=wait):
        docs, chunks, skipped, hashes = collect_chunks(settings, strict=strict)
        if not docs:
            raise DocumentError(f"知识库文件夹 {settings.corpus_dir} 里没有可索引的文档")
        if embedder is None:
            from .embedding import get_embedder

            embedder = get_embedder(settings)
        model_id = embedder.model_id
        old = _previous_vectors(index_dir, model_id)
        keys = [text_hash(model_id, c.embed_text) for c in chunks]
        todo = [i for i, k in enumerate(keys) if k not in old]
        vectors = np.zeros((len(chunks), embedder.dim), dtype=np.float32)
        for i, k in enumerate(keys):
            if k in old:
                vectors[i] = old[k]
        if todo:
            new = embedder.encode_passages([chunks[i].embed_text for i in todo], progress=progress)
            vectors[todo] = new
        elif progress:
            progress(len(chunks), len(chunks))

        version = f"v-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{int(time.time() * 1000) % 1000:03d}"
        tmp = index_dir / (version + ".partial")
        tmp.mkdir(parents=True)
        with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as fh:
            for c in chunks:
                fh.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
        np.save(tmp / "vectors.npy", vectors)
        import faiss

        faiss.write_index(_make_faiss(vectors), str(tmp / "dense.faiss"))
        KeywordIndex(KEYWORD_MODE).build([c.embed_text for c in chunks]).save(tmp / "bm25")
        manifest = {
            "format": FORMAT_VERSION,
            "model_id": model_id,
            "dim": embedder.dim,
            "chunker": settings.chunker_id(),
            "keyword": KEYWORD_MODE,
            "documents": {d.source: {"sha256": hashes[d.source], "title": d.title, "kind": d.kind,
                                     "chunks": sum(1 for c in chunks if c.source == d.source)} for d in docs},
            "skipped": [{"file": f, "reason": r} for f, r in skipped],
            "chunks": len(chunks),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "files": {name: _file_digest(tmp / name) for name in ("chunks.jsonl", "vectors.npy", "dense.faiss")},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
        load_version(tmp, settings, model_id=model_id)  # verify before switching
        final = index_dir / version
        os.replace(tmp, final)
        _switch_current(index_dir, version)
        _cleanup(index_dir, keep=version)
    report = BuildReport(documents=len(docs), chunks=len(chunks), reused=len(chunks) - len(todo),
                         embedded=len(todo), skipped=skipped, seconds=time.time() - t0, version=version)
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

    rebuild = "请运行 `rag index` 重新建立索引"
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise IndexError_(f"索引不完整（缺少 manifest.json）：{path}。{rebuild}")
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError:
        raise IndexError_(f"索引清单已损坏：{mpath}。{rebuild}") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise IndexError_(f"索引格式版本不符。{rebuild}")
    if manifest.get("chunker") != settings.chunker_id():
        raise IndexError_(f"索引是用另一套切分设置建立的。{rebuild}")
    if model_id is not None and manifest.get("model_id") != model_id:
        raise IndexError_(f"索引是用另一个向量模型（{manifest.get('model_id')}）建立的。{rebuild}")
    for name, digest in manifest.get("files", {}).items():
        if not (path / name).exists() or _file_digest(path / name) != digest:
            raise IndexError_(f"索引文件 {name} 已损坏或被截断。{rebuild}")
    try:
        chunks = _load_chunks(path / "chunks.jsonl")
        vectors = np.load(path / "vectors.npy")
        index = faiss.read_index(str(path / "dense.faiss"))
        keyword = KeywordIndex.load(path / "bm25", manifest.get("keyword", KEYWORD_MODE), len(chunks))
    except Exception as e:
        raise IndexError_(f"索引文件无法读取（{type(e).__name__}）。{rebuild}") from e
    if not (len(chunks) == index.ntotal == len(vectors) == manifest.get("chunks")):
        raise IndexError_(f"索引中的向量数与片段数不一致。{rebuild}")
    if index.d != manifest.get("dim"):
        raise IndexError_(f"索引向量维度不符。{rebuild}")
    return LoadedIndex(path, manifest, chunks, vectors, index, keyword)


def load_index(settings: Settings, model_id: str | None = None) -> LoadedIndex:
    path = current_version(settings.index_dir)
    if path is None or not path.exists():
        raise IndexError_(f"在 {settings.index_dir} 没有找到索引。请先运行 `rag index` 建立索引")
    return load_version(path, settings, model_id=model_id)
