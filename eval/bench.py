#!/usr/bin/env python
"""Performance benchmark: index build, query latency, serving memory, cold start, synthetic scale.

Usage::

    python eval/bench.py [--quick] [--out eval/reports] [--scales 10000,100000,1000000] [--threads 2]

One process measures, on the shipped corpus (``corpus/``) and the dev questions
(``eval/questions.jsonl``), our pipeline against the plain baseline
(``eval/baseline.py``):

1. index build: cold, unchanged rebuild, one document edited / deleted / added
   (ours, into a temporary index folder over a temporary copy of the corpus)
   and the plain pipeline's full embed; chunks/s embedded;
2. warm query latency p50/p95 and queries/s (retrieve only; retrieve + answer);
3. serving peak RSS and cold start to first answer, each system measured in a
   subprocess of this script (``--child ours|plain``);
4. synthetic scale (10k/100k/1M vectors): FAISS flat vs IVF-Flat / HNSW (build
   time, size, latency, recall@10 vs exact), BM25 over synthetic Chinese text,
   and our full hybrid ``Retriever.retrieve`` over those indexes.

Writes ``<out>/bench.md``, ``<out>/bench.png`` and ``<out>/bench.json``.

``--stores`` runs only the store comparison instead (``rag/store.py``): FAISS files vs Milvus Lite at
``--scales`` (default 10k and 100k synthetic chunks), each in its own process: build, open, hybrid
``Retriever.retrieve`` p50/p95 and memory; writes ``<out>/bench_stores.md`` and ``bench_stores.json``.
``--quick`` (used by tests/test_bench_smoke.py) indexes a 3-document subset of
the corpus, answers 20 questions and runs the 10k scale only.
"""
from __future__ import annotations

import os
import sys
import time

_T_SCRIPT = time.time()  # the child reports this so the parent can split interpreter start-up from imports


def _early_option(argv: list[str], name: str, default: str) -> str:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


# Thread pools and OpenMP wait policies are fixed when torch/faiss/BLAS load, so this runs before those imports.
THREADS = int(_early_option(sys.argv[1:], "--threads", "2"))
NO_PIN = "--no-pin" in sys.argv[1:]  # a child measuring the product's own thread defaults
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "RAG_THREADS")
if not NO_PIN:
    for _var in THREAD_ENV:
        os.environ[_var] = str(THREADS)
_POLICY = _early_option(sys.argv[1:], "--omp-wait-policy", "inherit").upper()
if _POLICY in ("PASSIVE", "ACTIVE"):
    os.environ["OMP_WAIT_POLICY"] = _POLICY
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rag  # noqa: F401  (whatever environment defaults the package sets apply to this process too)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["MPLBACKEND"] = "Agg"

import argparse
import dataclasses
import gc
import json
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np

DIM_DEFAULT = 384
QUICK_DOCS = ["laws/civil-code-tort-product-liability-excerpt.md",
              "laws/spc-food-safety-civil-disputes-interpretation-1.md",
              "laws/spc-food-drug-disputes-provisions.md"]
# (edited, deleted-then-added) documents for the incremental rebuild steps
FULL_EDIT = ("laws/consumer-protection-law.md", "laws/price-marking-and-price-fraud-provisions.md")
QUICK_EDIT = (QUICK_DOCS[1], QUICK_DOCS[0])
APPENDED = "\n\n本条为基准测试追加的一句话：经营者应当在七日内答复消费者的退货申请。\n"
TARGETS = {
    "query_p50_ms": 25.0, "query_p95_ms": 60.0, "speedup_vs_plain": 2.0, "scale_1m_p50_ms": 60.0,
    "ann_recall": 0.95, "unchanged_rebuild_s": 2.0, "serve_rss_mb": 1.2 * 1024, "cold_start_s": 15.0,
}


# ----------------------------------------------------------------------------- small helpers

def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pin_threads(n: int | None, torch_too: bool = True) -> dict:
    """Pin torch/faiss to n threads (None: leave the libraries' and rag's own defaults) and describe the result.

    ``torch_too=False`` leaves torch unimported: our serving process never loads it, and importing it
    here would add its libraries to the RSS and start-up time being measured.
    """
    import faiss

    torch = None
    if torch_too or "torch" in sys.modules:
        import torch
    if n is not None:
        if torch is not None:
            torch.set_num_threads(n)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # already set (parallel work ran before)
                pass
        faiss.omp_set_num_threads(n)
    return {"threads": n if n is not None else "not pinned", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp default)"),
            "torch.get_num_threads": torch.get_num_threads() if torch is not None else "torch not loaded",
            "torch.get_num_interop_threads": torch.get_num_interop_threads() if torch is not None else "torch not loaded",
            "faiss.omp_get_max_threads": faiss.omp_get_max_threads(),
            **{v: os.environ.get(v) for v in THREAD_ENV}}


def proc_status() -> dict:
    """VmHWM (peak RSS) and VmRSS of this process in MB."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0]) / 1024
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"VmHWM": peak, "VmRSS": peak}
    return out


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    if not len(a):
        return {"n": 0, "p50": None, "p95": None, "mean": None}
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean())}


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def machine_info() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        mem = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split(":")[1].strip()
    except (OSError, StopIteration):
        pass
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        nproc = str(len(os.sched_getaffinity(0)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=False).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True,
                                    text=True, check=False).stdout.strip())
    except OSError:
        commit, dirty = "", False
    versions = {}
    for mod in ("numpy", "torch", "faiss", "bm25s", "sentence_transformers", "jieba"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:  # noqa: BLE001
            versions[mod] = "not installed"
    return {"nproc": nproc, "cpu_count": os.cpu_count(), "cpu_model": cpu, "mem_total": mem,
            "python": platform.python_version(), "platform": platform.platform(), "versions": versions,
            "git": commit + (" (uncommitted changes)" if dirty else "")}


def copy_corpus(dst: Path, only: list[str] | None) -> None:
    src = REPO_ROOT / "corpus"
    if only is None:
        shutil.copytree(src, dst)
        return
    for rel in only:
        for s, d in ((src / rel, dst / rel),
                     ((src / "typical_questions" / rel).with_suffix(".yaml"),
                      (dst / "typical_questions" / rel).with_suffix(".yaml"))):
            if s.exists():
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, d)


class TimedEmbedder:
    """Wraps the real embedder to count what a build embeds and how long that takes."""

    def __init__(self, inner):
        self.inner, self.model_id, self.dim = inner, inner.model_id, inner.dim
        self.reset()

    def reset(self) -> None:
        self.seconds, self.texts, self.chars = 0.0, 0, 0

    def _timed(self, fn, texts, progress=None):
        t = time.perf_counter()
        out = fn(texts, progress=progress)
        self.seconds += time.perf_counter() - t
        self.texts += len(texts)
        self.chars += sum(len(x) for x in texts)
        return out

    def encode_passages(self, texts, progress=None):
        return self._timed(self.inner.encode_passages, texts, progress)

    def encode_questions(self, texts, progress=None):
        return self._timed(self.inner.encode_questions, texts, progress)

    def encode_queries(self, texts):
        return self.inner.encode_queries(texts)


# ----------------------------------------------------------------------------- 1. index build

def bench_build(args, work: Path, settings_cls) -> dict:
    from eval.baseline import PlainPipeline, plain_embedder
    from rag.embedding import get_embedder
    from rag.store import build_index

    corpus, index_dir = work / "corpus", work / "index"
    copy_corpus(corpus, QUICK_DOCS if args.quick else None)
    s = settings_cls().with_(corpus_dir=corpus, index_dir=index_dir, threads=THREADS)
    out: dict = {"corpus": "subset: " + ", ".join(QUICK_DOCS) if args.quick else "corpus/ (full)", "steps": {}}
    has_cache = "embedding_cache" in {f.name for f in dataclasses.fields(s)}
    if has_cache and not args.no_cold:
        # A private, empty embedding cache: otherwise the shared one (~/.cache) makes the "cold" build a lookup.
        s = s.with_(embedding_cache=work / "embeddings.sqlite3")
    out["settings"] = s
    out["chunk_max_chars"] = s.chunk_max_chars
    out["embedding_cache"] = str(getattr(s, "embedding_cache", None) or "none (this version has no shared cache)")

    t = time.perf_counter()
    embedder = get_embedder(s)
    out["model_load_s"] = time.perf_counter() - t
    log(f"model loaded in {out['model_load_s']:.1f}s (dim {embedder.dim})")
    timed = TimedEmbedder(embedder)

    def step(name: str) -> dict:
        timed.reset()
        rep = build_index(s, embedder=timed)
        row = {"seconds": rep.seconds, "documents": rep.documents, "chunks": rep.chunks, "reused": rep.reused,
               "embedded": rep.embedded, "embed_seconds": timed.seconds, "embed_chars": timed.chars}
        row["entries_per_s"] = rep.embedded / timed.seconds if timed.seconds > 0 else None
        row["loadavg"] = loadavg()
        out["steps"][name] = row
        log(f"ours {name}: {rep.seconds:.2f}s, {rep.chunks} chunks, embedded {rep.embedded}, reused {rep.reused}")
        return row

    step("cold")
    if args.no_cold:
        out["cold_skipped"] = "--no-cold: first build used the shared embedding cache"
    # The serving index (for the query benchmark) must be the unedited corpus, so keep a copy of this version.
    reps = 1 if args.quick else 3
    unchanged = [step("unchanged")["seconds"]]
    for _ in range(reps - 1):
        unchanged.append(build_index(s, embedder=timed).seconds)
    out["steps"]["unchanged"]["seconds"] = float(np.median(unchanged))
    out["steps"]["unchanged"]["runs"] = unchanged
    # Fresh process, like `rag index` after a content-free commit: interpreter + imports + rebuild.
    cmd = [sys.executable, "-m", "rag.cli", "index", "--corpus", str(corpus), "--index", str(index_dir)]
    t = time.perf_counter()
    cli = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    out["steps"]["unchanged"]["cli_wall_s"] = time.perf_counter() - t if cli.returncode == 0 else None
    log(f"`rag index` unchanged (fresh process): {out['steps']['unchanged']['cli_wall_s']}")

    edit, held = QUICK_EDIT if args.quick else FULL_EDIT
    edit_path, held_path = corpus / edit, corpus / held
    new_path = held_path.with_name("zz-bench-new-document.md")
    original = edit_path.read_text(encoding="utf-8")
    held_text = held_path.read_text(encoding="utf-8")
    edit_path.write_text(original + APPENDED, encoding="utf-8")
    step("edited")
    held_path.unlink()
    step("deleted")
    # A document never embedded before: the held-out text under another title (the title is part of every
    # chunk's embedded text), so neither the previous version nor an embedding cache has its vectors.
    new_text = re.sub(r'^(title:\s*"?)', r"\1（基准测试新文档）", held_text, count=1, flags=re.MULTILINE)
    new_text = re.sub(r"^(# )", r"\1（基准测试新文档）", new_text, count=1, flags=re.MULTILINE)
    new_path.write_text(new_text, encoding="utf-8")
    step("added")
    if has_cache:
        held_path.write_text(held_text, encoding="utf-8")  # seen before: the shared embedding cache has it
        step("readded")
    new_path.unlink(missing_ok=True)
    held_path.write_text(held_text, encoding="utf-8")
    edit_path.write_text(original, encoding="utf-8")  # back to the shipped text for the query benchmark
    step("restored")
    out["edit_doc"], out["held_doc"] = edit, held

    # Plain: one cache file per corpus content, so a fresh cache folder = cold build.
    plain_cache = work / "plain-cache"
    ps = s.with_(cache_dir=plain_cache)
    t = time.perf_counter()
    # Plain runs the model the usual way (sentence-transformers on torch); ours runs it on ONNX Runtime.
    plain_model = plain_embedder(s)
    out["plain_encoder"] = plain_model.backend
    total_load = time.perf_counter() - t
    t = time.perf_counter()
    plain = PlainPipeline(ps, plain_model)
    total = time.perf_counter() - t
    chars = sum(len(p["text"]) for p in plain.passages)
    out["plain"] = {"cold_seconds": total, "embed_seconds": plain.build_seconds, "chunks": len(plain.passages),
                    "embed_chars": chars, "chunks_per_s": len(plain.passages) / plain.build_seconds}
    t = time.perf_counter()
    PlainPipeline(ps, plain_model)
    out["plain"]["cached_seconds"] = time.perf_counter() - t
    out["plain"]["model_load_s"] = total_load
    out["encoder"] = embedder.backend
    log(f"plain cold: {total:.2f}s ({len(plain.passages)} chunks); same corpus again (its vector cache hits): "
        f"{out['plain']['cached_seconds']:.2f}s")
    # The plain pipeline with our encoder: separates the runtime's share of the speed-up from the rest.
    out.update(embedder=embedder, plain_pipeline=plain, plain_onnx_pipeline=PlainPipeline(ps, embedder),
               plain_cache=plain_cache, corpus_dir=corpus,
               index_dir=index_dir)
    return out


# ----------------------------------------------------------------------------- 2. warm query latency

def bench_queries(build: dict, questions: list[dict]) -> dict:
    from rag.pipeline import Assistant

    assistant = Assistant(build["settings"], embedder=build["embedder"])
    plain, plain_onnx = build["plain_pipeline"], build["plain_onnx_pipeline"]
    texts = [q["question"] for q in questions]
    for q in texts[:3]:  # warm-up, not timed
        assistant.ask(q)
        plain.ask(q)
        plain_onnx.ask(q)
    ours = {"total": [], "retrieve": [], "embed": [], "compose": []}
    plain_ms, plain_onnx_ms = [], []
    # Interleaved (ours, plain, ours, ...): on a shared CPU both systems then see the same background load.
    for q in texts:
        t = time.perf_counter()
        r = assistant.ask(q)
        ours["total"].append((time.perf_counter() - t) * 1000)
        tm = r["timings_ms"]
        ours["retrieve"].append(tm["embed"] + tm["retrieve"])
        ours["embed"].append(tm["embed"])
        ours["compose"].append(tm["compose"])
        t = time.perf_counter()
        plain.ask(q)
        plain_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        plain_onnx.ask(q)
        plain_onnx_ms.append((time.perf_counter() - t) * 1000)
    ours_wall, plain_wall = sum(ours["total"]) / 1000, sum(plain_ms) / 1000
    res = {"n": len(texts),
           "ours": {k: stats(v) for k, v in ours.items()}, "ours_qps": len(texts) / ours_wall,
           "plain": {"retrieve": stats(plain_ms)}, "plain_qps": len(texts) / plain_wall,
           "plain_onnx": {"retrieve": stats(plain_onnx_ms)},
           "index_chunks": len(assistant.index.chunks), "index_entries": len(assistant.index.vectors),
           "plain_chunks": len(plain.passages), "loadavg": loadavg()}
    log(f"ours p50 {res['ours']['total']['p50']:.1f}ms (embed {res['ours']['embed']['p50']:.1f}) / "
        f"plain p50 {res['plain']['retrieve']['p50']:.1f}ms")
    return res


# ----------------------------------------------------------------------------- 3. serving subprocesses

def run_child(kind: str, build: dict, qfile: Path, limit: int, timeout: float, no_pin: bool = False) -> dict:
    env = dict(os.environ)
    if no_pin:
        for var in THREAD_ENV + ("OMP_WAIT_POLICY",):
            env.pop(var, None)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--threads", str(THREADS),
           *(["--no-pin"] if no_pin else []),
           "--corpus", str(build["corpus_dir"]), "--index", str(build["index_dir"]),
           "--plain-cache", str(build["plain_cache"]), "--questions", str(qfile), "--limit", str(limit)]
    marks: dict = {}
    result: dict = {}
    with tempfile.TemporaryFile("w+") as err:
        t_wall0 = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        try:
            for line in proc.stdout:
                now = time.perf_counter() - t0
                if line.startswith("READY"):
                    marks["ready_s"] = now
                elif line.startswith("FIRST"):
                    marks["first_answer_s"] = now
                elif line.startswith("RESULT "):
                    result = json.loads(line[len("RESULT "):])
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
        marks["exit_s"] = time.perf_counter() - t0
        if proc.returncode != 0 or not result:
            err.seek(0)
            tail = err.read()[-2000:]
            raise RuntimeError(f"child {kind} failed (rc {proc.returncode}):\n{tail}")
    result.update(marks, loadavg=loadavg())
    result["interpreter_start_s"] = result.pop("script_start_epoch") - t_wall0
    log(f"child {kind} (OMP_WAIT_POLICY={result['threads']['OMP_WAIT_POLICY']}): ready {marks.get('ready_s', 0):.1f}s, "
        f"first answer {marks.get('first_answer_s', 0):.1f}s, peak RSS {result['VmHWM']:.0f} MB, "
        f"query p50 {result['latency']['p50']}")
    return result


def child_main(args) -> int:
    threads = pin_threads(None if args.no_pin else args.threads, torch_too=args.child == "plain")
    from eval.run import load_questions
    from rag.config import Settings

    s = Settings().with_(corpus_dir=args.corpus, index_dir=args.index)
    if not args.no_pin:
        s = s.with_(threads=args.threads)
    questions = load_questions(Path(args.questions))[: args.limit or None]
    t_imports1 = time.time()
    if args.child == "ours":
        from rag.pipeline import Assistant

        system = Assistant(s)
        ask = system.ask
    else:
        from eval.baseline import PlainPipeline, plain_embedder

        system = PlainPipeline(s.with_(cache_dir=args.plain_cache), plain_embedder(s))
        ask = system.ask
    t_ready = time.time()
    if args.no_pin:
        threads = pin_threads(None, torch_too=args.child == "plain")  # as the loaded system left them
    print("READY", flush=True)
    ask(questions[0]["question"])
    t_first = time.time()
    print("FIRST", flush=True)
    after_first = proc_status()
    ms = []
    for q in questions[1:]:
        t = time.perf_counter()
        ask(q["question"])
        ms.append((time.perf_counter() - t) * 1000)
    st = proc_status()
    print("RESULT " + json.dumps({
        "script_start_epoch": _T_SCRIPT, "imports_s": t_imports1 - _T_SCRIPT,
        "load_s": t_ready - t_imports1, "first_query_s": t_first - t_ready, "answered": len(questions),
        "VmHWM": st.get("VmHWM"), "VmRSS": st.get("VmRSS"), "VmHWM_after_first": after_first.get("VmHWM"),
        "latency": stats(ms),
        "threads": threads}), flush=True)
    return 0


# ----------------------------------------------------------------------------- 4. synthetic scale

class _SyntheticChunks:
    """A sequence of n placeholder chunks, made on access (Retriever only needs len() and [i])."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        from rag.chunking import Chunk

        if not -self.n <= i < self.n:  # iteration (guide_basis walks all chunks) ends here
            raise IndexError(i)

        return Chunk(id=str(i), source="synthetic.md", title="synthetic", kind="law", section=f"#{i}",
                     heading_path=[], article=None, start=0, end=0, text="")


def faiss_bytes(index) -> int:
    import faiss

    total = [0]

    def cb(b):
        total[0] += len(b)
        return len(b)

    faiss.write_index(index, faiss.PyCallbackIOWriter(cb))
    return total[0]


def bm25_bytes(ki) -> int:
    sc = getattr(ki.bm25, "scores", None)
    if isinstance(sc, dict):
        return int(sum(v.nbytes for v in sc.values() if hasattr(v, "nbytes")))
    return 0


def normalize(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def gen_vectors(n: int, d: int, anchors: np.ndarray | None, rng: np.random.Generator, data: str) -> np.ndarray:
    """n unit vectors. ``uniform``: isotropic random. ``real-mix``: a random point on the segment between two
    real corpus embeddings plus noise (cos ≈ 0.95 to that point), which keeps the strong anisotropy and
    low intrinsic dimension of real e5 vectors; uniform 384-d data has no neighbour structure at all."""
    x = np.empty((n, d), dtype=np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        if data == "uniform" or anchors is None:
            x[s:s + m] = rng.standard_normal((m, d), dtype=np.float32)
        else:
            a = anchors[rng.integers(len(anchors), size=m)]
            b = anchors[rng.integers(len(anchors), size=m)]
            w = rng.random((m, 1), dtype=np.float32)
            x[s:s + m] = w * a + (1 - w) * b + rng.standard_normal((m, d), dtype=np.float32) * (0.017)
        normalize(x[s:s + m])
    return x


def make_queries(x: np.ndarray, nq: int, rng: np.random.Generator) -> np.ndarray:
    """Noisy copies of stored vectors (cos ≈ 0.9 to their source), like a paraphrase of a stored chunk."""
    ids = rng.choice(len(x), size=nq, replace=False)
    q = x[ids] + rng.standard_normal((nq, x.shape[1]), dtype=np.float32) * (0.025 * np.sqrt(384 / x.shape[1]))
    return normalize(q.astype(np.float32))


def single_latency(index, queries: np.ndarray, k: int = 10) -> list[float]:
    ms = []
    for i in range(len(queries)):
        t = time.perf_counter()
        index.search(queries[i:i + 1], k)
        ms.append((time.perf_counter() - t) * 1000)
    return ms


def recall_at(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k])) / k for f, t in zip(found, truth)]))


def hybrid_latency(index, ki, n: int, texts: list[str], qvecs: np.ndarray) -> list[float]:
    """Our real Retriever.retrieve (dense depth-200 search + BM25 + RRF + confidence), query embedding excluded."""
    import faiss

    from rag.config import Settings
    from rag.index import LoadedIndex
    from rag.retrieve import Retriever

    li = LoadedIndex(Path("synthetic"), {}, _SyntheticChunks(n), np.zeros((0, qvecs.shape[1]), np.float32),
                     np.arange(n, dtype=np.int32), index, faiss.IndexFlatIP(qvecs.shape[1]), ki, ki)
    r = Retriever(li, None, Settings())
    ms = []
    for i, text in enumerate(texts):
        qv = qvecs[i % len(qvecs)]
        t = time.perf_counter()
        r.retrieve(text, k=10, query_vector=qv)
        ms.append((time.perf_counter() - t) * 1000)
    return ms[1:] if len(ms) > 1 else ms  # first call loads the lexicon


def bm25_vocab() -> tuple[np.ndarray, np.ndarray]:
    """Token vocabulary and frequencies of the shipped corpus, tokenised exactly like the index does."""
    from collections import Counter

    from rag.documents import discover, load_document
    from rag.keyword import tokenize

    cnt: Counter = Counter()
    root = REPO_ROOT / "corpus"
    for p in discover(root):
        doc = load_document(p, root)
        cnt.update(tokenize(doc.text[doc.body_start:]))
    vocab = np.array(list(cnt), dtype=object)
    freq = np.array([cnt[w] for w in vocab], dtype=np.float64)
    return vocab, freq / freq.sum()


def bench_scale(args, anchors: np.ndarray | None, dim: int, questions: list[dict]) -> list[dict]:
    import faiss

    try:  # the parameters rag/index.py builds its HNSW index with, where it has one
        from rag.index import HNSW_EF_CONSTRUCTION as HNSW_EFC
        from rag.index import HNSW_EF_SEARCH as HNSW_EFS
        from rag.index import HNSW_M
    except ImportError:
        HNSW_M, HNSW_EFC, HNSW_EFS = 32, 40, None
    try:  # and its IVF settings (ann=auto picks IVF for large corpora)
        from rag.index import IVF_NPROBE, ivf_nlist, ivf_train_size
    except ImportError:
        IVF_NPROBE, ivf_nlist, ivf_train_size = None, None, lambda n, nlist: min(n, 100_000)

    from rag.keyword import KeywordIndex, tokenize
    from rag.lexicon import expand_query

    vocab, probs = bm25_vocab()
    texts = [q["question"] for q in questions]
    q_tokens = [tokenize(expand_query(t)) for t in texts]
    rows: list[dict] = []
    hnsw_build_s: dict[int, float] = {}
    for n in args.scale_list:
        rng = np.random.default_rng(1234 + n)
        nq = 200
        n_lat = 100 if n < 1_000_000 else 50
        n_hyb = min(len(texts), 60 if n < 1_000_000 else 30)
        log(f"scale {n:,}: BM25 over synthetic text")
        # BM25 first: its build peaks higher than anything else, so do it before the vectors exist.
        docs: list[list[str]] = []
        for s in range(0, n, 100_000):
            ids = rng.choice(len(vocab), size=(min(100_000, n - s), 80), p=probs)
            docs.extend(list(vocab[r]) for r in ids)
        t = time.perf_counter()
        ki = KeywordIndex().build_from_tokens(docs)
        bm_build = time.perf_counter() - t
        del docs
        gc.collect()
        bm_ms = []
        for _ in range(3 if n < 1_000_000 else 1):
            for toks in q_tokens:
                t = time.perf_counter()
                ki.scores(toks)
                bm_ms.append((time.perf_counter() - t) * 1000)
        rows.append({"n": n, "index": "BM25 (bm25s, jieba+bigram)", "kind": "bm25", "params": "80 tokens/doc",
                     "build_s": bm_build, "size_mb": bm25_bytes(ki) / 2**20, "lat": stats(bm_ms), "recall": None})
        log(f"  BM25 build {bm_build:.1f}s, p50 {rows[-1]['lat']['p50']:.2f}ms")

        log(f"scale {n:,}: vectors ({args.data})")
        x = gen_vectors(n, dim, anchors, rng, args.data)
        q = make_queries(x, nq, rng)
        t = time.perf_counter()
        flat = faiss.IndexFlatIP(dim)
        flat.add(x)
        flat_build = time.perf_counter() - t
        t = time.perf_counter()
        _, truth = flat.search(q, 10)
        gt_s = time.perf_counter() - t
        lat = stats(single_latency(flat, q[:n_lat]))
        hyb = stats(hybrid_latency(flat, ki, n, texts[:n_hyb], q))
        rows.append({"n": n, "index": "FAISS IndexFlatIP (exact)", "kind": "flat", "params": "",
                     "build_s": flat_build, "size_mb": n * dim * 4 / 2**20, "lat": lat, "recall": 1.0,
                     "hybrid": hyb, "batch_gt_s": gt_s})
        log(f"  flat p50 {lat['p50']:.2f}ms, hybrid retrieve p50 {hyb['p50']:.1f}ms")
        del flat
        gc.collect()

        # IVF-Flat: nlist ≈ 4·√n (power of two, ≥ 39 training points per list), trained on ≤ 100k vectors.
        if ivf_nlist is not None:
            nlist = ivf_nlist(n)
        else:
            nlist = 2 ** int(round(np.log2(4 * np.sqrt(n))))
            while nlist > n / 39:
                nlist //= 2
        n_train = ivf_train_size(n, nlist)
        train = x[rng.choice(n, size=n_train, replace=False)] if n > n_train else x
        t = time.perf_counter()
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = 10
        ivf.train(train)
        train_s = time.perf_counter() - t
        ivf.add(x)
        ivf_build = time.perf_counter() - t
        del train
        curve = []
        chosen = None
        for nprobe in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
            if nprobe > nlist:
                break
            ivf.nprobe = nprobe
            t = time.perf_counter()
            _, found = ivf.search(q, 10)
            curve.append({"nprobe": nprobe, "recall": recall_at(found, truth),
                          "batch_ms_per_q": (time.perf_counter() - t) * 1000 / nq})
            if curve[-1]["recall"] >= TARGETS["ann_recall"]:
                chosen = curve[-1]
                break
        chosen = chosen or max(curve, key=lambda c: c["recall"])
        ivf.nprobe = chosen["nprobe"]
        lat = stats(single_latency(ivf, q[:n_lat]))
        hyb = stats(hybrid_latency(ivf, ki, n, texts[:n_hyb], q))
        rows.append({"n": n, "index": "FAISS IVF-Flat", "kind": "ivf",
                     "params": f"nlist={nlist}, nprobe={chosen['nprobe']}, train {n_train:,} pts",
                     "build_s": ivf_build, "train_s": train_s, "size_mb": faiss_bytes(ivf) / 2**20, "lat": lat,
                     "recall": chosen["recall"], "curve": curve, "hybrid": hyb})
        log(f"  IVF nlist {nlist} build {ivf_build:.1f}s nprobe {chosen['nprobe']} recall {chosen['recall']:.3f} "
            f"p50 {lat['p50']:.2f}ms")
        if IVF_NPROBE and IVF_NPROBE != chosen["nprobe"] and IVF_NPROBE <= nlist:
            # What rag builds (same nlist rule) searched with rag's own nprobe.
            ivf.nprobe = IVF_NPROBE
            _, found = ivf.search(q, 10)
            rec = recall_at(found, truth)
            lat = stats(single_latency(ivf, q[:n_lat]))
            hyb = stats(hybrid_latency(ivf, ki, n, texts[:n_hyb], q))
            rows.append({"n": n, "index": "FAISS IVF-Flat (rag default)", "kind": "ivf_default",
                         "params": f"nlist={nlist}, nprobe={IVF_NPROBE}", "build_s": ivf_build, "train_s": train_s,
                         "size_mb": rows[-1]["size_mb"], "lat": lat, "recall": rec, "hybrid": hyb})
            log(f"  IVF rag default nprobe {IVF_NPROBE} recall {rec:.3f} p50 {lat['p50']:.2f}ms hybrid {hyb['p50']:.1f}ms")
        del ivf
        gc.collect()

        if n <= args.hnsw_max:
            t = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = HNSW_EFC
            hnsw.add(x)
            hb = time.perf_counter() - t
            hnsw_build_s[n] = hb
            size = faiss_bytes(hnsw) / 2**20
            curve, chosen = [], None
            for ef in sorted({16, 32, 64, 128, 256, 512} | ({HNSW_EFS} if HNSW_EFS else set())):
                hnsw.hnsw.efSearch = ef
                t = time.perf_counter()
                _, found = hnsw.search(q, 10)
                curve.append({"efSearch": ef, "recall": recall_at(found, truth),
                              "batch_ms_per_q": (time.perf_counter() - t) * 1000 / nq})
                if chosen is None and curve[-1]["recall"] >= TARGETS["ann_recall"]:
                    chosen = curve[-1]
                if chosen is not None and ef >= (HNSW_EFS or 0):
                    break
            chosen = chosen or max(curve, key=lambda c: c["recall"])
            points = [("tuned", chosen)]
            if HNSW_EFS and HNSW_EFS != chosen["efSearch"]:
                points.append(("rag default", next(c for c in curve if c["efSearch"] == HNSW_EFS)))
            for label, point in points:
                hnsw.hnsw.efSearch = point["efSearch"]
                lat = stats(single_latency(hnsw, q[:n_lat]))
                hyb = stats(hybrid_latency(hnsw, ki, n, texts[:n_hyb], q))
                rows.append({"n": n, "index": f"FAISS HNSWFlat ({label})",
                             "kind": "hnsw" if label == "tuned" else "hnsw_default",
                             "params": f"M={HNSW_M}, efConstruction={HNSW_EFC}, efSearch={point['efSearch']}",
                             "build_s": hb, "size_mb": size, "lat": lat, "recall": point["recall"],
                             "curve": curve if label == "tuned" else None, "hybrid": hyb})
                log(f"  HNSW {label} build {hb:.1f}s ef {point['efSearch']} recall {point['recall']:.3f} "
                    f"p50 {lat['p50']:.2f}ms")
            del hnsw
        else:
            prev = max((k for k in hnsw_build_s), default=None)
            est = hnsw_build_s[prev] * (n / prev) * np.log(n) / np.log(prev) if prev else None
            rows.append({"n": n, "index": "FAISS HNSWFlat", "kind": "hnsw",
                         "params": f"M={HNSW_M}, efConstruction={HNSW_EFC}: skipped (--hnsw-max {args.hnsw_max:,})",
                         "build_s": None, "est_build_s": est, "size_mb": None, "lat": stats([]), "recall": None})
            log(f"  HNSW skipped at {n:,} (estimated build {est and round(est)} s)")
        del x, q, ki
        gc.collect()
        rows[-1]["rss_after_mb"] = proc_status().get("VmRSS")
        rows[-1]["loadavg"] = loadavg()
    return rows


# ----------------------------------------------------------------------------- 4b. FAISS vs Milvus Lite

STORE_SCALES = "10000,100000"


def _store_corpus(n: int, dim: int) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """n synthetic chunks: real-mix vectors (around the repo index's vectors when there is one) and text of
    80 words drawn from the shipped corpus' word frequencies; plus 60 question texts and query vectors."""
    from rag.index import current_version

    rng = np.random.default_rng(4321 + n)
    anchors = None
    cur = current_version(REPO_ROOT / "index")
    if cur is not None and (cur / "vectors.npy").exists():
        anchors = np.load(cur / "vectors.npy")
        if anchors.shape[1] != dim:
            anchors = None
    x = gen_vectors(n, dim, anchors, rng, "real-mix" if anchors is not None else "uniform")
    vocab, probs = bm25_vocab()
    keep = np.array([not str(w).startswith("§") for w in vocab])
    vocab, probs = vocab[keep], probs[keep] / probs[keep].sum()
    texts = ["".join(vocab[r]) for r in rng.choice(len(vocab), size=(n, 80), p=probs)]
    from eval.run import load_questions

    qs = [q["question"] for q in load_questions(REPO_ROOT / "eval" / "questions.jsonl")][:60]
    return x, texts, make_queries(x, len(qs), rng), qs


def store_child(args) -> int:
    """One store at one size in a fresh process (so its memory is its own): build, open, query; JSON on stdout."""
    from rag.config import Settings
    from rag.retrieve import Retriever

    pin_threads(args.threads, torch_too=False)
    n, kind, dim = args.store_n, args.store_child, DIM_DEFAULT
    x, texts, qv, qs = _store_corpus(n, dim)
    work = Path(args.index)
    work.mkdir(parents=True, exist_ok=True)
    gc.collect()
    base = proc_status()
    s = Settings().with_(index_dir=work / "kb", corpus_dir=work)
    out = {"store": kind, "n": n}
    t = time.perf_counter()
    if kind == "faiss":
        import faiss

        from rag.index import KEYWORD_MODE, LoadedIndex, _make_faiss, choose_index_type
        from rag.keyword import KeywordIndex, tokenize

        ann = choose_index_type(n, s.ann, s.ann_min_vectors, s.ann_ivf_min_vectors)
        ki = KeywordIndex(KEYWORD_MODE).build_from_tokens([tokenize(t) for t in texts])
        index = _make_faiss(x, dim, ann)
        (work / "kb").mkdir(exist_ok=True)
        faiss.write_index(index, str(work / "kb" / "dense.faiss"))
        ki.save(work / "kb" / "bm25")
        np.save(work / "kb" / "vectors.npy", x)
        out["build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        view = LoadedIndex(work / "kb", {}, _SyntheticChunks(n), x, np.arange(n, dtype=np.int32), index,
                           faiss.IndexFlatIP(dim), ki, ki)
        out["open_s"] = time.perf_counter() - t
        out["index"] = f"FAISS {ann} + BM25 (bm25s)"
    else:
        from rag import milvus_store as ms

        store = ms.MilvusStore(s.with_(store="milvus"))
        c = store.client
        target = store.side("a")
        if c.has_collection(target):
            c.drop_collection(target)
        store._create(target, n, dim)
        for i in range(0, n, 2000):
            c.insert(target, [{"id": f"p{j:08d}", "chunk": f"p{j:08d}", "row": ms.ROW_PASSAGE, "vkey": "",
                               "search": ms.search_text(texts[j]), "dense": x[j].tolist(), "source": "synthetic.md",
                               "title": "synthetic", "kind": "law", "section": f"#{j}", "article": "", "start": j,
                               "end": j, "part": 0, "heading_path": "[]", "body": texts[j][:200], "questions": "[]"}
                              for j in range(i, min(n, i + 2000))])
        manifest = {"format": ms.FORMAT_VERSION, "schema": ms.SCHEMA, "model_id": "synthetic",
                    "chunker": s.chunker_id(), "documents": {"synthetic.md": {}}, "chunks": n, "entries": n,
                    "version": "synthetic"}
        c.insert(target, ms._meta_rows(manifest, dim))
        c.flush(target)
        try:
            c.create_alias(target, store.name)
        except Exception:
            c.alter_alias(target, store.name)
        out["build_s"] = time.perf_counter() - t
        t = time.perf_counter()
        view = store.open()
        out["open_s"] = time.perf_counter() - t
        idx, _ = ms._dense_index(n, s, True)
        out["index"] = f"Milvus Lite {idx['index_type']} + BM25 (jieba)"
    out["after_build"] = proc_status()
    r = Retriever(view, None, s)
    ms_ = []
    for i, q in enumerate([qs[0]] + qs):
        t = time.perf_counter()
        r.retrieve(q, k=10, query_vector=qv[max(i - 1, 0)])
        if i:
            ms_.append((time.perf_counter() - t) * 1000)
    out["lat"] = stats(ms_)
    end = proc_status()
    out["rss_base_mb"], out["peak_rss_mb"], out["rss_mb"] = base.get("VmRSS"), end.get("VmHWM"), end.get("VmRSS")
    out["disk_mb"] = sum(f.stat().st_size for f in work.rglob("*") if f.is_file()) / 2**20
    print("STORE_JSON " + json.dumps(out), flush=True)
    return 0


def bench_stores(args) -> list[dict]:
    rows = []
    for n in args.scale_list:
        for kind in ("faiss", "milvus"):
            with tempfile.TemporaryDirectory(prefix=f"rag-store-{kind}-") as tmp:
                log(f"store {kind} at {n:,} chunks")
                cmd = [sys.executable, str(Path(__file__).resolve()), "--store-child", kind, "--store-n", str(n),
                       "--threads", str(args.threads), "--index", tmp]
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
                line = next((ln for ln in p.stdout.splitlines() if ln.startswith("STORE_JSON ")), None)
                if p.returncode or line is None:
                    raise RuntimeError(f"store child {kind} {n} failed: {p.stderr[-2000:]}")
                row = json.loads(line.split(" ", 1)[1])
                row["loadavg"] = loadavg()
                rows.append(row)
                log(f"  build {row['build_s']:.1f}s open {row['open_s']:.1f}s p50 {row['lat']['p50']:.1f}ms "
                    f"p95 {row['lat']['p95']:.1f}ms peak RSS {row['peak_rss_mb']:.0f} MB")
    return rows


def store_table(rows: list[dict]) -> list[str]:
    lines = ["| chunks | store | build | open | hybrid retrieve p50 | p95 | RSS (base → peak) | on disk |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['index']} | {r['build_s']:.1f} s | {r['open_s']:.2f} s | "
                     f"{r['lat']['p50']:.1f} ms | {r['lat']['p95']:.1f} ms | "
                     f"{r['rss_base_mb']:.0f} → {r['peak_rss_mb']:.0f} MB | {r['disk_mb']:.0f} MB |")
    return lines


def write_store_report(rows: list[dict], out_dir: Path, command: str, threads: int) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_stores.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    md = out_dir / "bench_stores.md"
    md.write_text("\n".join([
        "# FAISS files vs Milvus Lite (synthetic chunks)", "",
        f"- command: `{command}`; {time.strftime('%Y-%m-%d %H:%M')}; {threads} threads; load {loadavg()}",
        "- each row is its own process: synthetic chunks (384-d real-mix vectors, 80 corpus words of text), "
        "build = what `rag index` writes after embedding (FAISS: tokenise + BM25 + FAISS index + files; "
        "Milvus: insert rows, Milvus analyses the text with jieba for its BM25, flush); open = loading the "
        "served version (Milvus: chunk metadata into the client); hybrid retrieve = `Retriever.retrieve` "
        "(FAISS: two FAISS searches + BM25 + RRF in numpy; Milvus: `hybrid_search` with RRFRanker + two "
        "dense searches for the cosines), 60 dev questions, query embedding excluded.",
        "- RSS: the process's resident memory before building and its peak (Milvus Lite runs in-process, so "
        "its server is counted).", "", *store_table(rows), ""]), encoding="utf-8")
    return md


# ----------------------------------------------------------------------------- 5. report

def f(v, digits: int = 1, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def status(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**not met**")


def ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"


def build_tables(res: dict) -> tuple[list[str], list[str], list[dict]]:
    """(main table lines, scale table lines, target verdicts)."""
    b, qy, ch = res["build"], res["queries"], res["children"]
    steps = b["steps"]
    plain = b["plain"]
    subset = " (subset)" if res["quick"] else ""
    verdicts: list[dict] = []

    def verdict(name: str, value, target: str, ok):
        verdicts.append({"target": name, "measured": value, "goal": target, "ok": ok})
        return status(ok)

    L = ["| area | metric | ours | plain | ours/plain | target | status |", "|---|---|---|---|---|---|---|"]
    cold = steps.get("cold")
    if cold:
        what = "first build with the shared embedding cache" if b.get("cold_skipped") else "cold build"
        L.append(f"| build{subset} | {what}, s (embeds everything) | {f(cold['seconds'], 2)} | "
                 f"{f(plain['cold_seconds'], 2)} | {ratio(cold['seconds'], plain['cold_seconds'])} | | |")
        L.append(f"| build{subset} | entries embedded (chunks + typical questions / plain chunks) | "
                 f"{cold['embedded']} ({cold['chunks']} chunks) | {plain['chunks']} | | | |")
        L.append(f"| build{subset} | embedding throughput, entries/s | {f(cold['entries_per_s'])} | "
                 f"{f(plain['chunks_per_s'])} | {ratio(cold['entries_per_s'], plain['chunks_per_s'])} | | |")
        L.append(f"| build{subset} | embedding throughput, chars/s | "
                 f"{f(cold['embed_chars'] / cold['embed_seconds'] if cold['embed_seconds'] else None, 0)} | "
                 f"{f(plain['embed_chars'] / plain['embed_seconds'], 0)} | | | |")
    else:
        L.append(f"| build{subset} | cold build, s | skipped ({b.get('cold_skipped', '')}) | {f(plain['cold_seconds'], 2)} | | | |")
        L.append(f"| build{subset} | plain embedding throughput, chunks/s | — | {f(plain['chunks_per_s'])} | | | |")
    un = steps["unchanged"]
    ok = un["seconds"] <= TARGETS["unchanged_rebuild_s"]
    L.append(f"| build{subset} | unchanged rebuild, s (median of {len(un['runs'])}; plain: full re-embed) | "
             f"{f(un['seconds'], 2)} | {f(plain['embed_seconds'], 2)} | {ratio(un['seconds'], plain['embed_seconds'])} | "
             f"≤ {TARGETS['unchanged_rebuild_s']:.0f} s | "
             f"{verdict('unchanged rebuild' + subset, round(un['seconds'], 2), '≤ 2 s', ok)} |")
    L.append(f"| build{subset} | unchanged rebuild via `rag index`, fresh process, s (plain: its own vector cache hits) | "
             f"{f(un.get('cli_wall_s'), 2)} | {f(plain['cached_seconds'], 2)} | | | |")
    for key, label in (("edited", f"one document edited ({b['edit_doc']}, a sentence appended)"),
                       ("deleted", f"one document deleted ({b['held_doc']})"),
                       ("added", "one new document added (the deleted one under a new title: nothing cached)"),
                       ("readded", "deleted document put back (its vectors come from the embedding cache)")):
        r = steps.get(key)
        if r is None:
            continue
        L.append(f"| build{subset} | {label}, s [embedded {r['embedded']}] (plain: full re-embed) | "
                 f"{f(r['seconds'], 2)} | {f(plain['embed_seconds'], 2)} | {ratio(r['seconds'], plain['embed_seconds'])} | | |")
    L.append(f"| build | encoder runtime (same model and weights) | {b.get('encoder', 'torch')} | "
             f"{b.get('plain_encoder', 'torch')} | | | |")
    L.append(f"| build | model load (once per process) | {f(b['model_load_s'], 2)} s | "
             f"{f(plain.get('model_load_s'), 2) + ' s' if plain.get('model_load_s') is not None else 'same model'} | | | |")

    o, p = qy["ours"], qy["plain"]["retrieve"]
    L.append(f"| query | retrieve only p50, ms (ours: embed + hybrid; plain: embed + flat) | {f(o['retrieve']['p50'])} | "
             f"{f(p['p50'])} | {ratio(o['retrieve']['p50'], p['p50'])} | | |")
    L.append(f"| query | retrieve only p95, ms | {f(o['retrieve']['p95'])} | {f(p['p95'])} | "
             f"{ratio(o['retrieve']['p95'], p['p95'])} | | |")
    ok50 = o["total"]["p50"] <= TARGETS["query_p50_ms"]
    ok95 = o["total"]["p95"] <= TARGETS["query_p95_ms"]
    okx = o["total"]["p50"] * TARGETS["speedup_vs_plain"] <= p["p50"]
    L.append(f"| query | retrieve + answer p50, ms (plain has no composer: retrieve only) | {f(o['total']['p50'])} | "
             f"{f(p['p50'])} | {ratio(o['total']['p50'], p['p50'])} | ≤ 25 ms; ≥ 2× faster than plain (≤ 0.50×) | "
             f"{verdict('query p50', round(o['total']['p50'], 1), '≤ 25 ms', ok50)}; "
             f"{verdict('2× faster than plain (p50)', ratio(o['total']['p50'], p['p50']), '≤ 0.50×', okx)} |")
    L.append(f"| query | retrieve + answer p95, ms | {f(o['total']['p95'])} | {f(p['p95'])} | "
             f"{ratio(o['total']['p95'], p['p95'])} | ≤ 60 ms | "
             f"{verdict('query p95', round(o['total']['p95'], 1), '≤ 60 ms', ok95)} |")
    L.append(f"| query | of which query embedding p50 / p95, ms | {f(o['embed']['p50'])} / {f(o['embed']['p95'])} | | | | |")
    po = qy.get("plain_onnx", {}).get("retrieve")
    if po:
        L.append(f"| query | for reference: plain pipeline on our ONNX encoder, p50 / p95 ms (ours/that at p50) | "
                 f"{f(o['total']['p50'])} / {f(o['total']['p95'])} | {f(po['p50'])} / {f(po['p95'])} | "
                 f"{ratio(o['total']['p50'], po['p50'])} | | |")
    L.append(f"| query | of which answer composition p50 / p95, ms | {f(o['compose']['p50'], 2)} / {f(o['compose']['p95'], 2)} | — | | | |")
    L.append(f"| query | batch throughput, queries/s (sequential, {qy['n']} questions) | {f(qy['ours_qps'])} | "
             f"{f(qy['plain_qps'])} | {ratio(qy['ours_qps'], qy['plain_qps'])} | | |")

    co, cp = ch["ours"], ch["plain"]
    ok = co["VmHWM"] <= TARGETS["serve_rss_mb"]
    L.append(f"| serve | peak RSS (VmHWM) after answering {co['answered']} questions, MB | {f(co['VmHWM'], 0)} | "
             f"{f(cp['VmHWM'], 0)} | {ratio(co['VmHWM'], cp['VmHWM'])} | ≤ 1229 MB (1.2 GB) | "
             f"{verdict('serve RSS', round(co['VmHWM']), '≤ 1.2 GB', ok)} |")
    L.append(f"| serve | cold start to ready (process start → index + model loaded), s | {f(co['ready_s'], 2)} | "
             f"{f(cp['ready_s'], 2)} | {ratio(co['ready_s'], cp['ready_s'])} | | |")
    ok = co["first_answer_s"] <= TARGETS["cold_start_s"]
    L.append(f"| serve | cold start to first answer, s | {f(co['first_answer_s'], 2)} | {f(cp['first_answer_s'], 2)} | "
             f"{ratio(co['first_answer_s'], cp['first_answer_s'])} | ≤ 15 s | "
             f"{verdict('cold start', round(co['first_answer_s'], 2), '≤ 15 s', ok)} |")
    pol = co["threads"]["OMP_WAIT_POLICY"]
    L.append(f"| serve | per-query latency in the serving process p50 / p95, ms (OMP_WAIT_POLICY={pol}) | "
             f"{f(co['latency']['p50'])} / {f(co['latency']['p95'])} | {f(cp['latency']['p50'])} / "
             f"{f(cp['latency']['p95'])} | {ratio(co['latency']['p50'], cp['latency']['p50'])} | | |")
    cpv = ch.get("ours_unpinned")
    if cpv:
        th = cpv["threads"]
        L.append(f"| serve | same, ours unpinned (rag's defaults: encoder threads {th.get('RAG_THREADS') or 'default'}, "
                 f"torch {th.get('torch.get_num_threads')}, "
                 f"faiss {th.get('faiss.omp_get_max_threads')}, OMP_WAIT_POLICY={th.get('OMP_WAIT_POLICY')}): "
                 f"p50 / p95 ms; peak RSS MB; first answer s | "
                 f"{f(cpv['latency']['p50'])} / {f(cpv['latency']['p95'])}; {f(cpv['VmHWM'], 0)}; "
                 f"{f(cpv['first_answer_s'], 2)} | | {ratio(cpv['latency']['p50'], cp['latency']['p50'])} | | |")
    L.append(f"| serve | of which imports / load / first query, s | {f(co['imports_s'], 2)} / {f(co['load_s'], 2)} / "
             f"{f(co['first_query_s'], 2)} | {f(cp['imports_s'], 2)} / {f(cp['load_s'], 2)} / {f(cp['first_query_s'], 2)} | | | |")

    S = ["| chunks | index | params | build s | size MB | search p50 ms | search p95 ms | recall@10 | "
         "hybrid retrieve p50 / p95 ms | target | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    scale = res["scale"]
    big = max((r["n"] for r in scale), default=0)
    for r in scale:
        tgt, st = "", ""
        if r["kind"] in ("ivf", "ivf_default", "hnsw", "hnsw_default") and r["n"] >= 1_000_000 and r["lat"]["p50"] is not None:
            ok = r["lat"]["p50"] <= TARGETS["scale_1m_p50_ms"] and (r["recall"] or 0) >= TARGETS["ann_recall"]
            tgt = "p50 ≤ 60 ms at recall@10 ≥ 0.95"
            st = verdict(f"{r['n']:,} chunks {r['index']}: ANN search", f"{r['lat']['p50']:.2f} ms @ {r['recall']:.3f}",
                         tgt, ok)
            if r.get("hybrid"):
                hok = r["hybrid"]["p50"] <= TARGETS["scale_1m_p50_ms"] and (r["recall"] or 0) >= TARGETS["ann_recall"]
                verdict(f"{r['n']:,} chunks {r['index']}: whole hybrid retrieve (Retriever.retrieve, excl. embedding)",
                        f"{r['hybrid']['p50']:.1f} ms", "p50 ≤ 60 ms", hok)
        build = f(r["build_s"], 2) if r["build_s"] is not None else (
            f"skipped (est. {r['est_build_s']:.0f})" if r.get("est_build_s") else "skipped")
        hyb = r.get("hybrid")
        S.append(f"| {r['n']:,} | {r['index']} | {r['params']} | {build} | {f(r['size_mb'])} | "
                 f"{f(r['lat']['p50'], 2)} | {f(r['lat']['p95'], 2)} | {f(r['recall'], 3)} | "
                 f"{(f(hyb['p50']) + ' / ' + f(hyb['p95'])) if hyb else '—'} | {tgt} | {st} |")
    if big < 1_000_000:
        verdicts.append({"target": "1M chunks search", "measured": "not run (scales " +
                         ",".join(str(r) for r in sorted({r['n'] for r in scale})) + ")",
                         "goal": "p50 ≤ 60 ms at recall@10 ≥ 0.95", "ok": None})
    return L, S, verdicts


def write_plot(scale: list[dict], path: Path, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 5))
    series = [("flat", "FAISS flat (exact)", "tab:blue", None), ("ivf", "IVF-Flat (tuned nprobe)", "tab:orange", None),
              ("hnsw", "HNSW (tuned efSearch)", "tab:green", None), ("bm25", "BM25 (bm25s)", "tab:red", None)]
    for kind, label, color, _ in series:
        pts = sorted((r["n"], r["lat"]["p50"], r["lat"]["p95"]) for r in scale
                     if r["kind"] == kind and r["lat"]["p50"] is not None)
        if not pts:
            continue
        n, p50, p95 = zip(*pts)
        ax.plot(n, p50, "o-", color=color, label=label + " p50")
        ax.plot(n, p95, "x--", color=color, alpha=0.6, label=label + " p95")
    pts = sorted((r["n"], r["hybrid"]["p50"]) for r in scale if r["kind"] == "flat" and r.get("hybrid"))
    if pts:
        n, p50 = zip(*pts)
        ax.plot(n, p50, "s:", color="black", label="our hybrid retrieve over flat (p50, excl. embedding)")
    ann = {}
    for r in scale:
        if r["kind"] in ("ivf", "ivf_default", "hnsw", "hnsw_default") and r.get("hybrid"):
            if r["n"] not in ann or r["hybrid"]["p50"] < ann[r["n"]]:
                ann[r["n"]] = r["hybrid"]["p50"]
    if ann:
        n, p50 = zip(*sorted(ann.items()))
        ax.plot(n, p50, "D:", color="gray", label="our hybrid retrieve over best ANN (p50)")
    ax.axhline(TARGETS["scale_1m_p50_ms"], color="gray", lw=0.8, ls="-.", label="60 ms target (1M)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("corpus size (chunks)")
    ax.set_ylabel("single-query latency (ms)")
    ax.set_title(f"Search latency vs corpus size ({threads} threads)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(res: dict, out_dir: Path) -> tuple[Path, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    main, scale, verdicts = build_tables(res)
    res["verdicts"] = verdicts
    m = res["machine"]
    la0, la1 = res["loadavg_start"], res["loadavg_end"]
    busy = la0 and max(la0[:1] + la1[:1]) > 0.5 * (m["cpu_count"] or 1)
    qy = res["queries"]
    max_chars = res["build"].get("chunk_max_chars")
    if max_chars is None:
        from rag.config import Settings

        max_chars = Settings().chunk_max_chars
    mem = m["mem_total"]
    if mem.endswith("kB"):
        mem = f"{int(mem.split()[0]) / 2**20:.1f} GiB"
    lines = [
        "# Performance benchmark", "",
        f"- command: `{res['command'].strip()}`",
        f"- date: {res['date']}; total wall time {res['wall_s'] / 60:.1f} min",
        f"- machine: nproc {m['nproc']} ({m['cpu_model'] or 'unknown CPU'}), RAM {mem}, "
        f"{m['platform']}, Python {m['python']}",
        "- libraries: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "- threads: " + ", ".join(f"{k}={v}" for k, v in res["threads"].items()),
        f"- load average at start / end: {la0} / {la1}" +
        (" — **the CPU was shared with other processes during this run; latencies are upper bounds**" if busy else ""),
        "- 1-min load average after each phase: " + "; ".join(
            f"{name} {la[0]:.1f}" for name, la in res.get("phase_load", []) if la),
        f"- code: git {m['git']}",
        f"- corpus: {res['build']['corpus']}; our index {qy['index_chunks']} chunks / {qy['index_entries']} vectors "
        f"(chunks + typical questions), plain {qy['plain_chunks']} chunks (500/50 splitter)",
        f"- questions: `eval/questions.jsonl`, {qy['n']} used" + (" (--quick subset)" if res["quick"] else " (all)"),
        f"- peak RSS of this benchmark process: {res['bench_peak_rss_mb']:.0f} MB", "",
        "## Targets", "",
        "| target | goal | measured | status |", "|---|---|---|---|",
    ]
    for v in verdicts:
        lines.append(f"| {v['target']} | {v['goal']} | {v['measured']} | {status(v['ok'])} |")
    lines += ["", "## Build, query, serving", "", *main, "",
              "Notes: build times are in-process with the model already loaded (a fresh `rag index` loads it only "
              "when something must be embedded; model load time is listed). Our entries include typical questions "
              f"(short) as well as chunks (≤ {max_chars} chars + title and heading path); plain chunks are up to "
              "500 chars. The plain pipeline has "
              "no incremental mode: any change re-embeds everything. Query latency is warm, sequential, one "
              "question at a time (ours and plain interleaved question by question), measured around `Assistant.ask` (ours) and `PlainPipeline.ask` (plain); "
              "retrieve-only for ours is the embed + retrieve parts of `timings_ms`. Serving numbers come from one "
              "subprocess per system (`python eval/bench.py --child ours|plain`): wall time from spawn to the "
              "first answer (interpreter, imports, model and index load) with a warm OS file cache; peak RSS is "
              "VmHWM after answering all questions.", "",
              f"## Synthetic scale ({res['data']} vectors, d={res['dim']})", "", *scale, "",
              "Search latency: one query at a time, k=10, over "
              f"{res['scale_queries']} queries that are noisy copies of stored vectors (cos ≈ 0.9 to the source); "
              "recall@10 against exact flat search over 200 such queries; ANN parameters are the smallest "
              "tried that reach recall@10 ≥ 0.95; \"rag default\" rows are the settings rag/index.py builds and "
              "searches with (`ann=auto`: flat below 50k vectors, HNSW below 200k, IVF-Flat above). Hybrid retrieve = our `Retriever.retrieve` (dense search "
              "with depth 200 + BM25 over synthetic text + RRF + confidence) on that index, excluding the query "
              "embedding. BM25 documents are 80 tokens sampled from the shipped corpus's jieba+bigram token "
              "distribution; BM25 queries are the tokenised dev questions. Size: serialized FAISS index / BM25 "
              "score matrix.", ""]
    curves = [r for r in res["scale"] if r.get("curve")]
    if curves:
        lines += ["### ANN tuning curves (batch of 200 queries)", "", "| chunks | index | param → recall@10 (ms/query in batch) |",
                  "|---|---|---|"]
        for r in curves:
            key = "nprobe" if r["kind"] == "ivf" else "efSearch"
            lines.append(f"| {r['n']:,} | {r['index']} | " + ", ".join(
                f"{c[key]} → {c['recall']:.3f} ({c['batch_ms_per_q']:.2f})" for c in r["curve"]) + " |")
        lines.append("")
    lines += ["![search latency vs corpus size](bench.png)", ""]
    if res.get("serving"):
        from eval import bench_serving

        serving, serving_verdicts = bench_serving.tables(res["serving"])
        lines += ["## Serving: concurrent clients and bulk answering (eval/bench_serving.py)", "",
                  "| target | goal | measured | status |", "|---|---|---|---|",
                  *(f"| {v['target']} | {v['goal']} | {v['measured']} | {status(v['ok'])} |" for v in serving_verdicts),
                  "", *serving, ""]
    text = "\n".join(lines)
    (out_dir / "bench.md").write_text(text, encoding="utf-8")
    write_plot(res["scale"], out_dir / "bench.png", res["threads"]["threads"])
    return out_dir / "bench.md", "\n".join(["## Targets", "", *lines[lines.index("## Targets") + 2:]])


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items() if k not in ("settings", "embedder", "plain_pipeline", "plain_onnx_pipeline")}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return o


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3-document corpus subset, 20 questions, 10k scale only")
    p.add_argument("--out", default=str(REPO_ROOT / "eval" / "reports"), help="report folder")
    p.add_argument("--scales", default=None, help="synthetic sizes, e.g. 10000,100000,1000000")
    p.add_argument("--threads", type=int, default=2, help="torch / faiss / BLAS threads (default 2)")
    p.add_argument("--questions", default=str(REPO_ROOT / "eval" / "questions.jsonl"))
    p.add_argument("--limit", type=int, default=0, help="use only the first N questions (0 = all)")
    p.add_argument("--no-cold", action="store_true", help="skip the cold build: seed from the repo's index/ if present")
    p.add_argument("--data", choices=["real-mix", "uniform"], default="real-mix", help="synthetic vector distribution")
    p.add_argument("--omp-wait-policy", choices=["inherit", "PASSIVE", "ACTIVE", "passive", "active"],
                   default="inherit", help="OMP_WAIT_POLICY for this run (default: as the environment / rag sets it)")
    p.add_argument("--hnsw-max", type=int, default=100_000, help="largest size at which HNSW is built")
    p.add_argument("--skip-scale", action="store_true", help="skip the synthetic scale section")
    p.add_argument("--report-from", metavar="BENCH_JSON", help="only rewrite bench.md/bench.png from a bench.json")
    p.add_argument("--serving", action="store_true",
                   help="only the serving section (eval/bench_serving.py: 1/5/20 concurrent clients over the API and "
                        "the web app, rag ask --batch vs the plain pipeline batched); writes bench_serving.md/.json")
    p.add_argument("--skip-serving", action="store_true", help="skip the serving section")
    p.add_argument("--before", help="serving section: another checkout of the code measured beside this one")
    p.add_argument("--stores", action="store_true",
                   help="only FAISS vs Milvus Lite: build, open, hybrid retrieve p50/p95, memory at --scales "
                        f"(default {STORE_SCALES}); writes bench_stores.md/.json")
    p.add_argument("--child", choices=["ours", "plain"], help=argparse.SUPPRESS)
    p.add_argument("--store-child", choices=["faiss", "milvus"], help=argparse.SUPPRESS)
    p.add_argument("--store-n", type=int, default=10_000, help=argparse.SUPPRESS)
    p.add_argument("--no-pin", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--index", help=argparse.SUPPRESS)
    p.add_argument("--plain-cache", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    scales = args.scales or ("10000" if args.quick else STORE_SCALES if args.stores else "10000,100000,1000000")
    args.scale_list = [int(s) for s in scales.split(",") if s.strip()]
    if args.quick and not args.limit:
        args.limit = 20
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if args.store_child:
        return store_child(args)
    if args.stores:
        command = " ".join(["python eval/bench.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
        rows = bench_stores(args)
        md = write_store_report(rows, Path(args.out), command, args.threads)
        print("\n".join(store_table(rows)))
        print(f"\nwrote {md}", flush=True)
        return 0
    if args.serving:  # the serving section alone, with its own report
        from eval import bench_serving

        return bench_serving.main(["--out", args.out, *(["--before", args.before] if args.before else []),
                                   *(["--quick"] if args.quick else []),
                                   *(["--limit", str(args.limit)] if args.limit else [])])
    if args.report_from:
        data = json.loads(Path(args.report_from).read_text(encoding="utf-8"))
        md, table = write_report(data, Path(args.out))
        print(table)
        print(f"\nwrote {md}", flush=True)
        return 0
    t_start = time.perf_counter()
    res: dict = {"command": " ".join(["python eval/bench.py", *(shlex.quote(a) for a in (argv or sys.argv[1:]))]),
                 "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick, "data": args.data,
                 "loadavg_start": loadavg()}
    res["threads"] = pin_threads(args.threads)
    print("thread settings: " + ", ".join(f"{k}={v}" for k, v in res["threads"].items()), flush=True)
    res["machine"] = machine_info()
    from eval.run import load_questions
    from rag.config import Settings

    questions = load_questions(Path(args.questions))
    if args.limit:
        step = max(1, len(questions) // args.limit)  # spread the subset over categories and styles
        questions = questions[::step][: args.limit]
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        work = Path(tmp)
        qfile = work / "questions.jsonl"
        qfile.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions), encoding="utf-8")
        build = bench_build(args, work, Settings)
        res["queries"] = bench_queries(build, questions)
        n_child = min(len(questions), 10) if args.quick else len(questions)
        res["children"] = {kind: run_child(kind, build, qfile, n_child, timeout=900) for kind in ("ours", "plain")}
        if not args.skip_serving:  # many shoppers at once, and bulk answering (eval/bench_serving.py)
            from eval import bench_serving

            res["serving"] = bench_serving.section(build["settings"], [q["question"] for q in questions],
                                                   before=args.before, quick=args.quick,
                                                   clients=(1, 5) if args.quick else (1, 5, 20))
        if not args.quick:
            # What ships: no pinning, so rag's own defaults (torch threads, OMP_WAIT_POLICY) apply.
            try:
                res["children"]["ours_unpinned"] = run_child("ours", build, qfile, n_child, timeout=900, no_pin=True)
            except RuntimeError as e:  # an extra row only: never lose the run for it
                log(f"unpinned child failed: {e}")
        vec_file = None
        from rag.index import current_version

        cur = current_version(build["index_dir"])
        if cur is not None and (cur / "vectors.npy").exists():
            vec_file = np.load(cur / "vectors.npy")
        res["dim"] = int(build["embedder"].dim) if build.get("embedder") is not None else DIM_DEFAULT
        res["build"] = build
        del build["plain_pipeline"], build["plain_onnx_pipeline"]
        gc.collect()
        res["scale_queries"] = "100 (50 at 1M)"
        res["scale"] = [] if args.skip_scale else bench_scale(args, vec_file, res["dim"], questions)
    res["loadavg_end"] = loadavg()
    phases = [(f"build {k}", v.get("loadavg")) for k, v in res["build"]["steps"].items()]
    phases.append(("queries", res["queries"].get("loadavg")))
    phases += [(f"child {k}", v.get("loadavg")) for k, v in res["children"].items()]
    phases += [(f"scale {r['n']:,}", r.get("loadavg")) for r in res["scale"] if r.get("loadavg")]
    res["phase_load"] = phases
    res["bench_peak_rss_mb"] = proc_status().get("VmHWM", 0.0)
    res["wall_s"] = time.perf_counter() - t_start
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _jsonable(res)  # written first: a report bug must not lose a 15-minute run (see --report-from)
    (out_dir / "bench.json").write_text(json.dumps(data, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    md, table = write_report(data, out_dir)
    (out_dir / "bench.json").write_text(json.dumps(data, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    print(table)
    print(f"\nwrote {md}, {out_dir / 'bench.png'}, {out_dir / 'bench.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
