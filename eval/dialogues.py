"""Follow-up questions: the dialogue dev set (eval/dialogues.jsonl), its checks, and its scores.

Usage::

    python -m eval.dialogues [--split tuning|test|all] [--out eval/reports] [--llm]   # or: rag eval --dialogues
    python -m eval.dialogues --check                                              # validate the file only

Each line is one conversation of 2–3 shopper turns, written from a situation::

    {"id": "d01", "situation": "…", "turns": ["…", "那运费谁出？"], "category": "七日无理由退货",
     "kind": "follow_up" | "topic_change", "gold": [{"source", "evidence"}], "facts": ["…"], "split": "tuning"}

``gold`` and ``facts`` are about the **last** turn and follow the rules of eval/questions.jsonl
(eval/check_questions.py: evidence 6–30 characters, verbatim in one passage of the file body,
within one sentence). ``kind``: a follow-up that leaves its matter to the earlier turns, or a
last turn that changes the topic (it must not be pulled back to the old one). ``split`` is fixed
by rule (eval/README.md): ``int(sha256(id)[:8], 16) % 2`` odd → test.

Scoring, on the last turn only: the conversation is replayed through ``Assistant.ask`` turn by
turn, each turn with the earlier turns (questions and the answers it got) as ``history``; then
the last turn is asked again with the history switched off. recall@k, MRR and citation hit are
``eval/metrics.py``'s, per kind as well.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from rag.config import REPO_ROOT, Settings

from .check_questions import _check_record
from .metrics import score

DEFAULT_FILE = REPO_ROOT / "eval" / "dialogues.jsonl"
KINDS = ("follow_up", "topic_change")
FIELDS = {"id", "situation", "turns", "category", "kind", "gold", "facts", "split"}
# Targets (issue 14), on the test part: last-turn recall@5 with history, and its gain over no history.
TARGET_RECALL = 0.85
TARGET_GAIN = 0.30


def split_of(did: str) -> str:
    return "test" if int(hashlib.sha256(did.encode("utf-8")).hexdigest()[:8], 16) % 2 else "tuning"


def load_dialogues(path: Path = DEFAULT_FILE, split: str = "all") -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows if split == "all" else [d for d in rows if d["split"] == split]


def as_question(d: dict) -> dict:
    """The last turn as an eval/questions.jsonl record (for the shared checks and metrics)."""
    return {"id": d["id"], "question": d["turns"][-1], "answerable": True, "category": d["category"],
            "style": d["kind"], "gold": d["gold"], "facts": d["facts"]}


def check_dialogues(path: Path = DEFAULT_FILE, corpus_dir: Path | None = None) -> list[str]:
    """Problems in the dialogue file (empty when it is valid)."""
    corpus_dir = Path(corpus_dir or REPO_ROOT / "corpus")
    problems: list[str] = []
    cache: dict = {}
    seen: set[str] = set()
    try:
        rows = load_dialogues(path)
    except (OSError, ValueError) as e:
        return [f"{path}: {e}"]
    for n, d in enumerate(rows, 1):
        where = f"第{n}行 {d.get('id')}"
        if set(d) != FIELDS:
            problems.append(f"{where}: 字段应为 {sorted(FIELDS)}，实际为 {sorted(d)}")
            continue
        if d["id"] in seen:
            problems.append(f"{where}: id 重复")
        seen.add(d["id"])
        turns = d["turns"]
        if not (isinstance(turns, list) and 2 <= len(turns) <= 3 and all(isinstance(t, str) and t.strip() for t in turns)):
            problems.append(f"{where}: turns 应为 2–3 个非空字符串")
            continue
        if d["kind"] not in KINDS:
            problems.append(f"{where}: kind 应为 {KINDS}")
        if d["split"] != split_of(d["id"]):
            problems.append(f"{where}: split 应为 {split_of(d['id'])}（按 id 的 sha256 规则）")
        rec = dict(as_question(d), style="colloquial")
        problems += _check_record(rec, where, corpus_dir, cache)
    if len(rows) < 40:
        problems.append(f"{path}: 只有 {len(rows)} 段对话，应至少 40 段")
    return problems


def replay(assistant, d: dict, use_llm: bool = False) -> tuple[dict, dict]:
    """(last turn answered with the conversation's history, last turn answered alone)."""
    history: list[dict] = []
    result = None
    for q in d["turns"]:
        result = assistant.ask(q, qid=d["id"], history=list(history), use_llm=use_llm)
        history += [{"role": "user", "content": q}, {"role": "assistant", "content": result["answer"]}]
    alone = assistant.ask(d["turns"][-1], qid=d["id"], use_llm=use_llm)
    return result, alone


def run(dialogues: list[dict], settings: Settings, use_llm: bool = False, log=print) -> dict:
    from rag.pipeline import Assistant

    assistant = Assistant(settings)
    assistant.ask("七天无理由退货")  # warm-up
    with_h, without_h = {}, {}
    t0 = time.perf_counter()
    for d in dialogues:
        with_h[d["id"]], without_h[d["id"]] = replay(assistant, d, use_llm)
    questions = [as_question(d) for d in dialogues]
    out = {"with_history": score(questions, with_h, corpus_dir=settings.corpus_dir),
           "without_history": score(questions, without_h, corpus_dir=settings.corpus_dir),
           "results": {"with_history": with_h, "without_history": without_h}}
    out["how"] = {d["id"]: (with_h[d["id"]].get("follow_up") or {}).get("how") for d in dialogues}
    log(f"[dialogues] {len(dialogues)}: recall@5 with history {out['with_history']['recall@5']:.3f}, "
        f"without {out['without_history']['recall@5']:.3f} ({time.perf_counter() - t0:.0f}s)")
    return out


ROWS = ("recall@1", "recall@3", "recall@5", "recall@10", "mrr@10", "citation_hit", "citation_precision",
        "first_line_hit", "fact_coverage", "false_refusal")


def _f(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def write_report(runs: dict[str, dict], dialogues: dict[str, list[dict]], out_dir: Path, command: str,
                 use_llm: bool) -> Path:
    """``runs``: split name → run(); the table has with/without history per split."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(runs)
    lines = ["# Follow-up dialogues: last-turn retrieval with and without history", "",
             "- dialogues: `eval/dialogues.jsonl` — " + ", ".join(
                 f"{n} {len(dialogues[n])} ({sum(d['kind'] == 'topic_change' for d in dialogues[n])} topic changes)"
                 for n in names),
             f"- command: `{command}`", f"- date: {time.strftime('%Y-%m-%d %H:%M')}",
             f"- follow-ups: {'rewritten by the configured LLM' if use_llm else 'no LLM: rule-based query (rag/conversation.py)'}",
             "", "| metric | " + " | ".join(f"{n}: with history | {n}: without" for n in names) + " |",
             "|---" + "|---|---" * len(names) + "|"]
    for r in ROWS:
        lines.append(f"| {r} | " + " | ".join(f"{_f(runs[n]['with_history'].get(r))} | {_f(runs[n]['without_history'].get(r))}"
                                              for n in names) + " |")
    lines += ["", "recall@5 by kind of last turn:", "", "| kind (n) | " + " | ".join(
        f"{n}: with history | {n}: without" for n in names) + " |", "|---" + "|---|---" * len(names) + "|"]
    for kind in KINDS:
        cells = []
        for n in names:
            w, wo = runs[n]["with_history"]["by_style"].get(kind), runs[n]["without_history"]["by_style"].get(kind)
            cells.append(f"{_f(w[0]) if w else '—'} | {_f(wo[0]) if wo else '—'}")
        cnt = sum(d["kind"] == kind for n in names[-1:] for d in dialogues[n])
        lines.append(f"| {kind} ({cnt} in {names[-1]}) | " + " | ".join(cells) + " |")
    if "test" in runs:
        m, m0 = runs["test"]["with_history"]["recall@5"], runs["test"]["without_history"]["recall@5"]
        lines += ["", "## Targets (test part)", "", "| target | value | met |", "|---|---|---|",
                  f"| last-turn recall@5 with history ≥ {TARGET_RECALL} | {m:.3f} | {'yes' if m >= TARGET_RECALL else 'NO'} |",
                  f"| gain over no history ≥ {TARGET_GAIN} | {m - m0:+.3f} | {'yes' if m - m0 >= TARGET_GAIN else 'NO'} |"]
    if "tuning" in runs:
        r = runs["tuning"]
        lines += ["", "Tuning part (may be looked at): missed at 5 with history: "
                  + (", ".join(r["with_history"]["misses"]) or "none")
                  + "; how each last turn was retrieved: " + ", ".join(f"{k} {v}" for k, v in r["how"].items())]
    path = out_dir / "dialogues.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.dialogues")
    p.add_argument("--dialogues", default=str(DEFAULT_FILE))
    p.add_argument("--split", choices=["all", "tuning", "test", "both"], default="both",
                   help="both (default): tuning and test side by side")
    p.add_argument("--corpus")
    p.add_argument("--index")
    p.add_argument("--out", default=str(REPO_ROOT / "eval" / "reports"))
    p.add_argument("--llm", action="store_true", help="let the configured LLM rewrite follow-ups (RAG_LLM_*)")
    p.add_argument("--check", action="store_true", help="only validate the dialogue file")
    args = p.parse_args(argv)
    settings = Settings().with_(corpus_dir=args.corpus, index_dir=args.index)
    problems = check_dialogues(Path(args.dialogues), settings.corpus_dir)
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        print(f"错误：对话文件 {args.dialogues} 有 {len(problems)} 处问题。", file=sys.stderr)
        return 2
    if args.check:
        print(f"OK {len(load_dialogues(Path(args.dialogues)))} dialogues")
        return 0
    from rag.store import ensure_index

    ensure_index(settings)
    splits = ["tuning", "test"] if args.split == "both" else [args.split]
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    dialogues = {s: load_dialogues(Path(args.dialogues), s) for s in splits}
    runs = {s: run(dialogues[s], settings, args.llm, log) for s in splits}
    command = "python -m eval.dialogues " + " ".join(sys.argv[1:] if argv is None else argv)
    report = write_report(runs, dialogues, Path(args.out), command.strip(), args.llm)
    print(report.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
