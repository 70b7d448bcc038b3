"""Reading knowledge-base files into ``Document`` objects.

Why a separate step: chunk offsets must point into the exact text a maintainer
can open, so every format is first turned into one text string (for Markdown
the file itself) plus the offset where the body starts after front matter.
``Document``, ``DocumentError`` and the decoding helpers live in ``rag.docbase``
(shared with ``rag.formats`` and ``rag.chunking``) and are re-exported here.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from . import formats
from .docbase import (  # noqa: F401  (re-exported: the public names of documents)
    Document,
    DocumentError,
    decode_bytes,
    guess_kind,
    title_from_name,
)

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx")
FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


def parse_front_matter(text: str, name: str = "") -> tuple[dict, int]:
    """Return (metadata, body offset). Invalid YAML is an error, not silently ignored."""
    m = FRONT_MATTER.match(text)
    if not m:
        return {}, 0
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "context_mark", None) or getattr(e, "problem_mark", None)
        where = f"文件第 {mark.line + 2} 行附近，" if mark is not None else ""
        raise DocumentError(f"{name}: YAML 头信息格式错误（{where}请检查冒号后的空格、缩进以及引号和括号是否成对）") from e
    if not isinstance(meta, dict):
        raise DocumentError(f"{name}: YAML 头信息应为键值对")
    return meta, m.end()


def load_text_document(path: Path, rel: str, text: str) -> Document:
    meta, body = parse_front_matter(text, rel)
    title = str(meta.get("title") or "").strip()
    if not title:
        m = re.search(r"^#\s+(.+?)\s*$", text[body:], re.M)
        title = m.group(1) if m else title_from_name(path)
    return Document(source=rel, title=title, kind=guess_kind(meta, rel), text=text, body_start=body, meta=meta)


def corpus_relative(path: Path, corpus_dir: Path) -> str:
    """The file's name inside the corpus (POSIX), as listed: symbolic links are not followed."""
    rel = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(corpus_dir))).as_posix()
    if rel == ".." or rel.startswith("../"):
        raise DocumentError(f"{Path(path).name}: 不在知识库文件夹 {corpus_dir} 里")
    return rel


def refuse_links(path: Path, rel: str, corpus_dir: Path) -> None:
    """A file reached through a symbolic link is skipped: one inside the corpus would index the
    same text twice under two names, one outside would pull in a file nobody put in the corpus."""
    root = Path(corpus_dir).resolve()
    real = Path(path).resolve()
    if real == root / rel:
        return
    try:
        target = real.relative_to(root).as_posix()
    except ValueError:
        raise DocumentError(f"{rel}: 是指向知识库文件夹以外文件的符号链接，已跳过（请把文件本身放进知识库）") from None
    raise DocumentError(f"{rel}: 是指向 {target} 的符号链接，已跳过（同一文件只按它本身的位置索引）")


def load_document(path: Path, corpus_dir: Path, max_bytes: int | None = None) -> Document:
    path = Path(path)
    rel = corpus_relative(path, corpus_dir)
    refuse_links(path, rel, corpus_dir)
    try:
        size = path.stat().st_size
        if size == 0:
            raise DocumentError(f"{rel}: 文件是空的")
        if max_bytes and size > max_bytes:
            raise DocumentError(f"{rel}: 文件太大（{size / 1e6:.1f} MB，上限 {max_bytes / 1e6:.0f} MB）")
        suffix = path.suffix.lower()
        if suffix in (".md", ".markdown", ".txt"):
            text = decode_bytes(path.read_bytes(), rel).replace("\r\n", "\n")
            doc = load_text_document(path, rel, text)
        else:
            doc = formats.load_rich_document(path, rel)
    except PermissionError:
        raise DocumentError(f"{rel}: 没有读取这个文件的权限") from None
    except IsADirectoryError:
        raise DocumentError(f"{rel}: 是文件夹，不是文件") from None
    except OSError as e:
        raise DocumentError(f"{rel}: 无法读取文件（错误号 {e.errno}）") from None
    if not doc.text[doc.body_start:].strip():
        raise DocumentError(f"{rel}: 文件里没有可索引的文字")
    return doc


def discover(corpus_dir: Path) -> list[Path]:
    """Knowledge-base files under the corpus folder; README files describe it and are skipped."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        return []
    return sorted(
        p for p in corpus_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
        and p.name.lower() not in ("readme.md", "readme.txt")
        and not any(part.startswith(".") for part in p.relative_to(corpus_dir).parts)
    )
