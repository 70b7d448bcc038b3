"""Annotations: a shopper's wording attached to the passage that should answer it, as a typical question.

Why typical questions: they are how shoppers' words reach the statute (see
README, "Typical questions"); an annotation is one more of them, written by an
operator from a real question that went unanswered. It goes into the same file
as the reviewed ones, ``corpus/typical_questions/<document path>.yaml`` under
the article or section heading, so annotations are versioned with the corpus
and ``rag eval`` and every rebuild see them. The file is edited as text (its
comments and layout stay as they are); an annotated line ends with the comment
``# 后台标注 <date>``, which is how the console lists and removes annotations.

Why it takes seconds: ``build_index`` reuses every vector of the serving version
and embeds only texts it has not seen, so after one annotation it embeds one
question; the Assistant then switches to the new version without a restart.
Before storing, the wording is masked (``rag.convlog.mask``): no phone number
or address ends up in the repository.
"""
from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import Settings
from .convlog import mask
from .labels import BODY_SECTION

MARK = "后台标注"
MAX_CHARS = 200
TQ_DIR = "typical_questions"
_LOCK = threading.Lock()
_ARTICLE_KEY = re.compile(r"第[一二三四五六七八九十百千零〇]+条(?:之[一二三四五六七八九十]+)?")
_MARK_COMMENT = re.compile(r"\s+#\s*" + MARK + r"\b.*$")


class AnnotationError(ValueError):
    """A request that can't be done as asked; the message is one Chinese sentence."""


@dataclass
class Outcome:
    ok: bool
    message: str
    seconds: float = 0.0
    embedded: int = 0
    version: str = ""
    changed: bool = False


@dataclass
class Annotation:
    source: str
    section: str
    question: str
    date: str = ""
    line: int = 0
    extra: dict = field(default_factory=dict)


def yaml_path(settings: Settings, source: str) -> Path:
    """corpus/typical_questions/<source with .yaml>; refuses anything that leaves that folder."""
    root = (Path(settings.corpus_dir) / TQ_DIR).resolve()
    if not source or "\x00" in source or source.startswith(("/", TQ_DIR + "/")):
        raise AnnotationError(f"文档路径不对：{source!r}")
    path = (root / source).with_suffix(".yaml").resolve()
    try:
        path.relative_to(root)
    except ValueError:
        raise AnnotationError(f"文档路径不对：{source!r}") from None
    return path


def clean_question(text: str) -> str:
    """One line, masked, at most MAX_CHARS characters; AnnotationError when empty or too long."""
    q = re.sub(r"\s+", " ", str(text or "")).strip()
    if not q:
        raise AnnotationError("要标注的问题是空的。")
    if len(q) > MAX_CHARS:
        raise AnnotationError(f"要标注的问题太长（{len(q)} 字），请精简到 {MAX_CHARS} 字以内。")
    return mask(q)


# --------------------------------------------------------------------------- YAML as text


def _scalar(text: str, key: bool = False) -> str:
    """``text`` as a YAML scalar: plain when that reads back the same, else double-quoted (JSON)."""
    if key and _ARTICLE_KEY.fullmatch(text):
        return text
    if not key and "#" not in text and not text[:1] in "\"'!&*[]{}|>%@`,?:-" and ": " not in text:
        try:
            if yaml.safe_load("- " + text) == [text]:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text, ensure_ascii=False)


def _key_of(line: str) -> str | None:
    """The mapping key on a top-level line (``第二条:`` / ``"…？":``), else None."""
    if not line or line[0] in " \t#-\n\r":
        return None
    try:
        data = yaml.safe_load(line)
    except yaml.YAMLError:
        return None
    if isinstance(data, dict) and len(data) == 1:
        return str(next(iter(data)))
    return None


def _item_of(line: str) -> str | None:
    """The question on a ``  - …`` line, else None."""
    if not line.lstrip().startswith("- ") or not line.startswith((" ", "-")):
        return None
    try:
        data = yaml.safe_load(line.strip())
    except yaml.YAMLError:
        return None
    if isinstance(data, list) and len(data) == 1 and data[0] is not None:
        return str(data[0])
    return None


def _blocks(lines: list[str]) -> dict[str, tuple[int, int]]:
    """key -> (index of its line, index after its last item line)."""
    out: dict[str, tuple[int, int]] = {}
    current, start, last = None, 0, 0
    for i, line in enumerate(lines):
        key = _key_of(line)
        if key is not None:
            if current is not None:
                out.setdefault(current, (start, last + 1))
            current, start, last = key, i, i
        elif current is not None and _item_of(line) is not None:
            last = i
    if current is not None:
        out.setdefault(current, (start, last + 1))
    return out


def insert_question(text: str, section: str, question: str, order: list[str] | None = None,
                    date: str | None = None, title: str = "") -> str:
    """``text`` (a typical-questions YAML file) with ``question`` added under ``section``.

    The new line goes after the section's last question; a section not yet in the file gets a
    new key, placed before the first key that comes after it in ``order`` (the document's
    section order) or at the end."""
    date = date or time.strftime("%Y-%m-%d")
    item = f"  - {_scalar(question)}  # {MARK} {date}"
    lines = text.splitlines()
    if not lines:
        lines = [f"# Typical shopper questions for {title or '这篇文档'}; added from the operator's console."]
    blocks = _blocks(lines)
    if section in blocks:
        _, end = blocks[section]
        lines.insert(end, item)
    else:
        new = [f"{_scalar(section, key=True)}:", item]
        at = len(lines)
        if order and section in order:
            mine = order.index(section)
            later = [blocks[k][0] for k in blocks if k in order and order.index(k) > mine]
            if later:
                at = min(later)
        while at == len(lines) and lines and not lines[-1].strip():
            lines.pop()
            at = len(lines)
        lines[at:at] = new
    return "\n".join(lines) + "\n"


def delete_question(text: str, section: str, question: str) -> str | None:
    """``text`` without ``question`` under ``section`` (and without the key when nothing is left
    under it); None when it is not there."""
    lines = text.splitlines()
    blocks = _blocks(lines)
    if section not in blocks:
        return None
    start, end = blocks[section]
    hit = next((i for i in range(start + 1, end) if _item_of(lines[i]) == question), None)
    if hit is None:
        return None
    del lines[hit]
    if not any(_item_of(lines[i]) is not None for i in range(start + 1, end - 1)):
        del lines[start]
    return "\n".join(lines) + ("\n" if lines else "")


def read_questions(path: Path) -> dict[str, list[str]]:
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        return {}
    return {str(k): [str(q) for q in v] for k, v in data.items() if isinstance(v, list)}


def list_annotations(settings: Settings) -> list[Annotation]:
    """Every question added from the console (lines marked ``# 后台标注``), newest first; ``source`` is
    the corpus document the file belongs to."""
    from .documents import discover

    root = Path(settings.corpus_dir) / TQ_DIR
    if not root.is_dir():
        return []
    docs = {}
    for p in discover(settings.corpus_dir):
        rel = p.relative_to(settings.corpus_dir).as_posix()
        docs.setdefault(Path(rel).with_suffix("").as_posix(), rel)
    out = []
    for path in sorted(root.rglob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if MARK not in text:
            continue
        stem = path.relative_to(root).with_suffix("").as_posix()
        key = None
        for i, line in enumerate(text.splitlines()):
            k = _key_of(line)
            if k is not None:
                key = k
                continue
            m = re.search(r"#\s*" + MARK + r"\s*(\S*)", line)
            q = _item_of(line) if m else None
            if q is not None and key is not None:
                out.append(Annotation(docs.get(stem, stem), key, q, m.group(1), i + 1))
    out.sort(key=lambda a: (a.date, a.source, a.line), reverse=True)
    return out


# --------------------------------------------------------------------------- whole changes


def document_sections(index, source: str) -> list[str]:
    """The document's article/section headings in text order, from the loaded index."""
    seen: dict[str, None] = {}
    for c in index.chunks:
        if c.source == source:
            seen.setdefault(c.section or BODY_SECTION, None)
    return list(seen)


def _rebuild(settings: Settings, assistant, path: Path, before: bytes | None, after: str) -> Outcome:
    """Write ``after`` to ``path``, rebuild with the assistant's model (only new texts are embedded)
    and switch the assistant to the new version; on any failure the file is put back."""
    from .index import IndexBusy
    from .store import build_index

    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(after, encoding="utf-8")
    tmp.replace(path)
    try:
        report = build_index(settings, embedder=getattr(assistant, "embedder", None))
        if assistant is not None:
            assistant.reload()
    except BaseException as e:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(before)
        if isinstance(e, IndexBusy):
            return Outcome(False, "另一个索引重建正在进行，请稍后再试；这次的标注没有保存。")
        raise
    return Outcome(True, "", seconds=time.perf_counter() - t0, embedded=report.embedded, version=report.version,
                   changed=True)


def add(settings: Settings, source: str, section: str, question: str, assistant=None) -> Outcome:
    """Attach ``question`` to ``source``'s ``section`` and update the index (only it is embedded)."""
    q = clean_question(question)
    index = assistant.index if assistant is not None else None
    if index is not None:
        sections = document_sections(index, source)
        if not sections:
            raise AnnotationError(f"索引中没有文档 {source}。")
        if section not in sections:
            raise AnnotationError(f"《{source}》中没有“{section}”这一条/节。")
    else:
        sections = None
    path = yaml_path(settings, source)
    with _LOCK:
        before = path.read_bytes() if path.exists() else None
        text = before.decode("utf-8") if before is not None else ""
        if q in read_questions(path).get(section, []):
            return Outcome(False, f"“{q}”已经是这一条/节的典型问题，无需重复标注。")
        title = next((c.title for c in index.chunks if c.source == source), "") if index is not None else ""
        after = insert_question(text, section, q, order=sections, title=title)
        if q not in (yaml.safe_load(after) or {}).get(section, []):  # never write a file that reads differently
            raise AnnotationError("无法把这个问题写成合法的 YAML，请换一种写法。")
        out = _rebuild(settings, assistant, path, before, after)
    if out.ok:
        out.message = (f"已把“{q}”标注到《{_title(index, source)}》{section}，索引已更新（新计算 {out.embedded} 个向量，"
                       f"用时 {out.seconds:.1f} 秒）。")
    return out


def remove(settings: Settings, source: str, section: str, question: str, assistant=None) -> Outcome:
    """Remove a typical question (an annotation) and update the index."""
    index = assistant.index if assistant is not None else None
    path = yaml_path(settings, source)
    with _LOCK:
        if not path.exists():
            raise AnnotationError(f"{source} 没有典型问题文件。")
        before = path.read_bytes()
        after = delete_question(before.decode("utf-8"), section, question)
        if after is None:
            return Outcome(False, f"《{_title(index, source)}》{section} 下没有“{question}”这个问题。")
        out = _rebuild(settings, assistant, path, before, after)
    if out.ok:
        out.message = f"已移除标注“{question}”（《{_title(index, source)}》{section}），索引已更新（用时 {out.seconds:.1f} 秒）。"
    return out


def _title(index, source: str) -> str:
    if index is not None:
        for c in index.chunks:
            if c.source == source:
                return c.title
    return source
