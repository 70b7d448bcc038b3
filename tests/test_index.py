import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from conftest import write_corpus
from rag.config import Settings
from rag.documents import DocumentError
from rag.index import IndexBusy, IndexError_, build_lock, current_version, load_index
from rag.store import build_index

SMALL = {
    "laws/a.md": "---\ntitle: 甲法\nkind: law\n---\n# 甲法\n\n## 第一条\n\n消费者有权退货。\n\n## 第二条\n\n经营者应当赔偿损失。\n",
    "guides/g.md": "---\ntitle: 乙指南\nkind: guide\n---\n# 乙指南\n\n## 一、取证\n\n开箱录像，保留证据。\n",
}


@pytest.fixture
def small(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", SMALL)
    return Settings().with_(corpus_dir=corpus, index_dir=tmp_path / "index", embedding_cache=tmp_path / "emb.sqlite3")


def test_save_load_round_trip_keeps_chunks_and_vectors(small):
    report = build_index(small)
    idx = load_index(small)
    assert report.documents == 2 and report.chunks == len(idx.chunks) == idx.faiss_index.ntotal
    assert {c.source for c in idx.chunks} == {"laws/a.md", "guides/g.md"}
    d, i = idx.faiss_index.search(idx.vectors[:1], 1)
    assert i[0][0] == 0 and d[0][0] == pytest.approx(1.0, abs=1e-4)
    assert set(idx.manifest["documents"]) == {"laws/a.md", "guides/g.md"}
    assert idx.manifest["model_id"] and idx.manifest["dim"] == idx.vectors.shape[1]


def test_unchanged_rebuild_reuses_every_vector(small):
    build_index(small)
    first = load_index(small)
    report = build_index(small)
    assert report.embedded == 0 and report.reused == report.chunks
    assert np.array_equal(load_index(small).vectors, first.vectors)


def test_edited_document_reembeds_only_changed_chunks(small):
    build_index(small)
    p = small.corpus_dir / "laws/a.md"
    p.write_text(p.read_text(encoding="utf-8").replace("赔偿损失", "赔偿全部损失"), encoding="utf-8")
    report = build_index(small)
    assert report.embedded == 1


def test_deleted_document_leaves_the_index(small):
    build_index(small)
    (small.corpus_dir / "guides/g.md").unlink()
    build_index(small)
    assert {c.source for c in load_index(small).chunks} == {"laws/a.md"}


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "corpus").mkdir()
    with pytest.raises(DocumentError):
        build_index(Settings().with_(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index"))


def test_missing_index_says_to_build_one(tmp_path):
    with pytest.raises(IndexError_, match="rag index"):
        load_index(Settings().with_(index_dir=tmp_path / "none"))


def test_truncated_index_file_is_detected(small):
    build_index(small)
    f = current_version(small.index_dir) / "vectors.npy"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(IndexError_, match="损坏"):
        load_index(small)


def test_index_from_another_chunker_setting_is_refused(small):
    build_index(small)
    with pytest.raises(IndexError_, match="切分"):
        load_index(small.with_(chunk_max_chars=123))


def test_index_from_another_model_is_refused(small):
    build_index(small)
    with pytest.raises(IndexError_, match="向量模型"):
        load_index(small, model_id="some/other-model")


def test_second_concurrent_rebuild_is_refused(small):
    with build_lock(small.index_dir):
        with pytest.raises(IndexBusy):
            build_index(small)


def test_bad_file_is_skipped_with_reason_and_strict_fails(small):
    (small.corpus_dir / "laws/empty.md").write_text("")
    report = build_index(small)
    assert report.documents == 2
    assert report.skipped and report.skipped[0][0] == "laws/empty.md"
    with pytest.raises(DocumentError):
        build_index(small, strict=True)


@pytest.mark.parametrize("delay", [0.5, 3.0, 6.0])
def test_sigkill_during_rebuild_leaves_previous_index_loadable(small, delay):
    build_index(small)
    before = current_version(small.index_dir)
    # Force new embeddings so the rebuild has real work to be killed in.
    nonce = uuid.uuid4().hex  # texts never seen before, so the persistent cache can't skip the work
    for i in range(30):
        (small.corpus_dir / f"laws/extra{i}.md").write_text(
            f"# 法{i}\n\n## 第一条\n\n第{i}号新规定的内容（{nonce}），关于退货{i}。\n", encoding="utf-8")
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "rag.cli", "index", "--corpus", str(small.corpus_dir),
                             "--index", str(small.index_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    idx = load_index(small)  # either the old version or a complete new one, never a broken one
    assert idx.path in (before, current_version(small.index_dir))
    assert idx.faiss_index.ntotal == len(idx.chunks) and len(idx.owners) == len(idx.vectors)
    build_index(small)  # and the next rebuild recovers
    assert any(c.source == "laws/extra29.md" for c in load_index(small).chunks)


def test_index_type_is_chosen_by_size_and_can_be_forced():
    from rag.index import choose_index_type

    assert choose_index_type(1_000) == "flat"
    assert choose_index_type(100_000) == "hnsw"
    assert choose_index_type(2_000_000) == "ivf"
    assert choose_index_type(10, "hnsw") == "hnsw"
    assert choose_index_type(10, "ivf") == "ivf"
    assert choose_index_type(10**7, "flat") == "flat"


def test_unknown_index_type_setting_is_an_error():
    from rag.index import choose_index_type

    with pytest.raises(ValueError, match="ivf"):
        choose_index_type(10, "annoy")


def test_ivf_index_survives_a_save_and_load_with_its_search_depth(tmp_path):
    import faiss

    from rag.index import IVF_NPROBE, _make_faiss, ivf_nlist, tune_search

    rng = np.random.default_rng(1)
    x = rng.standard_normal((6000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    faiss.write_index(_make_faiss(x, kind="ivf"), str(tmp_path / "ivf.faiss"))
    index = faiss.read_index(str(tmp_path / "ivf.faiss"))
    tune_search(index)
    ivf = faiss.extract_index_ivf(index)
    assert ivf.nlist == ivf_nlist(6000) and ivf.nprobe == IVF_NPROBE
    _, ids = index.search(x[:50], 1)
    assert (ids[:, 0] == np.arange(50)).all()


def test_too_few_vectors_for_ivf_fall_back_to_exact_search():
    from rag.index import _make_faiss

    x = np.eye(8, dtype=np.float32)
    assert type(_make_faiss(x, kind="ivf")).__name__ == "IndexFlatIP"


def test_forced_hnsw_index_builds_loads_and_finds_the_same_top_hit(small):
    build_index(small.with_(ann="hnsw"))
    idx = load_index(small)
    assert idx.manifest["ann"] == "hnsw" and idx.faiss_index.hnsw.efSearch == 128
    _, ids = idx.faiss_index.search(idx.vectors[1:2], 1)
    assert ids[0][0] == 1


def test_new_index_folder_reuses_vectors_from_the_shared_cache(small, tmp_path):
    build_index(small)
    report = build_index(small.with_(index_dir=tmp_path / "second"))
    assert report.embedded == 0 and report.reused == report.chunks
