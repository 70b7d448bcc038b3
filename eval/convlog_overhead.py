"""How much the conversation log adds to a question (target: ≤ 2 ms).

Usage: ``python -m eval.convlog_overhead [--index DIR] [--questions FILE] [-n 200]``

Asks the question set with logging on and off (interleaved, same Assistant, log in a
temporary file, never the index folder), and times the logging call itself: what a question
waits for is ``convlog.record`` (a queue put); masking and the SQLite insert run on the
writer thread. Prints the per-question overhead (median, p95, mean) and how long the writer
took to store everything.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rag.config import REPO_ROOT, Settings


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default=None, help="index folder (default: the repo's index/; only read)")
    ap.add_argument("--questions", default=str(REPO_ROOT / "eval" / "questions.jsonl"))
    ap.add_argument("-n", type=int, default=200, help="questions to ask (cycled through the file)")
    args = ap.parse_args(argv)

    from rag import convlog
    from rag.pipeline import Assistant

    tmp = Path(tempfile.mkdtemp(prefix="convlog-bench-"))
    base = Settings().with_(index_dir=args.index) if args.index else Settings()
    on = base.with_(convlog=True, convlog_file=tmp / "log.sqlite3")
    qs = [json.loads(line)["question"] for line in Path(args.questions).read_text(encoding="utf-8").splitlines()
          if line.strip()]
    qs = [qs[i % len(qs)] + ("，我的手机号 13812345678" if i % 3 == 0 else "") for i in range(args.n)]
    a = Assistant(base)
    for q in qs[:10]:  # warm up: jieba, encoder buffers
        a.ask(q)

    with_log, without, record_us = [], [], []
    for i, q in enumerate(qs):
        for logged in ((True, False) if i % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            result = a.ask(q)
            if logged:
                t1 = time.perf_counter()
                convlog.record(on, result, "web", mode="hybrid", k=5)
                record_us.append((time.perf_counter() - t1) * 1e6)
                with_log.append((time.perf_counter() - t0) * 1000)
            else:
                without.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    conv = convlog.for_settings(on)
    conv.flush(timeout=60)
    drain = time.perf_counter() - t0
    stored = len(conv.rows())
    masked = sum("[手机号]" in r["question"] for r in conv.rows())

    print(f"questions: {len(qs)} with the log, {len(qs)} without (interleaved), index {a.index.version}")
    print(f"convlog.record (what a question waits for): median {statistics.median(record_us):.1f} µs, "
          f"p95 {_pct(record_us, 95):.1f} µs, max {max(record_us):.1f} µs")
    print(f"ask + log:  median {statistics.median(with_log):.2f} ms, p95 {_pct(with_log, 95):.2f} ms, "
          f"mean {statistics.mean(with_log):.2f} ms")
    print(f"ask alone:  median {statistics.median(without):.2f} ms, p95 {_pct(without, 95):.2f} ms, "
          f"mean {statistics.mean(without):.2f} ms")
    print(f"difference: median {statistics.median(with_log) - statistics.median(without):+.2f} ms, "
          f"mean {statistics.mean(with_log) - statistics.mean(without):+.2f} ms (target ≤ 2 ms)")
    print(f"writer: {stored} rows stored ({masked} with a masked phone number); "
          f"{drain * 1000:.0f} ms to drain what was still queued at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
