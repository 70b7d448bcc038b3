"""Reading knowledge-base files into ``Document`` objects.

Why a separate step: chunk offsets must point into the exact text a maintainer
can open, so every format is first turned into one text string (for Markdown
the file itself) plus the offset where the body starts after front matter.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .labels import KINDS

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx")
FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)


class DocumentError(ValueError):
    """A file that cannot be indexed; the message names the file and says why (in Chinese)."""


@dataclass
class Document:
    source: str  # path relative to the corpus root, POSIX separators
    title: str
    kind: str  # law | howto | guide (rag/labels.py)
    text: str  # the text that chunk offsets point into
    body_start: int = 0  # offset of the body after any front matter
    meta: dict = field(default_factory=dict)
    # (level, title, start, end-of-heading-line) for formats whose headings are not Markdown
    headings: list[tuple[int, str, int, int]] | None = None

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def parse_front_matter(text: str, name: str = "") -> tuple[dict, int]:
    """Return (metadata, body offset). Invalid YAML is an error, not silently ignored."""
    m = FRONT_MATTER.match(text)
    if not m:
        return {}, 0
    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError as e:
        raise DocumentError(f"{name}: YAML 头信息格式错误（{str(e).splitlines()[0]}）") from e
    if not isinstance(meta, dict):
        raise DocumentError(f"{name}: YAML 头信息应为键值对")
    return meta, m.end()


def decode_bytes(data: bytes, name: str) -> str:
    """Decode UTF-8 (with or without BOM) or GBK/GB18030; refuse anything else."""
    if b"\x00" in data[:4096]:
        raise DocumentError(f"{name}: 看起来是二进制文件，不是文本")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        raise DocumentError(f"{name}: 无法识别的文字编码（只支持 UTF-8 和 GBK/GB18030）") from None
    if not _mostly_cjk_or_ascii(text):
        raise DocumentError(f"{name}: 无法识别的文字编码（只支持 UTF-8 和 GBK/GB18030）")
    return text


def _mostly_cjk_or_ascii(text: str) -> bool:
    sample = text[:5000]
    ok = sum(1 for c in sample if c.isascii() or "\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f" or "\uff00" <= c <= "\uffef")
    return ok >= 0.9 * max(1, len(sample))


def _title_from_name(path: Path) -> str:
    return path.stem.replace("-", " ").replace("_", " ").strip() or path.name


def _guess_kind(meta: dict, rel: str) -> str:
    kind = str(meta.get("kind", "")).strip().lower()
    if kind in KINDS:
        return kind
    top = rel.split("/", 1)[0]
    return "law" if top == "laws" else "guide"


def load_text_document(path: Path, rel: str, text: str) -> Document:
    meta, body = parse_front_matter(text, rel)
    title = str(meta.get("title") or "").strip()
    if not title:
        m = re.search(r"^#\s+(.+?)\s*$", text[body:], re.M)
        title = m.group(1) if m else _title_from_name(path)
    return Document(source=rel, title=title, kind=_guess_kind(meta, rel), text=text, body_start=body, meta=meta)


def load_document(path: Path, corpus_dir: Path, max_bytes: int | None = None) -> Document:
    path = Path(path)
    rel = path.resolve().relative_to(Path(corpus_dir).resolve()).as_posix()
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
        from . import formats

        doc = formats.load_rich_document(path, rel)
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
