"""Knowledge-base housekeeping for the web app and the HTTP API: list, validate uploads, add, delete, rebuild.

Why validate on a temporary copy: a file only enters ``corpus/uploads/`` after
it has been read exactly as the indexer will read it, so a bad upload (empty,
binary renamed .pdf, unknown encoding, too big, hostile name) is refused with
a Chinese reason and the corpus that the current index was built from is
untouched. Additions and deletions return an ``undo`` so a failed rebuild can
put the corpus back the way it was. ``upload``, ``delete`` and ``rebuild`` do a
whole change (files, rebuild, undo on failure) and return an ``Outcome`` with
Chinese messages; the web app and the HTTP API both call them.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rag.config import Settings
from rag.documents import SUPPORTED_SUFFIXES, DocumentError, discover, load_document
from rag.index import BuildReport, IndexBusy, IndexError_
from rag.store import build_index, get_store

log = logging.getLogger(__name__)
UPLOAD_DIR = "uploads"
KIND_NAME = {"law": "法律", "howto": "办事指南", "guide": "指南"}


class UploadRejected(ValueError):
    """An upload that was not added; the message (Chinese) names the file and the reason."""


def read_manifest(settings: Settings) -> dict | None:
    """The serving index's manifest, from whichever store serves (FAISS files or Milvus), without
    loading the whole index."""
    return get_store(settings).manifest()


def serving_version(settings: Settings) -> str | None:
    """The serving version's name (FAISS: the CURRENT folder; Milvus: collection@version)."""
    return get_store(settings).current()


def document_rows(settings: Settings) -> list[list]:
    """[title, kind, file, chunks, indexed at] for each indexed document, uploads first."""
    m = read_manifest(settings) or {}
    created = str(m.get("created", "")).replace("T", " ")
    rows = []
    # uploads first: they are what a maintainer just changed; then the shipped corpus by path
    order = sorted((m.get("documents") or {}).items(), key=lambda kv: (not kv[0].startswith(UPLOAD_DIR + "/"), kv[0]))
    for source, d in order:
        rows.append([d.get("title", ""), KIND_NAME.get(d.get("kind"), d.get("kind", "")), source,
                     int(d.get("chunks", 0)), created])
    return rows


def skipped_files(settings: Settings) -> list[tuple[str, str]]:
    m = read_manifest(settings) or {}
    return [(s.get("file", ""), s.get("reason", "")) for s in m.get("skipped") or []]


def corpus_files(settings: Settings) -> list[str]:
    return [p.relative_to(settings.corpus_dir).as_posix() for p in discover(settings.corpus_dir)]


def safe_name(name: str) -> str:
    """The upload's file name if it is a plain, supported name; UploadRejected otherwise."""
    raw = str(name or "")
    shown = raw if len(raw) <= 80 else raw[:77] + "…"
    if not raw.strip():
        raise UploadRejected("文件名为空，无法加入知识库")
    if "/" in raw or "\\" in raw or raw in (".", "..") or ".." in raw.split("."):
        raise UploadRejected(f"{shown}：文件名不能包含路径（/、\\ 或 ..），请只上传文件本身")
    if ".." in raw:
        raise UploadRejected(f"{shown}：文件名不能包含“..”")
    if raw.startswith("."):
        raise UploadRejected(f"{shown}：文件名不能以“.”开头（隐藏文件不会被索引）")
    if any(unicodedata.category(ch).startswith("C") for ch in raw):
        raise UploadRejected(f"{shown}：文件名含有控制字符")
    if len(raw.encode("utf-8")) > 200:
        raise UploadRejected(f"{shown}：文件名太长（请少于 200 字节）")
    suffix = Path(raw).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kinds = "、".join(sorted({s for s in SUPPORTED_SUFFIXES if s not in (".markdown", ".htm")}))
        raise UploadRejected(f"{shown}：不支持的文件类型“{suffix or '无后缀'}”（支持 {kinds}）")
    if raw.lower() in ("readme.md", "readme.txt"):
        raise UploadRejected(f"{shown}：README 文件用于说明，不会被索引，请换个文件名")
    return raw


def _reason(e: Exception) -> str:
    """DocumentError messages start with the temporary path; keep only the reason."""
    return str(e).split(": ", 1)[-1]


def validate_upload(settings: Settings, src: Path, name: str) -> str:
    """Check one uploaded file exactly as the indexer would read it. Returns the safe name."""
    name = safe_name(name)
    src = Path(src)
    try:
        size = src.stat().st_size
    except OSError:
        raise UploadRejected(f"{name}：上传的文件找不到了，请重新上传") from None
    if size == 0:
        raise UploadRejected(f"{name}：文件是空的")
    limit = min(x for x in (settings.max_file_bytes, settings.max_upload_bytes, 1 << 62) if x)
    if size > limit:
        raise UploadRejected(f"{name}：文件太大（{size / 1e6:.1f} MB，上限 {limit / 1e6:.0f} MB）")
    with tempfile.TemporaryDirectory(prefix="rag-upload-") as tmp:
        root = Path(tmp)
        copy = root / UPLOAD_DIR / name
        copy.parent.mkdir()
        shutil.copyfile(src, copy)
        try:
            doc = load_document(copy, root, settings.max_file_bytes)
            from rag.chunking import chunk_document

            if not chunk_document(doc, settings.chunk_max_chars, settings.chunk_overlap):
                raise DocumentError(f"{name}: 没有切分出任何片段")
        except DocumentError as e:
            raise UploadRejected(f"{name}：{_reason(e)}") from None
        except Exception as e:  # a parser crash on a malformed file is the file's fault, not ours
            log.warning("upload %s could not be read: %s: %s", name, type(e).__name__, e)
            raise UploadRejected(f"{name}：无法读取这个文件（文件已损坏，或内容与后缀“{Path(name).suffix}”不符）") from None
    m = read_manifest(settings) or {}
    target = f"{UPLOAD_DIR}/{name}"
    for source, d in (m.get("documents") or {}).items():
        if d.get("sha256") == doc.content_hash and source != target:
            raise UploadRejected(f"{name}：与知识库中已有的 {source} 内容完全相同")
    return name


@dataclass
class Change:
    """Files moved in or out of the corpus, with what is needed to undo it."""
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    _backups: list[tuple[Path, Path | None]] = field(default_factory=list)  # (corpus path, saved copy or None)
    _trash: tempfile.TemporaryDirectory | None = None

    def _trash_dir(self) -> Path:
        if self._trash is None:
            self._trash = tempfile.TemporaryDirectory(prefix="rag-trash-")
        return Path(self._trash.name)

    def undo(self) -> None:
        for path, saved in reversed(self._backups):
            try:
                if saved is None:
                    path.unlink(missing_ok=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(saved), path)
            except OSError:
                log.exception("could not undo change to %s", path)
        self._backups.clear()
        self.close()

    def close(self) -> None:
        if self._trash is not None:
            self._trash.cleanup()
            self._trash = None


def add_files(settings: Settings, files: list[tuple[Path, str]], change: Change | None = None) -> Change:
    """Copy already validated (path, safe name) pairs into corpus/uploads/."""
    change = change or Change()
    dest_dir = Path(settings.corpus_dir) / UPLOAD_DIR
    dest_dir.mkdir(parents=True, exist_ok=True)
    for src, name in files:
        dest = dest_dir / safe_name(name)
        saved = None
        if dest.exists():
            saved = change._trash_dir() / f"{len(change._backups)}-{dest.name}"
            shutil.move(str(dest), saved)
        change._backups.append((dest, saved))
        tmp = dest.with_name(f".{dest.name}.part")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
        change.added.append(f"{UPLOAD_DIR}/{dest.name}")
    return change


def resolve_in_corpus(settings: Settings, rel: str) -> Path:
    """The corpus file named by ``rel``; refuses anything outside the corpus folder."""
    corpus = Path(settings.corpus_dir).resolve()
    if not rel or "\x00" in rel:
        raise UploadRejected("请选择要删除的文档")
    path = (corpus / rel).resolve()
    try:
        path.relative_to(corpus)
    except ValueError:
        raise UploadRejected(f"{rel}：不在知识库文件夹内，不能删除") from None
    if not path.is_file():
        raise UploadRejected(f"{rel}：知识库中没有这个文件")
    return path


def remove_file(settings: Settings, rel: str, change: Change | None = None) -> Change:
    change = change or Change()
    path = resolve_in_corpus(settings, rel)
    others = [p for p in corpus_files(settings) if p != path.relative_to(Path(settings.corpus_dir).resolve()).as_posix()]
    if not others:
        raise UploadRejected("这是知识库里最后一篇文档，删除后就无法回答任何问题了，因此没有删除")
    saved = change._trash_dir() / f"{len(change._backups)}-{path.name}"
    shutil.move(str(path), saved)
    change._backups.append((path, saved))
    change.removed.append(rel)
    return change


# --------------------------------------------------------------------------- whole changes

Progress = Callable[[int, int], None]


@dataclass
class Outcome:
    """What an upload, deletion or rebuild did; messages are Chinese and user-safe."""
    ok: bool
    message: str  # the summary (success) or the reason nothing changed (failure)
    added: list[str] = field(default_factory=list)  # corpus paths now indexed
    removed: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file name, why) not added
    report: BuildReport | None = None

    def as_json(self) -> dict:
        r = self.report
        return {"ok": self.ok, "message": self.message, "added": self.added, "removed": self.removed,
                "rejected": [{"file": f, "reason": why} for f, why in self.rejected],
                "index": None if r is None else {"version": r.version, "documents": r.documents, "chunks": r.chunks,
                                                  "embedded": r.embedded, "reused": r.reused,
                                                  "seconds": round(r.seconds, 2)}}


def validate_uploads(settings: Settings, files: list[tuple[Path, str]]) -> tuple[list[tuple[Path, str]], list[tuple[str, str]]]:
    """Split (path, original name) pairs into (valid (path, safe name) pairs, rejected (name, why))."""
    good, rejected = [], []
    for path, name in files:
        try:
            good.append((Path(path), validate_upload(settings, Path(path), name)))
        except UploadRejected as e:
            rejected.append((name, str(e)))
        except Exception:
            log.exception("validating upload %s failed", name)
            rejected.append((name, f"{name}：检查文件时出错"))
    return good, rejected


def rebuild(settings: Settings, progress: Progress | None = None) -> Outcome:
    """Rebuild the index from the corpus as it is."""
    try:
        report = _build(settings, progress)
    except IndexBusy as e:
        return Outcome(False, f"{e}。")
    except (DocumentError, IndexError_) as e:
        log.warning("rebuild failed: %s", e)
        return Outcome(False, f"重建索引失败：{e}")
    except Exception:
        log.exception("rebuild failed")
        return Outcome(False, "重建索引失败，现有索引保持不变。详细原因已记录在服务器日志中。")
    return Outcome(True, _summary(report), report=report)


def upload(settings: Settings, files: list[tuple[Path, str]], progress: Progress | None = None) -> Outcome:
    """Validate (path, original name) pairs, add the good ones to corpus/uploads/ and rebuild;
    on a failed rebuild the additions are undone and the index is unchanged."""
    good, rejected = validate_uploads(settings, files)
    if not files:
        return Outcome(False, "请先选择要上传的文件。")
    if not good:
        return Outcome(False, "没有文件加入知识库，现有索引保持不变。", rejected=rejected)
    change = Change()
    try:
        add_files(settings, good, change)
        report = _build(settings, progress)
    except IndexBusy as e:
        change.undo()
        return Outcome(False, f"{e}。上传的文件没有加入，请稍后重新上传。", rejected=rejected)
    except Exception as e:
        change.undo()
        if isinstance(e, (DocumentError, IndexError_)):
            log.warning("rebuild after upload failed: %s", e)
        else:
            log.exception("rebuild after upload failed")
        return Outcome(False, "重建索引失败，上传的文件已撤回，现有索引保持不变。", rejected=rejected)
    change.close()
    skipped = dict(report.skipped)
    added = []
    for rel in change.added:
        if rel in skipped:  # the indexer could not use it after all: take it out again
            (Path(settings.corpus_dir) / rel).unlink(missing_ok=True)
            rejected.append((Path(rel).name, f"{Path(rel).name}：{skipped[rel]}"))
        else:
            added.append(rel)
    return Outcome(True, _summary(report), added=added, rejected=rejected, report=report)


def delete(settings: Settings, rel: str, progress: Progress | None = None) -> Outcome:
    """Remove one corpus file and rebuild; on a failed rebuild the file is put back."""
    if not rel:
        return Outcome(False, "请先在列表中选择要删除的文档。")
    change = Change()
    try:
        remove_file(settings, rel, change)
        report = _build(settings, progress)
    except UploadRejected as e:
        return Outcome(False, str(e))
    except IndexBusy as e:
        change.undo()
        return Outcome(False, f"{e}。文档没有删除。")
    except Exception:
        change.undo()
        log.exception("delete of %s failed", rel)
        return Outcome(False, "删除后重建索引失败，文档已恢复，现有索引保持不变。")
    change.close()
    return Outcome(True, f"已删除：{rel}。" + _summary(report), removed=[rel], report=report)


def _build(settings: Settings, progress: Progress | None) -> BuildReport:
    report = build_index(settings, progress=progress)
    log.info("index rebuilt in %.1fs (%s)", report.seconds, report.version)
    return report


def _summary(report: BuildReport) -> str:
    return (f"索引已更新：文档 {report.documents} 篇，片段 {report.chunks} 个（新计算 {report.embedded}，"
            f"复用 {report.reused}），用时 {report.seconds:.1f} 秒。")


def discard_uploads(paths) -> None:
    """Delete uploaded files from the web server's temporary folder once they have been used
    (Gradio keeps every upload in its cache until the server stops otherwise)."""
    import gradio.utils

    cache = Path(gradio.utils.get_upload_folder()).resolve()
    for p in paths or []:
        path = Path(p if isinstance(p, (str, os.PathLike)) else getattr(p, "name", "") or "")
        if not str(path):
            continue
        try:
            path = path.resolve()
            path.relative_to(cache)  # never anything outside the upload cache
        except (OSError, ValueError):
            continue
        try:
            path.unlink(missing_ok=True)
            if path.parent != cache and not any(path.parent.iterdir()):
                path.parent.rmdir()  # Gradio keeps each upload in a folder of its own
        except OSError:
            log.warning("could not delete uploaded temp file %s", path.name)
