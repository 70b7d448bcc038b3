"""Bad input of every kind gets one Chinese sentence and exit status 2 (or, in --batch, a per-line
``error`` object while the batch goes on), never a traceback; a damaged index repairs itself;
corpus problems that would silently change the answers are loud warnings (``--strict``: failures)."""
from __future__ import annotations

import ast
import json
import os
import re

import numpy as np
import pytest

from conftest import write_corpus
from rag.config import REPO_ROOT, Settings
from rag.documents import DocumentError, load_document
from rag.index import (
    IndexError_,
    collect_chunks,
    current_version,
    load_index,
)
from rag.store import build_index
from test_cli import kb_args, rag

LAW = "---\ntitle: 甲法\nkind: law\n---\n# 甲法\n\n## 第一条\n\n消费者有权退货。\n\n## 第二条\n\n经营者应当赔偿损失。\n"
SMALL = {
    "laws/a.md": LAW,
    "guides/g.md": "---\ntitle: 乙指南\nkind: guide\n---\n# 乙指南\n\n## 一、取证\n\n开箱录像，保留证据。\n",
}
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def small(tmp_path) -> Settings:
    corpus = write_corpus(tmp_path / "corpus", SMALL)
    return Settings().with_(corpus_dir=corpus, index_dir=tmp_path / "index", embedding_cache=tmp_path / "emb.sqlite3")


def assert_chinese_error(r, *words):
    """Exit status 2, no traceback, and the last stderr line one Chinese sentence (with ``words``)."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("错误：") and CJK.search(last), last
    for w in words:
        assert w in last, last


# --------------------------------------------------------------------------- the question


def test_question_that_is_not_utf8_exits_2(tmp_path):
    r = rag("ask", b"\xff\xfe\xb0\xa1\x80", "--index", str(tmp_path / "index"))
    assert_chinese_error(r, "UTF-8")


def test_question_typed_in_a_gbk_terminal_exits_2(tmp_path):
    r = rag("ask", "网上买的衣服不喜欢能退吗".encode("gbk"), "--index", str(tmp_path / "index"))
    assert_chinese_error(r, "UTF-8")


def test_batch_lines_with_a_question_that_is_not_text_get_an_error_and_the_batch_goes_on(shipped_settings, tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join([
        '{"id": "n", "question": 123}',
        '{"id": "l", "question": ["x"]}',
        '{"id": "s", "question": "\\udcff"}',
        '{"id": "ok", "question": "快递丢了谁赔"}',
        '{"id": "s2", "question": "退货\\udcff"}',
        '{"id": "ok2", "question": "买到假货怎么赔偿"}',
    ]), encoding="utf-8")
    r = rag("ask", "--batch", str(f), "--json", "-q", *kb_args(shipped_settings))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    out = {x["id"]: x for x in map(json.loads, r.stdout.splitlines())}
    assert list(out) == ["n", "l", "s", "ok", "s2", "ok2"]
    for bad in ("n", "l", "s", "s2"):
        assert CJK.search(out[bad]["error"]) and out[bad]["citations"] == [], out[bad]
    assert "文字" in out["n"]["error"] and "UTF-8" in out["s"]["error"]
    for good in ("ok", "ok2"):
        assert "error" not in out[good] and out[good]["answer"] and out[good]["retrieved"]


# --------------------------------------------------------------------------- the --batch file and --index


def test_batch_file_in_gbk_exits_2(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_bytes('{"id": "a", "question": "退货"}\n'.encode("gbk"))
    assert_chinese_error(rag("ask", "--batch", str(f), "--index", str(tmp_path / "index")), "UTF-8")


def test_batch_file_that_is_binary_exits_2(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_bytes(bytes(range(256)) * 4)
    assert_chinese_error(rag("ask", "--batch", str(f), "--index", str(tmp_path / "index")), "UTF-8")


def test_batch_path_that_is_a_folder_exits_2(tmp_path):
    assert_chinese_error(rag("ask", "--batch", str(tmp_path), "--index", str(tmp_path / "index")), "文件夹")


def test_index_option_pointing_at_a_file_exits_2_for_ask(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_chinese_error(rag("ask", "退货", "--index", str(tmp_path / "file")), "不是文件夹")


def test_index_option_pointing_at_a_file_exits_2_for_index(small, tmp_path):
    (tmp_path / "file").write_text("x")
    r = rag("index", "--corpus", str(small.corpus_dir), "--index", str(tmp_path / "file"))
    assert_chinese_error(r, "不是文件夹")


# --------------------------------------------------------------------------- a damaged index


@pytest.mark.parametrize("manifest", ["[]", '"manifest"', "42", "null", '{"files": ["vectors.npy"]}'])
def test_manifest_that_is_valid_json_but_not_an_object_is_a_damaged_index(small, manifest):
    build_index(small)
    (current_version(small.index_dir) / "manifest.json").write_text(manifest)
    with pytest.raises(IndexError_, match="清单已损坏.*rag index"):
        load_index(small)
    build_index(small)  # and the rebuild repairs it
    assert load_index(small).chunks


def test_manifest_that_is_not_an_object_exits_2(tmp_path):
    version = tmp_path / "index" / "v-1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text("[]")
    (tmp_path / "index" / "CURRENT").write_text("v-1\n")
    assert_chinese_error(rag("ask", "退货", "--index", str(tmp_path / "index")), "损坏", "rag index")


def test_binary_current_file_exits_2_and_rag_index_repairs_it(small):
    build_index(small)
    (small.index_dir / "CURRENT").write_bytes(b"\xff\xfe\x00\x81 binary")
    assert_chinese_error(rag("ask", "退货", *kb_args(small)), "CURRENT", "rag index")
    r = rag("index", *kb_args(small))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert load_index(small).chunks


def test_corrupt_vectors_are_not_reused_by_the_rebuild(small):
    build_index(small)
    good = load_index(small).vectors.copy()
    f = current_version(small.index_dir) / "vectors.npy"
    size = f.stat().st_size
    with open(f, "r+b") as fh:  # damaged in place: same size, header intact
        fh.seek(200)
        fh.write(os.urandom(size - 200))
    with pytest.raises(IndexError_, match="vectors.npy"):
        load_index(small)
    report = build_index(small)
    assert any("vectors.npy" in n and "损坏" in n for n in report.notes), report.summary()
    assert "注意：" in report.summary()
    assert np.allclose(load_index(small).vectors, good, atol=1e-5)


# --------------------------------------------------------------------------- the corpus


def test_symlink_to_another_corpus_file_is_skipped_and_every_rebuild_succeeds(small):
    (small.corpus_dir / "guides/aa-link.md").symlink_to(small.corpus_dir / "laws/a.md")
    for _ in range(2):
        report = build_index(small)
        assert report.documents == 2
        why = dict(report.skipped)["guides/aa-link.md"]
        assert "符号链接" in why and "laws/a.md" in why
    assert {c.source for c in load_index(small).chunks} == {"laws/a.md", "guides/g.md"}


def test_symlink_to_a_file_outside_the_corpus_is_skipped_with_a_chinese_reason(small, tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text("# 外部文件\n\n正文。\n", encoding="utf-8")
    (small.corpus_dir / "guides/outside.md").symlink_to(outside)
    why = dict(collect_chunks(small)[2])["guides/outside.md"]
    assert "知识库文件夹以外" in why and "ValueError" not in why and "subpath" not in why


def test_law_with_a_front_matter_typo_is_a_loud_warning(small):
    write_corpus(small.corpus_dir, {"laws/typo.md": LAW.replace("title: 甲法", "title 丙法")})
    docs, _, skipped, _, warnings = collect_chunks(small)
    assert "laws/typo.md" in dict(skipped)
    assert any("laws/typo.md" in w and "法律" in w for w in warnings), warnings


def test_law_with_a_front_matter_typo_fails_strict_index_with_exit_2(small):
    write_corpus(small.corpus_dir, {"laws/typo.md": LAW.replace("title: 甲法", "title 丙法")})
    r = rag("index", "--strict", *kb_args(small))
    assert_chinese_error(r, "laws/typo.md", "YAML")


def test_front_matter_typo_message_is_chinese_and_names_the_line(small):
    path = write_corpus(small.corpus_dir, {"laws/typo.md": LAW.replace("title: 甲法", "title 丙法")}) / "laws/typo.md"
    with pytest.raises(DocumentError, match="第 [23] 行附近") as info:
        load_document(path, small.corpus_dir)
    assert "while" not in str(info.value)


def test_identical_copy_of_a_law_in_a_folder_that_sorts_first_keeps_the_canonical_one(small):
    write_corpus(small.corpus_dir, {"archive/a.md": LAW})
    docs, _, skipped, _, warnings = collect_chunks(small)
    assert "laws/a.md" in {d.source for d in docs} and "archive/a.md" in dict(skipped)
    assert any("archive/a.md" in w and "重复" in w for w in warnings), warnings


def test_second_copy_of_a_law_with_the_same_title_is_a_loud_warning(small):
    write_corpus(small.corpus_dir, {"archive/a.md": LAW.replace("赔偿损失", "赔偿全部损失")})
    docs, _, _, _, warnings = collect_chunks(small)
    assert any("archive/a.md" in w and "《甲法》" in w for w in warnings), warnings


def test_second_copy_of_a_law_with_the_same_title_fails_strict_index_with_exit_2(small):
    write_corpus(small.corpus_dir, {"archive/a.md": LAW.replace("赔偿损失", "赔偿全部损失")})
    assert_chinese_error(rag("index", "--strict", *kb_args(small)), "《甲法》")


def test_index_summary_shows_warnings_and_the_strict_hint(small):
    write_corpus(small.corpus_dir, {"laws/typo.md": LAW.replace("title: 甲法", "title 丙法")})
    summary = build_index(small).summary()
    assert "警告：法律文件 laws/typo.md" in summary and "--strict" in summary


# --------------------------------------------------------------------------- import cycles


def _imports(module: str) -> set[str]:
    """Every module of this repo that ``module`` imports, at the top or inside a function."""
    path = REPO_ROOT / (module.replace(".", "/") + ".py")
    package = module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([package] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if (REPO_ROOT / (m.replace(".", "/") + ".py")).exists()}


def _cycle_through(module: str, graph: dict[str, set[str]]) -> list[str] | None:
    """An import path from ``module`` back to itself, if there is one."""
    todo, seen = [[module]], set()
    while todo:
        path = todo.pop()
        for nxt in graph.get(path[-1], ()):
            if nxt == module:
                return path + [nxt]
            if nxt not in seen:
                seen.add(nxt)
                todo.append(path + [nxt])
    return None


def test_no_import_cycles_in_rag_or_eval():
    """rag.cli <-> eval.run and formats <-> documents <-> chunking were cycles; none may come back."""
    modules = [p.relative_to(REPO_ROOT).with_suffix("").as_posix().replace("/", ".")
               for folder in ("rag", "eval") for p in sorted((REPO_ROOT / folder).glob("*.py"))]
    graph = {m: {i for i in _imports(m) if i in modules} for m in modules}
    cycles = [c for c in (_cycle_through(m, graph) for m in modules) if c]
    assert not cycles, [" -> ".join(c) for c in cycles]
