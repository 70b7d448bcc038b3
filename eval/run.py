"""Run the question set through several configurations in one process and report side by side.

Usage: ``rag eval [--questions FILE] [--config NAME ...] [--out DIR]`` or ``python -m eval.run``.
Writes ``eval/reports/report.md`` (tables) and ``eval/reports/report.png`` (chart).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rag.config import REPO_ROOT, Settings

from .metrics import score

# name -> Settings overrides (None = the plain baseline pipeline)
CONFIGS: dict[str, dict | None] = {
    "plain-baseline": None,
    "keyword": {"mode": "keyword", "expand_query": False, "typical_questions": False},
    "dense": {"mode": "dense", "expand_query": False, "typical_questions": False},
    "hybrid": {"mode": "hybrid", "expand_query": False, "typical_questions": False},
    "hybrid+lexicon": {"mode": "hybrid", "expand_query": True, "typical_questions": False},
    "hybrid+lexicon+tq-separate": {"tq_fusion": "separate"},
    "hybrid+lexicon+tq (default)": {},
}
DEFAULT_CONFIG = "hybrid+lexicon+tq (default)"
TARGETS = {"recall@5": 0.90, "recall@10": 0.95, "mrr@10": 0.80, "paraphrase_recall@5": 0.85,
           "refusal_unanswerable": 0.80, "false_refusal": 0.05, "fact_coverage": 0.80}


def load_questions(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def run_config(name: str, overrides: dict | None, questions: list[dict], base: Settings, log=print) -> dict:
    t0 = time.perf_counter()
    if overrides is None:
        from .baseline import PlainPipeline, plain_embedder

        system = PlainPipeline(base, plain_embedder(base))
        ask = lambda q: system.ask(q["question"], qid=q["id"])  # noqa: E731
    else:
        from rag.pipeline import Assistant

        assistant = Assistant(base.with_(**overrides))
        ask = lambda q: assistant.ask(q["question"], qid=q["id"])  # noqa: E731
    ask(questions[0])  # warm-up, not timed
    results = {q["id"]: ask(q) for q in questions}
    metrics = score(questions, results)
    log(f"[{name}] recall@5={metrics['recall@5']:.3f} mrr@10={metrics['mrr@10']:.3f} "
        f"({time.perf_counter() - t0:.0f}s)")
    return {"metrics": metrics, "results": results}


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3f}" if v <= 1.0 else f"{v:.1f}"
    return "—" if v is None else str(v)


def write_report(runs: dict, questions: list[dict], out_dir: Path, qfile: Path, command: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(runs)
    rows = ["recall@1", "recall@3", "recall@5", "recall@10", "mrr@10", "ndcg@10", "citation_hit",
            "fact_coverage", "refusal_unanswerable", "false_refusal", "citations_in_retrieved",
            "latency_p50_ms", "latency_p95_ms"]
    n_ans = sum(q["answerable"] for q in questions)
    lines = ["# Evaluation report", "",
             f"- questions: `{qfile}` ({len(questions)}: {n_ans} answerable, {len(questions) - n_ans} unanswerable)",
             f"- command: `{command}`", f"- date: {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r} | " + " | ".join(_fmt(runs[n]["metrics"].get(r)) for n in names) + " |")
    styles = sorted({s for n in names for s in runs[n]["metrics"]["by_style"]})
    lines += ["", "## recall@5 by style", "", "| style (n) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for s in styles:
        cnt = runs[names[0]]["metrics"]["by_style"].get(s, (0, 0))[1]
        lines.append(f"| {s} ({cnt}) | " + " | ".join(_fmt(runs[n]["metrics"]["by_style"].get(s, (None,))[0]) for n in names) + " |")
    cats = sorted({c for n in names for c in runs[n]["metrics"]["by_category"]})
    lines += ["", "## recall@5 by category", "", "| category (n) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for c in cats:
        cnt = runs[names[0]]["metrics"]["by_category"].get(c, (0, 0))[1]
        lines.append(f"| {c} ({cnt}) | " + " | ".join(_fmt(runs[n]["metrics"]["by_category"].get(c, (None,))[0]) for n in names) + " |")
    best = DEFAULT_CONFIG if DEFAULT_CONFIG in runs else names[-1]
    m = runs[best]["metrics"]
    lines += ["", f"## Targets ({best})", "", "| target | value | met |", "|---|---|---|"]
    para = m["by_style"].get("paraphrase", (float("nan"), 0))[0]
    for key, target in TARGETS.items():
        value = para if key == "paraphrase_recall@5" else m.get(key)
        if value is None:
            continue
        ok = value <= target if key == "false_refusal" else value >= target
        lines.append(f"| {key} {'≤' if key == 'false_refusal' else '≥'} {target} | {value:.3f} | {'yes' if ok else 'NO'} |")
    lines += ["", f"Missed at 5 ({best}): " + ", ".join(m["misses"])]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _chart(runs, out_dir / "report.png")
    return report


def _chart(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"]
    names = list(runs)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        ax.bar([x + i * width for x in range(len(keys))], [runs[n]["metrics"][k] for k in keys], width, label=n)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(keys))], keys)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title("Retrieval quality by configuration (dev set)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rag eval")
    p.add_argument("--questions", default=str(REPO_ROOT / "eval" / "questions.jsonl"))
    p.add_argument("--config", action="append", choices=list(CONFIGS), help="repeatable; default: all")
    p.add_argument("--corpus")
    p.add_argument("--index")
    p.add_argument("--out", default=str(REPO_ROOT / "eval" / "reports"))
    p.add_argument("--dump", help="write every config's answers as JSONL into this folder")
    args = p.parse_args(argv)
    base = Settings().with_(corpus_dir=args.corpus, index_dir=args.index)
    from rag.index import ensure_index

    ensure_index(base)
    questions = load_questions(Path(args.questions))
    names = args.config or list(CONFIGS)
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    runs = {n: run_config(n, CONFIGS[n], questions, base, log) for n in names}
    if args.dump:
        d = Path(args.dump)
        d.mkdir(parents=True, exist_ok=True)
        for n, r in runs.items():
            with open(d / f"{n}.jsonl", "w", encoding="utf-8") as fh:
                for q in questions:
                    fh.write(json.dumps(r["results"][q["id"]], ensure_ascii=False) + "\n")
    command = "rag eval " + " ".join(sys.argv[1:] if argv is None else argv)
    report = write_report(runs, questions, Path(args.out), Path(args.questions), command.strip())
    print(report.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
