"""Rebuilding the knowledge base: bad files are skipped with reasons, renames reuse vectors,
a serving assistant switches to the new version without a failed request."""
import os
import threading
import time

import pytest

from conftest import write_corpus
from rag.config import Settings
from rag.documents import DocumentError
from rag.index import IndexBusy, build_lock, load_index
from rag.store import build_index

GOOD = {
    "laws/a.md": "---\ntitle: 甲法\nkind: law\n---\n# 甲法\n\n## 第一条\n\n消费者有权退货。\n\n## 第二条\n\n经营者应当赔偿损失。\n",
    "guides/g.md": "---\ntitle: 乙指南\n---\n# 乙指南\n\n## 一、取证\n\n开箱录像，保留证据。\n",
}
ENCRYPTED_PDF_NOTE = "PDF 已加密"


def bad_files(root):
    from pypdf import PdfWriter

    blank = PdfWriter()
    blank.add_blank_page(width=200, height=200)
    with open(root / "guides/scanned.pdf", "wb") as fh:
        blank.write(fh)
    enc = PdfWriter()
    enc.add_blank_page(width=200, height=200)
    enc.encrypt("secret")
    with open(root / "guides/locked.pdf", "wb") as fh:
        enc.write(fh)
    write_corpus(root, {
        "guides/empty.md": "",
        "guides/binary.txt": bytes(range(256)) * 10,
        "guides/fake.pdf": b"this is not a pdf at all",
        "guides/broken.docx": b"PK\x03\x04 not really a zip",
        "guides/bad-yaml.md": "---\ntitle: [unclosed\n---\n# x\n\n正文。\n",
        "guides/only-front-matter.md": "---\ntitle: 空\n---\n\n",
        "guides/zz-copy.md": GOOD["guides/g.md"],
    })
    huge = root / "guides/huge.txt"
    with open(huge, "wb") as fh:  # a sparse 200 MB file: costs no disk
        fh.truncate(200 * 1024 * 1024)


@pytest.fixture
def kb(tmp_path):
    corpus = write_corpus(tmp_path / "corpus", GOOD)
    return Settings().with_(corpus_dir=corpus, index_dir=tmp_path / "index", embedding_cache=tmp_path / "emb.sqlite3")


def test_every_bad_file_is_skipped_with_a_reason_and_the_rest_is_indexed(kb):
    bad_files(kb.corpus_dir)
    report = build_index(kb)
    skipped = dict(report.skipped)
    assert report.documents == 2
    assert set(skipped) == {"guides/scanned.pdf", "guides/locked.pdf", "guides/empty.md", "guides/binary.txt",
                            "guides/fake.pdf", "guides/broken.docx", "guides/bad-yaml.md",
                            "guides/only-front-matter.md", "guides/zz-copy.md", "guides/huge.txt"}
    assert "扫描件" in skipped["guides/scanned.pdf"]
    assert ENCRYPTED_PDF_NOTE in skipped["guides/locked.pdf"]
    assert "太大" in skipped["guides/huge.txt"]
    assert "YAML" in skipped["guides/bad-yaml.md"]
    assert "相同" in skipped["guides/zz-copy.md"]
    assert "跳过 guides/fake.pdf" in report.summary()
    assert {c.source for c in load_index(kb).chunks} == {"laws/a.md", "guides/g.md"}


def test_strict_build_fails_on_the_first_bad_file_and_keeps_the_old_index(kb):
    build_index(kb)
    before = load_index(kb).path
    write_corpus(kb.corpus_dir, {"guides/empty.md": ""})
    with pytest.raises(DocumentError, match="empty.md"):
        build_index(kb, strict=True)
    assert load_index(kb).path == before


def test_renamed_file_reuses_its_embeddings(kb):
    build_index(kb)
    os.rename(kb.corpus_dir / "laws/a.md", kb.corpus_dir / "laws/renamed.md")
    report = build_index(kb)
    assert report.embedded == 0
    assert "laws/renamed.md" in load_index(kb).manifest["documents"]


def test_second_rebuild_waits_when_asked_to(kb):
    build_index(kb)
    released = threading.Event()

    def hold():
        with build_lock(kb.index_dir):
            time.sleep(1.0)
        released.set()

    t = threading.Thread(target=hold)
    t.start()
    time.sleep(0.2)
    with pytest.raises(IndexBusy):
        build_index(kb)
    build_index(kb, wait=True)
    assert released.is_set()
    t.join()


def test_serving_assistant_switches_to_new_version_without_a_failed_request(writable_kb):
    from rag.pipeline import Assistant

    assistant = Assistant(writable_kb)
    first = assistant.index.version
    errors, versions, stop = [], set(), threading.Event()

    def ask_loop():
        while not stop.is_set():
            try:
                versions.add(assistant.ask("快递丢了谁赔")["index_version"])
            except Exception as e:  # any failure here is a failed user request
                errors.append(e)

    t = threading.Thread(target=ask_loop)
    t.start()
    write_corpus(writable_kb.corpus_dir, {"guides/new.md": "# 新指南\n\n## 退货运费\n\n退货的运费由谁承担要看原因。\n"})
    build_index(writable_kb)
    time.sleep(1.0)
    stop.set()
    t.join()
    assert not errors
    assert first in versions and assistant.index.version != first
    assert assistant.index.version in versions
