#!/usr/bin/env python
"""Serving benchmark: many shoppers at once (HTTP API and web app), and bulk answering (`rag ask --batch`).

Usage::

    python -m eval.bench_serving [--before REPO] [--clients 1,5,20] [--out eval/reports] [--quick]

1. **Concurrency.** A server (``ui.server.serve``: FastAPI + the Gradio app, exactly as ``rag serve``
   runs it) is started in a subprocess from this checkout and, with ``--before REPO``, from another
   checkout of the code (e.g. ``git archive <commit> | tar -x -C /tmp/before``), both over the same
   copy of the index. A load process (``--load``, so that the clients do not share the server's
   interpreter) runs N closed-loop clients, each on its own kept-alive connection, asking dev
   questions one after another: ``POST /api/v1/ask`` for the API, and Gradio's HTTP queue
   (``/gradio_api/queue/join`` + the ``queue/data`` event stream, one new session per question)
   for the web app. Throughput = answered questions / wall time; latency per question; errors =
   non-200, a failed event, or an answer without text.
2. **Batch.** In this process: ``Assistant.ask`` one question at a time (what ``rag ask --batch`` did
   before), ``Assistant.ask_batch`` (what it does now: query embeddings computed in batches), and
   the plain pipeline batched (``eval/baseline.py``: sentence-transformers on torch, batches of 32,
   FAISS flat). Rounds are interleaved; the median round is reported. JSON output is produced
   (``json.dumps``) for ours as the CLI does.

Writes ``<out>/bench_serving.md`` and ``<out>/bench_serving.json``; ``eval/bench.py`` runs the same
sections and adds the tables to ``bench.md``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from statistics import median

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

TARGETS = {"api_20_qps": 50.0, "api_20_p95_s": 0.5, "batch_vs_plain": 0.5}
# The server as `rag serve` runs it, from the checkout given as argv[1] (sys.path first, so that
# checkout's rag/ and ui/ are imported, not the installed one).
SERVER_CODE = """
import os, sys
repo, index, corpus, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, repo)
os.chdir(repo)
import rag
assert os.path.dirname(os.path.dirname(os.path.abspath(rag.__file__))) == os.path.abspath(repo), rag.__file__
from rag.config import Settings
from ui.server import serve
serve(Settings().with_(index_dir=index, corpus_dir=corpus), host="127.0.0.1", port=port, admin=None)
"""


def log(msg: str) -> None:
    print(f"[bench-serving {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- load clients

WEB_INPUTS = ("question", "chat", "turns", 5, "hybrid", False, False)  # the ask tab's respond() inputs


class ApiClient:
    """POST /api/v1/ask on one kept-alive connection."""

    def __init__(self, host: str, port: int):
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def ask(self, question: str) -> None:
        body = json.dumps({"question": question}, ensure_ascii=False).encode("utf-8")
        self.conn.request("POST", "/api/v1/ask", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        if not json.loads(data).get("answer"):
            raise RuntimeError("answer missing")


class WebClient:
    """The web app's ask button through Gradio's HTTP queue: join, then read the event stream
    until the event completes. A new session per question (a new conversation)."""

    def __init__(self, host: str, port: int, fn_index: int = 0, prefix: str = "/gradio_api"):
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.fn_index, self.prefix = fn_index, prefix

    def ask(self, question: str) -> None:
        session = uuid.uuid4().hex[:11]
        data = [question, [], None, *WEB_INPUTS[3:]]
        body = json.dumps({"data": data, "event_data": None, "fn_index": self.fn_index, "trigger_id": None,
                           "session_hash": session}, ensure_ascii=False).encode("utf-8")
        self.conn.request("POST", f"{self.prefix}/queue/join", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"join HTTP {resp.status}: {raw[:200]!r}")
        self.conn.request("GET", f"{self.prefix}/queue/data?session_hash={session}",
                          headers={"Accept": "text/event-stream"})
        resp = self.conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"data HTTP {resp.status}: {resp.read()[:200]!r}")
        done = None
        while True:
            line = resp.readline()
            if not line:
                break
            if not line.startswith(b"data:"):
                continue
            msg = json.loads(line[5:])
            kind = msg.get("msg")
            if kind == "process_completed":
                done = msg
            if kind == "close_stream" or (done is not None and kind != "process_completed"):
                break
        resp.read()  # the rest of the chunked body, so the connection can be reused
        if done is None or not done.get("success"):
            raise RuntimeError(f"event failed: {str(done)[:200]}")
        chat = (done.get("output") or {}).get("data", [None])[0] or []
        text = json.dumps(chat[-1], ensure_ascii=False) if chat else ""
        if "rag-answer" not in text:
            raise RuntimeError(f"no answer in the chat: {text[:200]}")


def web_fn_index(host: str, port: int) -> tuple[int, str]:
    """The first ``respond`` event of the ask tab, and the Gradio API prefix."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/config")
    cfg = json.loads(conn.getresponse().read())
    for i, dep in enumerate(cfg["dependencies"]):
        if dep.get("api_name") == "respond":
            return int(dep.get("id", i)), cfg.get("api_prefix", "/gradio_api")
    raise RuntimeError("the web app has no respond event")


def run_load(kind: str, url: str, clients: int, per_client: int, questions: list[str], warmup: int = 2) -> dict:
    """``clients`` threads, each asking ``per_client`` questions back to back (after ``warmup`` untimed ones)."""
    from urllib.parse import urlsplit

    u = urlsplit(url)
    host, port = u.hostname, u.port
    if kind == "web":
        fn, prefix = web_fn_index(host, port)
        make = lambda: WebClient(host, port, fn, prefix)  # noqa: E731
    else:
        make = lambda: ApiClient(host, port)  # noqa: E731
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    ends: list[float] = []

    def client(i: int) -> None:
        c = make()
        for j in range(warmup):
            try:
                c.ask(questions[(i * 7 + j) % len(questions)])
            except Exception:  # noqa: BLE001 - warm-up only
                c = make()
        ready.wait()
        for j in range(per_client):
            q = questions[(i * per_client + j) % len(questions)]
            t = time.perf_counter()
            try:
                c.ask(q)
                with lock:
                    lat.append((time.perf_counter() - t) * 1000)
            except Exception as e:  # noqa: BLE001 - counted, and the client goes on on a new connection
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:300])
                c = make()
        with lock:
            ends.append(time.perf_counter())

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = max(ends) - t0 if ends else 0.0
    n = len(lat)
    return {"kind": kind, "clients": clients, "requests": clients * per_client, "answered": n,
            "errors": len(errors), "error_samples": errors[:3], "wall_s": wall,
            "qps": n / wall if wall else 0.0, "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95),
            "mean_ms": sum(lat) / n if n else None}


def load_child(kind: str, url: str, clients: int, per_client: int, qfile: Path, timeout: float = 600) -> dict:
    """``run_load`` in a separate process: the clients must not share the measuring process's GIL."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--load", kind, "--url", url, "--clients", str(clients),
           "--per-client", str(per_client), "--qfile", str(qfile)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"load process failed (rc {proc.returncode}): {proc.stderr[-1500:]}")


# ----------------------------------------------------------------------------- servers

class Server:
    def __init__(self, repo: Path, index_dir: Path, corpus_dir: Path, env: dict | None = None):
        self.repo, self.port = Path(repo).resolve(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="rag-bench-server-", suffix=".log", delete=False)
        cmd = [sys.executable, "-c", SERVER_CODE, str(self.repo), str(index_dir), str(corpus_dir), str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=self.repo, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server from {self.repo} exited: {self.tail()}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/api/v1/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"server from {self.repo} did not start: {self.tail()}")
            time.sleep(0.3)

    def memory(self) -> dict:
        """Peak and current resident memory of the server process, MB (file-backed pages: the mapped model)."""
        out = {}
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(("VmHWM:", "VmRSS:", "RssAnon:", "RssFile:")):
                    key, val = line.split(":", 1)
                    out[key] = int(val.split()[0]) / 1024
        except OSError:
            pass
        return out

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


def bench_concurrency(versions: dict[str, Path], index_dir: Path, corpus_dir: Path, questions: list[str],
                      clients=(1, 5, 20), per_client: dict | None = None, kinds=("api", "web"),
                      rounds: int = 1) -> list[dict]:
    """One row per (version, kind, clients): qps, p50/p95, errors. ``rounds`` > 1 alternates the versions
    round by round (each round starts every server afresh) and keeps, per cell, the round with the median qps."""
    per_client = per_client or {1: 60, 5: 20, 20: 10}
    with tempfile.TemporaryDirectory(prefix="rag-bench-serving-") as tmp:
        qfile = Path(tmp) / "questions.json"
        qfile.write_text(json.dumps(questions, ensure_ascii=False), encoding="utf-8")
        cells: dict[tuple, list[dict]] = {}
        for r in range(rounds):
            for label, repo in versions.items():
                log(f"round {r + 1}/{rounds}: server from {repo} ({label})")
                server = Server(repo, index_dir, corpus_dir)
                try:
                    for kind in kinds:
                        for n in clients:
                            res = load_child(kind, server.url, n, per_client.get(n, 10), qfile)
                            res.update(version=label, loadavg=loadavg())
                            cells.setdefault((label, kind, n), []).append(res)
                            log(f"  {label} {kind} {n:>2} clients: {res['qps']:.1f} q/s, p50 {res['p50_ms']:.0f} ms, "
                                f"p95 {res['p95_ms']:.0f} ms, errors {res['errors']}")
                    cells.setdefault((label, "memory", 0), []).append(dict(server.memory(), version=label, kind="memory",
                                                                              clients=0, qps=0.0))
                finally:
                    server.close()
    rows = []
    for key, runs in cells.items():
        runs = sorted(runs, key=lambda x: x["qps"])
        row = dict(runs[len(runs) // 2])
        row["rounds_qps"] = [round(x["qps"], 1) for x in cells[key]]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- batch

def bench_batch(settings, questions: list[str], rounds: int = 3, plain=None) -> dict:
    """Seconds per question: one-by-one ``ask`` (before), ``ask_batch`` (``rag ask --batch`` now), plain batched."""
    from rag.pipeline import Assistant

    assistant = Assistant(settings)
    if plain is None:
        from eval.baseline import PlainPipeline, plain_embedder

        plain = PlainPipeline(settings, plain_embedder(settings))
    items = [(i, q) for i, q in enumerate(questions)]
    for q in questions[:5]:  # warm-up: jieba, encoder buffers, torch
        assistant.ask(q)
    plain.ask_batch(questions[:32])
    list(assistant.ask_batch(items[:32]))
    times: dict[str, list[float]] = {"one_by_one": [], "batched": [], "batched_texts": [], "plain_batched": []}
    same = True
    texts_same = None
    retriever = assistant._retriever
    for r in range(rounds):
        t = time.perf_counter()
        singles = [json.dumps(assistant.ask(q, qid=i), ensure_ascii=False) for i, q in items]
        times["one_by_one"].append(time.perf_counter() - t)
        t = time.perf_counter()
        batched = [json.dumps(res, ensure_ascii=False) for _, _, res in assistant.ask_batch(items)]
        times["batched"].append(time.perf_counter() - t)
        # The alternative not taken: the texts themselves encoded in length-sorted batches of 16.
        t = time.perf_counter()
        vectors = retriever.query_vectors(questions)
        by_texts = [json.dumps(assistant.ask(q, qid=i, query_vector=v), ensure_ascii=False)
                    for (i, q), v in zip(items, vectors)]
        times["batched_texts"].append(time.perf_counter() - t)
        t = time.perf_counter()
        plain.ask_batch(questions)
        times["plain_batched"].append(time.perf_counter() - t)
        if r == 0:
            strip = lambda s: {k: v for k, v in json.loads(s).items() if k != "timings_ms"}  # noqa: E731
            same = all(strip(a) == strip(b) for a, b in zip(singles, batched)) and len(singles) == len(batched)
            texts_same = sum(strip(a) == strip(b) for a, b in zip(singles, by_texts))
        log(f"batch round {r + 1}: " + ", ".join(f"{k} {v[-1] / len(questions) * 1000:.2f} ms/q" for k, v in times.items()))
    n = len(questions)
    out = {"n": n, "rounds": rounds, "identical_json": same, "batched_texts_identical": texts_same,
           "workers": assistant.settings.query_workers or min(2, os.cpu_count() or 1),
           "batch_size": assistant.settings.embed_batch_size,
           **{k: {"ms_per_q": median(v) / n * 1000, "qps": n / median(v), "rounds_s": [round(x, 3) for x in v]}
              for k, v in times.items()}}
    out["batched_vs_plain"] = out["batched"]["ms_per_q"] / out["plain_batched"]["ms_per_q"]
    out["one_by_one_vs_plain"] = out["one_by_one"]["ms_per_q"] / out["plain_batched"]["ms_per_q"]
    return out


# ----------------------------------------------------------------------------- report

def fmt(v, d: int = 1) -> str:
    return "—" if v is None else f"{v:.{d}f}"


def tables(res: dict) -> tuple[list[str], list[dict]]:
    L: list[str] = []
    verdicts: list[dict] = []
    rows = res.get("concurrency") or []
    if rows:
        versions = list(dict.fromkeys(r["version"] for r in rows))
        L += ["### Concurrent clients (closed loop, each client asks its next question when answered)", "",
              "| path | clients | " + " | ".join(f"{v}: q/s | {v}: p50 ms | {v}: p95 ms | {v}: errors" for v in versions)
              + " |", "|---|---" + "|---|---|---|---" * len(versions) + "|"]
        by = {(r["version"], r["kind"], r["clients"]): r for r in rows}
        memory = [(v, by[(v, "memory", 0)]) for v in versions if (v, "memory", 0) in by]
        for kind, label in (("api", "HTTP API `POST /api/v1/ask`"), ("web", "web app (Gradio queue)")):
            for n in sorted({r["clients"] for r in rows if r["kind"] == kind}):
                cells = []
                for v in versions:
                    r = by.get((v, kind, n))
                    cells.append("— | — | — | —" if r is None else
                                 f"{fmt(r['qps'])} | {fmt(r['p50_ms'], 0)} | {fmt(r['p95_ms'], 0)} | {r['errors']}")
                L.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
        if memory:
            L += ["", "Server memory after these runs (MB; file-backed = mapped model pages, shared with the page cache): "
                  + "; ".join(f"{v}: peak {m.get('VmHWM', 0):.0f}, anonymous {m.get('RssAnon', 0):.0f}, "
                              f"file-backed {m.get('RssFile', 0):.0f}" for v, m in memory)]
        L.append("")
        after = versions[-1]
        r20 = by.get((after, "api", 20))
        if r20:
            verdicts.append({"target": "20 clients over the HTTP API: throughput", "goal": "≥ 50 q/s",
                             "measured": f"{r20['qps']:.1f} q/s", "ok": r20["qps"] >= TARGETS["api_20_qps"]})
            verdicts.append({"target": "20 clients over the HTTP API: p95, errors", "goal": "p95 ≤ 0.5 s, 0 errors",
                             "measured": f"{r20['p95_ms'] / 1000:.2f} s, {r20['errors']} errors",
                             "ok": r20["p95_ms"] <= TARGETS["api_20_p95_s"] * 1000 and r20["errors"] == 0})
        if len(versions) > 1:
            b1, a1 = by.get((versions[0], "api", 1)), by.get((after, "api", 1))
            if a1 and b1:
                verdicts.append({"target": "single-client p50 (HTTP API) not worse than before", "goal": "≤ before",
                                 "measured": f"{a1['p50_ms']:.1f} ms vs {b1['p50_ms']:.1f} ms before",
                                 "ok": a1["p50_ms"] <= b1["p50_ms"] * 1.05})
    b = res.get("batch")
    if b:
        L += [f"### Bulk answering ({b['n']} dev questions, median of {b['rounds']} interleaved rounds)", "",
              "| system | ms per question | questions/s | vs plain batched |", "|---|---|---|---|",
              f"| ours, one question at a time (`rag ask --batch` before) | {fmt(b['one_by_one']['ms_per_q'], 2)} | "
              f"{fmt(b['one_by_one']['qps'])} | {b['one_by_one_vs_plain']:.2f}× |",
              f"| ours, `rag ask --batch` now (`Assistant.ask_batch`: query vectors computed ahead on "
              f"{b.get('workers', 2)} one-thread encoder workers while answering) | "
              f"{fmt(b['batched']['ms_per_q'], 2)} | {fmt(b['batched']['qps'])} | {b['batched_vs_plain']:.2f}× |",
              *([f"| ours, texts encoded in length-sorted batches of {b['batch_size']} (not used: "
                 f"{b['n'] - b['batched_texts_identical']} of {b['n']} answers differ from one-by-one) | "
                 f"{fmt(b['batched_texts']['ms_per_q'], 2)} | {fmt(b['batched_texts']['qps'])} | "
                 f"{b['batched_texts']['ms_per_q'] / b['plain_batched']['ms_per_q']:.2f}× |"]
                if b.get("batched_texts") else []),
              f"| plain pipeline batched (torch, batches of 32, FAISS flat; retrieval only) | "
              f"{fmt(b['plain_batched']['ms_per_q'], 2)} | {fmt(b['plain_batched']['qps'])} | 1.00× |", "",
              f"Ours answers (retrieve + compose + JSON line); the plain pipeline only retrieves. "
              f"Batched JSON identical to one-by-one (timings aside): {'yes' if b['identical_json'] else 'NO'}.", ""]
        verdicts.append({"target": "`rag ask --batch` vs plain pipeline batched, time per question", "goal": "≤ 0.5×",
                         "measured": f"{b['batched_vs_plain']:.2f}×", "ok": b["batched_vs_plain"] <= TARGETS["batch_vs_plain"]})
    return L, verdicts


def write_report(res: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    L, verdicts = tables(res)
    res["verdicts"] = verdicts
    lines = ["# Serving benchmark: concurrent shoppers and bulk answering", "",
             f"- command: `{res['command']}`", f"- date: {res['date']}",
             f"- machine: {os.cpu_count()} CPUs; load average at start / end: {res['loadavg_start']} / {res['loadavg_end']}",
             "- versions: " + "; ".join(f"{k} = `{v}`" for k, v in res.get("versions", {}).items()),
             f"- thread settings: {res.get('thread_settings', '')}", "",
             "| target | goal | measured | status |", "|---|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v['target']} | {v['goal']} | {v['measured']} | {'met' if v['ok'] else 'NOT MET'} |")
    lines += ["", *L]
    (out_dir / "bench_serving.json").write_text(json.dumps(res, ensure_ascii=False, indent=1, default=str),
                                                encoding="utf-8")
    path = out_dir / "bench_serving.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def section(settings, questions: list[str], before: str | None = None, quick: bool = False,
            clients: tuple = (1, 5, 20), rounds: int = 1, skip_concurrency: bool = False,
            skip_batch: bool = False) -> dict:
    """Both parts over ``settings``' index and corpus (the index is copied first: every server reads the
    same copy, whatever happens to the original meanwhile)."""
    res: dict = {"thread_settings": thread_settings(), "loadavg_start": loadavg()}
    if not skip_concurrency:
        versions = {}
        if before:
            versions["before"] = Path(before)
        versions["after" if before else "now"] = REPO_ROOT
        res["versions"] = {k: str(v) for k, v in versions.items()}
        with tempfile.TemporaryDirectory(prefix="rag-bench-index-") as tmp:
            index_copy = Path(tmp) / "index"
            shutil.copytree(settings.index_dir, index_copy,
                            ignore=shutil.ignore_patterns(".lock", "api_keys.json", "conversations.sqlite3*"))
            per = {n: 3 for n in clients} if quick else {1: 60, 5: 20, 20: 10}
            res["concurrency"] = bench_concurrency(versions, index_copy, settings.corpus_dir, questions, clients, per,
                                                   rounds=rounds)
    if not skip_batch:
        res["batch"] = bench_batch(settings, questions, rounds=1 if quick else 3)
    res["loadavg_end"] = loadavg()
    return res


def run(args) -> dict:
    from eval.run import load_questions
    from rag.config import Settings

    questions = [q["question"] for q in load_questions(Path(args.questions))]
    if args.limit:
        questions = questions[:: max(1, len(questions) // args.limit)][: args.limit]
    res: dict = {"command": "python -m eval.bench_serving " + " ".join(shlex.quote(a) for a in args.argv),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    base = Settings().with_(index_dir=args.index, corpus_dir=args.corpus)
    res.update(section(base, questions, args.before, args.quick, tuple(int(x) for x in args.clients.split(",")),
                       args.rounds, args.skip_concurrency, args.skip_batch))
    return res


def thread_settings() -> str:
    from rag.config import Settings

    s = Settings()
    parts = [f"RAG_THREADS={os.environ.get('RAG_THREADS', '') or 'unset'} (encoder intra-op threads; 0/unset = 2 on ONNX)"]
    for name in ("query_batch", "query_batch_wait_ms", "web_concurrency"):
        if hasattr(s, name):
            parts.append(f"{name}={getattr(s, name)}")
    return ", ".join(parts)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Two threads for the encoder of each system, as eval/bench.py pins them: ONNX's default, and torch
    # (which would otherwise get one) for the plain pipeline's batches.
    os.environ.setdefault("RAG_THREADS", "2")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", help="another checkout of the code to measure beside this one (e.g. the last commit)")
    p.add_argument("--clients", default="1,5,20")
    p.add_argument("--rounds", type=int, default=1, help="concurrency rounds (versions alternate; median kept)")
    p.add_argument("--questions", default=str(REPO_ROOT / "eval" / "questions.jsonl"))
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--index", default=None, help="index folder (default: the repo's index/, copied first)")
    p.add_argument("--corpus", default=None)
    p.add_argument("--out", default=str(REPO_ROOT / "eval" / "reports"))
    p.add_argument("--quick", action="store_true", help="3 questions per client, one batch round (tests)")
    p.add_argument("--skip-concurrency", action="store_true")
    p.add_argument("--skip-batch", action="store_true")
    p.add_argument("--load", choices=["api", "web"], help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--per-client", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--qfile", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = argv
    if args.load:
        qs = json.loads(Path(args.qfile).read_text(encoding="utf-8"))
        print("RESULT " + json.dumps(run_load(args.load, args.url, int(args.clients), args.per_client, qs)), flush=True)
        return 0
    res = run(args)
    path = write_report(res, Path(args.out))
    print(path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
