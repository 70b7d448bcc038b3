"""The benchmark runs end to end on a clean checkout and writes a report with numbers.

``--quick`` builds everything it needs in temporary folders (a 3-document
corpus subset, 20 questions, 10k synthetic vectors), so it needs no prebuilt
index; it takes about a minute or two on two cores.
"""
import json
import re
import subprocess
import sys

from rag.config import REPO_ROOT

NUM = r"\d+(?:\.\d+)?"


def test_quick_benchmark_writes_report(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "eval" / "bench.py"), "--quick", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=420, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "thread settings: threads=2" in proc.stdout

    md = (tmp_path / "bench.md").read_text(encoding="utf-8")
    assert (tmp_path / "bench.png").stat().st_size > 1000
    for row in (r"\| build \(subset\) \| cold build, s",
                r"\| build \(subset\) \| unchanged rebuild, s",
                r"\| build \(subset\) \| one document edited",
                r"\| query \| retrieve only p50, ms",
                r"\| query \| retrieve \+ answer p50, ms",
                r"\| query \| retrieve \+ answer p95, ms",
                r"\| query \| batch throughput, queries/s",
                r"\| serve \| peak RSS",
                r"\| serve \| cold start to first answer, s"):
        line = next((l for l in md.splitlines() if re.match(row, l)), None)
        assert line is not None, f"missing row {row!r} in\n{md}"
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert re.match(NUM, cells[2]), line  # ours: a number
    for kind in ("FAISS IndexFlatIP (exact)", "FAISS IVF-Flat", "FAISS HNSWFlat", "BM25"):
        line = next((l for l in md.splitlines() if l.startswith("| 10,000 | " + kind)), None)
        assert line is not None, kind
        assert re.search(rf"\| {NUM} \| {NUM} \|", line), line  # p50 / p95 latencies
    for word in ("nproc", "command:", "threads:", "date:", "met"):
        assert word in md

    data = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert data["queries"]["ours"]["total"]["p50"] > 0
    assert data["children"]["ours"]["VmHWM"] > 0 and data["children"]["ours"]["first_answer_s"] > 0
    ann = [r for r in data["scale"] if r["kind"] in ("ivf", "hnsw")]
    assert ann and all(0 <= r["recall"] <= 1 for r in ann)
