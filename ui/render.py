"""HTML for answers and source cards, built by hand with every document string escaped.

Why by hand: documents come from uploads, so their text is untrusted. Nothing
from a document (title, section, passage, file name) reaches the page without
``html.escape``; the markup around it is ours. The output never contains a
newline, so the chatbot's Markdown renderer sees one raw HTML block and does
not reinterpret document text as Markdown (links, emphasis) either.
"""
from __future__ import annotations

import html
import re

from rag.labels import KIND_LABEL, REFUSAL, kind_label, section_label

_NEWLINES = re.compile(r"(?:\r?\n[ \t\u3000]*)+")
CITE = re.compile(r"\[(\d+)\]")
SECTION_HEADERS = ("依据：", "怎么做：") + tuple(f"{label}：" for label in KIND_LABEL.values())
KEY_POINT = "要点："
GAP_OPENING = "资料中没有关于"
_STEP_LINE = re.compile(r"^\d+\.\s")


def esc(value) -> str:
    """Escape for HTML text or attribute; newlines become <br> so the output stays on one line."""
    return _NEWLINES.sub("<br>", html.escape(str(value), quote=True))


def card_id(turn_id: str, n: int) -> str:
    return f"c-{turn_id}-{int(n)}"


def highlight(text: str, spans) -> str:
    """Escaped ``text`` with the character ranges in ``spans`` wrapped in <mark>."""
    clean = []
    for span in spans or []:
        try:
            s, e = int(span[0]), int(span[1])
        except (TypeError, ValueError, IndexError):
            continue
        s, e = max(0, s), min(len(text), e)
        if e > s:
            clean.append((s, e))
    clean.sort()
    merged: list[list[int]] = []
    for s, e in clean:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    out, pos = [], 0
    for s, e in merged:
        out.append(esc(text[pos:s]))
        out.append(f'<mark class="used">{esc(text[s:e])}</mark>')
        pos = e
    out.append(esc(text[pos:]))
    return "".join(out)


def kind_badge(kind: str) -> str:
    label = kind_label(kind)
    cls = f"badge-{kind}" if kind in KIND_LABEL else "badge-other"
    return f'<span class="badge {cls}">{esc(label)}</span>'


def passage_section(p: dict) -> str:
    return section_label(str(p.get("section") or ""))


def source_card(p: dict, turn_id: str, *, highlight_used: bool = True, show_score: bool = False,
                full: tuple[str, int] | None = None) -> str:
    """One card: 《title》 section, badge, passage (used sentences marked), whole section in <details>.

    ``full`` is (whole article/section text, offset of this passage inside it), when known.
    """
    n = int(p.get("n", 0))
    text = str(p.get("text") or "")
    spans = p.get("used_sentences") if highlight_used else None
    kind = str(p.get("kind") or "")
    sec = passage_section(p)
    head = (f'<span class="cite-n">[{n}]</span> <span class="card-title">《{esc(p.get("title", ""))}》'
            f'{esc(sec)}</span> {kind_badge(kind)}')
    meta = f'<span class="card-source">{esc(p.get("source", ""))}</span>'
    if show_score:
        meta += f' <span class="card-score">检索得分 {float(p.get("score") or 0):.4f}</span>'
    full_text, offset = full if full else (text, 0)
    shifted = [[s + offset, e + offset] for s, e in (spans or [])]
    what = "条文" if kind == "law" else "章节"
    summary = f"展开完整{what}" + (f"（{esc(sec)}）" if sec else "")
    return (
        f'<div class="cite-card kind-{esc(kind or "other")}" id="{card_id(turn_id, n)}">'
        f'<div class="card-head">{head}</div>'
        f'<div class="card-meta">{meta}</div>'
        f'<div class="card-passage">{highlight(text, spans)}</div>'
        f'<details class="card-full"><summary>{summary}</summary>'
        f'<div class="card-full-text">{highlight(full_text, shifted)}</div></details>'
        f"</div>"
    )


def answer_text_html(answer: str, turn_id: str, cited: set[int]) -> str:
    """The answer with each [n] turned into a link to its card."""

    def link(m: re.Match) -> str:
        n = int(m.group(1))
        if n not in cited:
            return m.group(0)
        cid = card_id(turn_id, n)
        return f'<a class="cite-ref" href="#{cid}" title="查看来源 [{n}]">[{n}]</a>'

    lines = []
    for raw in str(answer or "").split("\n"):
        line = raw.strip()
        if not line:
            continue
        body = CITE.sub(link, html.escape(line, quote=True))
        if line in SECTION_HEADERS:
            kind = "steps" if line == "怎么做：" else "guide" if "指南" in line else "law"
            lines.append(f'<div class="ans-h ans-h-{kind}">{body}</div>')
        elif line.startswith(KEY_POINT):
            rest = CITE.sub(link, html.escape(line[len(KEY_POINT):], quote=True))
            lines.append(f'<div class="ans-key"><span class="ans-key-label">要点</span>{rest}</div>')
        elif line.startswith(GAP_OPENING):
            lines.append(f'<div class="ans-gap">{body}</div>')
        elif _STEP_LINE.match(line):
            lines.append(f'<div class="ans-step">{body}</div>')
        elif line.startswith("- "):
            lines.append(f'<div class="ans-li">{CITE.sub(link, html.escape(line[2:], quote=True))}</div>')
        else:
            lines.append(f'<div class="ans-p">{body}</div>')
    return "".join(lines)


def answer_html(result: dict, turn_id: str, *, show_scores: bool = False, full_sections=None,
                note: str = "") -> str:
    """The whole assistant message for one ``Assistant.ask`` result.

    ``full_sections(passage) -> (text, offset) | None`` looks up the whole article/section.
    """
    full_sections = full_sections or (lambda p: None)
    parts = []
    if note:
        parts.append(f'<div class="ans-note">{esc(note)}</div>')
    if result.get("refused"):
        parts.append(f'<div class="refusal">{answer_text_html(result.get("answer") or REFUSAL, turn_id, set())}</div>')
        near = (result.get("retrieved") or [])[:3]
        if near:
            parts.append('<div class="cards-h">可能相关（仅供参考，未必能回答您的问题）：</div>')
            parts.append('<div class="cards">' + "".join(
                source_card(p, turn_id, highlight_used=False, show_score=show_scores, full=full_sections(p))
                for p in near) + "</div>")
    else:
        cites = result.get("citations") or []
        parts.append(f'<div class="ans-text">{answer_text_html(result.get("answer", ""), turn_id, {int(c["n"]) for c in cites})}</div>')
        if cites:
            parts.append('<div class="cards-h">引用来源（点击答案中的 [n] 可跳到对应来源）：</div>')
            parts.append('<div class="cards">' + "".join(
                source_card(c, turn_id, show_score=show_scores, full=full_sections(c)) for c in cites) + "</div>")
    if show_scores:
        parts.append(f'<div class="ans-foot">置信度 {float(result.get("confidence") or 0):.3f} · '
                     f'索引版本 {esc(result.get("index_version", ""))} · '
                     f'用时 {float((result.get("timings_ms") or {}).get("total", 0)):.0f} 毫秒</div>')
    cls = "rag-answer refused" if result.get("refused") else "rag-answer"
    return f'<div class="{cls}" data-turn="{esc(turn_id)}">' + "".join(parts) + "</div>"


def question_html(question: str) -> str:
    return f'<div class="rag-question">{esc(question)}</div>'


def notice_html(text: str, cls: str = "notice") -> str:
    return f'<div class="{esc(cls)}">{esc(text)}</div>'
