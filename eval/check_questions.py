"""Validate the retrieval development set (eval/questions.jsonl).

Usage:
    python eval/check_questions.py [FILE] [--corpus DIR]

or, from Python:
    from eval.check_questions import check_questions
    problems = check_questions("eval/questions.jsonl", "corpus")

One JSON object per line:
    {"id": "q001", "question": "...", "answerable": true, "category": "...",
     "style": "...", "gold": [{"source": "laws/x.md", "evidence": "..."}],
     "facts": ["..."]}

What is checked, for every line:
- valid JSON object with exactly the required fields, of the right types;
- unique ids; style and category from the fixed sets; style "unanswerable"
  exactly when answerable is false (category out_of_scope / not_covered too);
- answerable: 1-3 gold entries, each naming an existing file under the corpus
  and an evidence string of 6-30 characters that occurs verbatim in the file
  BODY (after YAML front matter), inside one sentence (no 。！？；or newline),
  and in one passage only (a passage is the text between a Markdown heading and
  the next heading, i.e. one article or one guide section); gold entries point
  at different passages;
- 1-3 facts of 2-12 characters, each found verbatim in the passage of one of
  the gold evidences;
- the question does not contain any of its evidence strings;
- unanswerable: gold == [] and facts == [].

Only the standard library is used.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = REPO_ROOT / "eval" / "questions.jsonl"
DEFAULT_CORPUS = REPO_ROOT / "corpus"

STYLES = (
    "colloquial",
    "long_story",
    "keywords",
    "formal",
    "typo",
    "mixed_english",
    "paraphrase",
    "unanswerable",
)
UNANSWERABLE_CATEGORIES = ("out_of_scope", "not_covered")
CATEGORIES = (
    "七日无理由退货",
    "质量问题退换",
    "假货欺诈赔偿",
    "食品安全",
    "快递物流",
    "价格欺诈",
    "平台责任",
    "投诉举报",
    "汽车三包",
    "个人信息",
    "预付款/格式条款",
    "产品责任",
    "合同违约",
    "商品损坏索赔(指南)",
    "直播/网络交易",
    "消费者权利",
) + UNANSWERABLE_CATEGORIES

FIELDS = {
    "id": str,
    "question": str,
    "answerable": bool,
    "category": str,
    "style": str,
    "gold": list,
    "facts": list,
}
# Optional fields (added after the set was first published; tools that don't know them ignore them):
#   split: "tuning" (may be looked at while tuning) | "test" (report only; see eval/README.md)
#   acceptable: [{"source", "section"}] passages that are also right to cite, beside the gold ones
#   asks_steps: true when the shopper asks what to do (怎么办/去哪投诉), so the answer owes next steps
OPTIONAL = {"split": str, "acceptable": list, "asks_steps": bool}
SPLITS = ("tuning", "test")
EVIDENCE_MIN, EVIDENCE_MAX = 6, 30
FACT_MIN, FACT_MAX = 2, 12
MAX_GOLD = MAX_FACTS = 3
SENTENCE_BREAKS = "。！？；\n\r"

FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.S)
HEADING = re.compile(r"^#{1,6}[ \t]+\S.*$", re.M)


@dataclass
class Passage:
    heading: str
    start: int  # offset in the body where the passage text starts (after the heading line)
    end: int
    text: str


class CorpusFile:
    """A corpus file's body split into passages at Markdown headings."""

    def __init__(self, path: Path):
        text = path.read_text(encoding="utf-8-sig")
        m = FRONT_MATTER.match(text)
        self.body = text[m.end():] if m else text
        self.passages: list[Passage] = []
        heads = list(HEADING.finditer(self.body))
        # text before the first heading is a passage without a heading
        bounds = [("", 0, heads[0].start() if heads else len(self.body))]
        for i, h in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(self.body)
            bounds.append((h.group(0).strip(), h.end(), end))
        for heading, start, end in bounds:
            self.passages.append(Passage(heading, start, end, self.body[start:end]))

    def passages_containing(self, s: str) -> list[Passage]:
        return [p for p in self.passages if s in p.text]


def _load(corpus_dir: Path, source: str, cache: dict) -> CorpusFile | None:
    if source not in cache:
        p = (corpus_dir / source).resolve()
        try:
            p.relative_to(corpus_dir.resolve())
        except ValueError:
            cache[source] = None
            return None
        cache[source] = CorpusFile(p) if p.is_file() else None
    return cache[source]


def _check_record(rec: dict, where: str, corpus_dir: Path, cache: dict) -> list[str]:
    problems: list[str] = []

    def bad(msg: str) -> None:
        problems.append(f"{where}: {msg}")

    missing = [k for k in FIELDS if k not in rec]
    extra = [k for k in rec if k not in FIELDS and k not in OPTIONAL]
    if missing:
        bad(f"缺少字段 {missing}")
    if extra:
        bad(f"多余字段 {extra}")
    for k, t in (FIELDS | OPTIONAL).items():
        if k in rec and not isinstance(rec[k], t):
            bad(f"字段 {k} 应为 {t.__name__}，实际为 {type(rec[k]).__name__}")
    if problems:
        return problems

    question = rec["question"].strip()
    if not question:
        bad("question 为空")
    if "split" in rec and rec["split"] not in SPLITS:
        bad(f"split {rec['split']!r} 不在 {list(SPLITS)} 中")
    for a in rec.get("acceptable", []):
        if not (isinstance(a, dict) and set(a) == {"source", "section"}):
            bad(f"acceptable 条目应为 {{source, section}}：{a!r}")
            continue
        cf = _load(corpus_dir, a["source"], cache)
        if cf is None:
            bad(f"acceptable 文件不存在：{a['source']}")
        elif not any(p.heading.lstrip("#").strip() == a["section"] for p in cf.passages):
            bad(f"acceptable 章节在 {a['source']} 中找不到：{a['section']!r}")
    if rec["style"] not in STYLES:
        bad(f"style {rec['style']!r} 不在 {list(STYLES)} 中")
    if rec["category"] not in CATEGORIES:
        bad(f"category {rec['category']!r} 不在固定类别中")

    answerable = rec["answerable"]
    gold, facts = rec["gold"], rec["facts"]
    if answerable != (rec["style"] != "unanswerable"):
        bad("style 为 unanswerable 当且仅当 answerable 为 false")
    if answerable == (rec["category"] in UNANSWERABLE_CATEGORIES):
        bad("category out_of_scope/not_covered 只能用于不可回答的问题，且不可回答的问题必须用它们")

    if not answerable:
        if gold != []:
            bad("不可回答的问题 gold 必须为 []")
        if facts != []:
            bad("不可回答的问题 facts 必须为 []")
        return problems

    if not 1 <= len(gold) <= MAX_GOLD:
        bad(f"gold 应有 1-{MAX_GOLD} 条，实际 {len(gold)} 条")
    if not 1 <= len(facts) <= MAX_FACTS:
        bad(f"facts 应有 1-{MAX_FACTS} 条，实际 {len(facts)} 条")

    gold_passages: list[Passage] = []
    seen_passages: set[tuple[str, int]] = set()
    for j, g in enumerate(gold, 1):
        gw = f"gold[{j}]"
        if not isinstance(g, dict) or set(g) != {"source", "evidence"}:
            bad(f"{gw} 应为只含 source 和 evidence 的对象")
            continue
        source, evidence = g["source"], g["evidence"]
        if not isinstance(source, str) or not isinstance(evidence, str):
            bad(f"{gw} 的 source 和 evidence 应为字符串")
            continue
        if not EVIDENCE_MIN <= len(evidence) <= EVIDENCE_MAX:
            bad(f"{gw} evidence 长度 {len(evidence)}，应在 {EVIDENCE_MIN}-{EVIDENCE_MAX} 之间：{evidence!r}")
        breaks = [c for c in SENTENCE_BREAKS if c in evidence]
        if breaks:
            bad(f"{gw} evidence 跨句（含 {breaks!r}）：{evidence!r}")
        if evidence and evidence in rec["question"]:
            bad(f"{gw} 问题中包含了 evidence 原文：{evidence!r}")
        doc = _load(corpus_dir, source, cache)
        if doc is None:
            bad(f"{gw} source 文件不存在：{source}")
            continue
        if evidence not in doc.body:
            bad(f"{gw} evidence 在 {source} 正文中找不到：{evidence!r}")
            continue
        found = doc.passages_containing(evidence)
        if len(found) != 1:
            heads = [p.heading or "(无标题)" for p in found]
            bad(f"{gw} evidence 在 {source} 中出现在 {len(found)} 个段落 {heads}，无法确定答案段落：{evidence!r}")
            continue
        key = (source, found[0].start)
        if key in seen_passages:
            bad(f"{gw} 与前面的 gold 指向同一段落（{source} {found[0].heading}）")
        seen_passages.add(key)
        gold_passages.append(found[0])

    for k, f in enumerate(facts, 1):
        if not isinstance(f, str):
            bad(f"facts[{k}] 应为字符串")
            continue
        if not FACT_MIN <= len(f) <= FACT_MAX:
            bad(f"facts[{k}] 长度 {len(f)}，应在 {FACT_MIN}-{FACT_MAX} 之间：{f!r}")
        if gold_passages and not any(f in p.text for p in gold_passages):
            bad(f"facts[{k}] 不在任何 gold 段落中：{f!r}")
    return problems


def _iter_records(path: Path):
    """Yield (line number, record or None, problem or None)."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                yield n, None, f"第{n}行: 空行"
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, None, f"第{n}行: JSON 格式错误（{e.msg}）"
                continue
            if not isinstance(rec, dict):
                yield n, None, f"第{n}行: 应为 JSON 对象"
                continue
            yield n, rec, None


def check_questions(path, corpus_dir) -> list[str]:
    """Return a list of problems (empty when the file is valid)."""
    path, corpus_dir = Path(path), Path(corpus_dir)
    if not path.is_file():
        return [f"{path}: 文件不存在"]
    if not corpus_dir.is_dir():
        return [f"{corpus_dir}: 语料目录不存在"]
    problems: list[str] = []
    cache: dict = {}
    ids: dict[str, int] = {}
    count = 0
    for n, rec, problem in _iter_records(path):
        if problem:
            problems.append(problem)
            continue
        count += 1
        qid = rec.get("id")
        where = f"第{n}行 {qid}" if isinstance(qid, str) else f"第{n}行"
        if isinstance(qid, str):
            if qid in ids:
                problems.append(f"{where}: id 与第{ids[qid]}行重复")
            else:
                ids[qid] = n
        problems.extend(_check_record(rec, where, corpus_dir, cache))
    if count == 0:
        problems.append(f"{path}: 没有任何问题")
    return problems


def summarize(path) -> str:
    recs = [r for _, r, p in _iter_records(Path(path)) if r is not None]
    n_ans = sum(1 for r in recs if r.get("answerable") is True)
    styles = Counter(r.get("style") for r in recs)
    cats = Counter(r.get("category") for r in recs)
    fmt = lambda c: ", ".join(f"{k}={v}" for k, v in c.most_common())  # noqa: E731
    return (
        f"OK {len(recs)} questions (answerable={n_ans}, unanswerable={len(recs) - n_ans}); "
        f"style: {fmt(styles)}; category: {fmt(cats)}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Validate the retrieval question set.")
    ap.add_argument("file", nargs="?", default=str(DEFAULT_FILE))
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    args = ap.parse_args(argv)
    problems = check_questions(args.file, args.corpus)
    if problems:
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(summarize(args.file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
