"""Feedback storage: record 👍/👎 from the web app and export it (no model or index needed)."""
from __future__ import annotations

import csv
import io
import json

import pytest

from rag import feedback
from rag.config import Settings

CITES = [{"n": 1, "source": "laws/e-commerce-law.md", "title": "中华人民共和国电子商务法", "section": "第五十条",
          "kind": "law", "text": "很长的条文……", "used_sentences": [[0, 5]]}]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings().with_(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")


def test_export_without_feedback_says_so(settings):
    assert not settings.index_dir.exists()
    assert feedback.export(settings, "jsonl") == feedback.NO_FEEDBACK
    assert feedback.export(settings, "csv") == feedback.NO_FEEDBACK
    assert not settings.index_dir.exists()  # exporting must not create anything


def test_round_trip_jsonl(settings):
    i1 = feedback.record(settings, "衣服不喜欢能退吗", "可以。[1]", CITES, "up", index_version="v-1")
    i2 = feedback.record(settings, "红烧肉怎么做", "资料中没有找到", [], "down", comment="答非所问")
    assert i2 > i1
    assert (settings.index_dir / "feedback.sqlite3").exists()
    lines = feedback.export(settings, "jsonl").splitlines()
    assert len(lines) == 2
    first, second = (json.loads(x) for x in lines)
    assert first["question"] == "衣服不喜欢能退吗" and first["rating"] == "up"
    assert first["index_version"] == "v-1"
    assert first["citations"] == [{"n": 1, "source": "laws/e-commerce-law.md", "title": "中华人民共和国电子商务法",
                                   "section": "第五十条", "kind": "law"}]
    assert second["rating"] == "down" and second["comment"] == "答非所问" and second["citations"] == []


def test_csv_export(settings):
    feedback.record(settings, '含"引号",和逗号', "答案\n第二行", CITES, "down")
    out = feedback.export(settings, "csv")
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == list(feedback.COLUMNS)
    row = dict(zip(table[0], table[1]))
    assert row["question"] == '含"引号",和逗号'
    assert row["answer"] == "答案\n第二行"
    assert row["rating"] == "down"
    assert json.loads(row["citations"])[0]["source"] == "laws/e-commerce-law.md"


def test_rejects_bad_rating_and_format(settings):
    with pytest.raises(ValueError):
        feedback.record(settings, "q", "a", [], "meh")
    with pytest.raises(ValueError):
        feedback.export(settings, "xml")


def test_cli_export(settings, capsys):
    from rag.cli import main

    feedback.record(settings, "问题", "回答", CITES, "up")
    assert main(["feedback", "export", "--index", str(settings.index_dir), "--format", "jsonl"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["question"] == "问题"
