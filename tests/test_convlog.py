"""The conversation log (rag/convlog.py): masking before storing, the writer thread, feedback,
retention, switching off, export (also `rag log export`), the daily statistics, and the cost on
the question's path."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
import statistics
import time

import pytest

from rag import convlog
from rag.config import Settings
from rag.convlog import mask

# --------------------------------------------------------------------------- masking

PHONE = "13812345678"
ID_NUMBER = "110101199003071234"


@pytest.mark.parametrize("text, hidden", [
    ("我的手机号是13812345678，快递丢了", "13812345678"),
    ("电话 +86 138-1234-5678 找不到人", "138-1234-5678"),
    ("(+86)139 1234 5678", "1234 5678"),
    ("008613912345678", "13912345678"),
    ("联系 86-15900001111 就行", "15900001111"),
    ("座机 010-62345678 转 123", "62345678"),
    ("身份证110101199003071234", "199003071234"),
    ("身份证号 11010519491231002X", "11010519491231002X"),
    ("身份证 110105 19491231 002x 丢了", "19491231"),
    ("老身份证 130503670401001", "130503670401001"),
    ("订单号：2456789012345678901", "2456789012345678901"),
    ("订单号是 A20231105XYZ889", "A20231105XYZ889"),
    ("快递单号 SF1234567890123 一直不动", "SF1234567890123"),
    ("运单号YT7654321098765没更新", "YT7654321098765"),
    ("拼多多订单 230512-123456789012345 退款", "230512-123456789012345"),
    ("京东的 312345678901 号订单", "312345678901"),
    ("邮箱 zhang.san@example.com", "zhang.san@example.com"),
    ("我住在浙江省杭州市西湖区文三路90号东部软件园3号楼502室，快递一直不送", "文三路90号"),
    ("收货地址：北京市朝阳区建国路88号SOHO现代城5号楼1203室", "建国路88号"),
    ("寄到广东深圳南山区科技园阳光小区3栋502", "阳光小区3栋502"),
    ("上海市浦东新区张江镇碧波路690号的快递站", "碧波路690号"),
    ("快递放在了幸福小区5号楼门口", "幸福小区5号楼"),
    ("地址是成都市武侯区人民南路四段1号", "人民南路四段1号"),
])
def test_personal_data_is_masked(text, hidden):
    out = mask(text)
    assert hidden not in out, out
    assert any(tag in out for tag in ("[手机号]", "[电话]", "[身份证号]", "[订单号]", "[邮箱]", "[地址]")), out


def test_mask_labels_each_kind():
    out = mask(f"手机{PHONE}，身份证{ID_NUMBER}，订单号 2456789012345678901，住在杭州市西湖区文三路90号")
    assert out == "手机[手机号]，身份证[身份证号]，订单号 [订单号]，住在[地址]", out


@pytest.mark.parametrize("text", [
    "网上买的衣服不喜欢，7天内能无理由退货吗？",
    "找市场监督管理局投诉，拨打12315，或者打400-123-4567",
    "消费者权益保护法第二十五条规定七日内退货，1000元以下的赔500元",
    "2024年3月5日下单，20240305到货，价格是1999元",
    "在市区买的，县城的店也行吗",
    "路上摔坏了怎么办", "寄到了错误的地址", "快递送到驿站了", "北京市消费者协会电话是多少",
    "网购路由器坏了，用了3个月", "买了3件衣服退了2件", "iPhone 15 Pro Max 256G 屏幕有坏点",
    "我花了12000元买的电脑", "快递柜取件码 12345678", "第1号商品和第2号商品", "双十一买的 5 件商品",
    "商家说7天内发货，结果15天还没发", "食品安全法第一百四十八条规定的十倍赔偿",
])
def test_ordinary_questions_are_left_alone(text):
    assert mask(text) == text


# --------------------------------------------------------------------------- the log


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings().with_(index_dir=tmp_path / "index", corpus_dir=tmp_path / "corpus")


def _result(question: str, refused: bool = False, **extra) -> dict:
    cite = {"n": 1, "source": "laws/consumer-protection-law.md", "title": "中华人民共和国消费者权益保护法",
            "kind": "law", "section": "第二十五条", "text": "经营者采用网络……" * 20, "start": 0, "end": 10,
            "score": 0.0323, "used_sentences": [[0, 5]]}
    return {"id": None, "question": question, "answer": "要点：可以退货。[1]\n依据：……", "refused": refused,
            "citations": [] if refused else [cite], "retrieved": [dict(cite, n=i) for i in range(1, 11)],
            "confidence": 0.2 if refused else 0.93, "index_version": "v-1",
            "sections": {"key_point": None if refused else {"n": 1, "text": f"可以退货，联系{PHONE}。"}},
            "timings_ms": {"total": 12.5}, **extra}


def test_question_with_phone_and_id_is_stored_masked(settings):
    question = f"我的手机号是{PHONE}，身份证号{ID_NUMBER}，网上买的衣服能退吗？"
    uid = convlog.record(settings, _result(question), "web", mode="hybrid", k=5)
    log = convlog.for_settings(settings)
    assert log.flush()
    row = log.rows()[0]
    assert row["uid"] == uid
    assert row["question"] == "我的手机号是[手机号]，身份证号[身份证号]，网上买的衣服能退吗？"
    assert row["answer_summary"] == "可以退货，联系[手机号]。"
    # nothing unmasked anywhere in the file (the writer masks before the INSERT)
    raw = convlog.db_path(settings).read_bytes()
    for wal in convlog.db_path(settings).parent.glob("*-wal"):
        raw += wal.read_bytes()
    assert PHONE.encode() not in raw and ID_NUMBER.encode() not in raw
    assert row["citations"] == [{"n": 1, "source": "laws/consumer-protection-law.md",
                                 "title": "中华人民共和国消费者权益保护法", "section": "第二十五条", "kind": "law",
                                 "score": 0.0323}]
    assert len(row["retrieved"]) == convlog.RETRIEVED_KEPT and "text" not in row["retrieved"][0]
    assert (row["channel"], row["mode"], row["k"], row["latency_ms"], row["refused"]) == ("web", "hybrid", 5, 12.5, False)


def test_feedback_attaches_to_the_logged_question(settings):
    a = convlog.record(settings, _result("问题一"))
    b = convlog.record(settings, _result("问题二", refused=True))
    convlog.feedback(settings, a, "up")
    convlog.feedback(settings, b, "down")
    convlog.feedback(settings, "no-such-id", "down")
    convlog.feedback(settings, a, "sideways")  # ignored
    rows = {r["question"]: r for r in convlog.for_settings(settings).rows()}
    assert rows["问题一"]["feedback"] == "up" and rows["问题二"]["feedback"] == "down"
    unresolved = convlog.for_settings(settings).rows(unresolved=True)
    assert [r["question"] for r in unresolved] == ["问题二"]


def test_retention_deletes_old_entries(settings):
    s = settings.with_(convlog_retention_days=30)
    log = convlog.for_settings(s)
    convlog.record(s, _result("新的问题"))
    log.flush()
    with sqlite3.connect(convlog.db_path(s)) as conn:
        conn.execute("INSERT INTO conversations (uid, ts, created, channel, question) VALUES ('old', ?, ?, 'web', ?)",
                     (time.time() - 40 * 86400, "2020-01-01T00:00:00", "很久以前的问题"))
    assert [r["question"] for r in log.rows()] == ["新的问题"]  # hidden at once
    assert log.purge() == 1  # and deleted (the writer also does this hourly)
    with sqlite3.connect(convlog.db_path(s)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == 1


def test_switched_off_logs_nothing(settings):
    off = settings.with_(convlog=False)
    assert convlog.record(off, _result("不记录")) is None
    convlog.feedback(off, "x", "up")
    assert not convlog.db_path(off).exists()
    assert convlog.for_settings(off).rows() == []


def test_export_csv_and_jsonl(settings):
    convlog.record(settings, _result(f"手机{PHONE}，衣服能退吗"))
    convlog.record(settings, _result("今天天气怎么样", refused=True), "api")
    log = convlog.for_settings(settings)
    lines = [json.loads(x) for x in log.export("jsonl").splitlines()]
    assert [x["question"] for x in lines] == ["手机[手机号]，衣服能退吗", "今天天气怎么样"]  # oldest first
    assert list(lines[0]) == list(convlog.EXPORT_COLUMNS) and lines[1]["channel"] == "api" and lines[1]["refused"]
    rows = list(csv.reader(io.StringIO(log.export("csv"))))
    assert tuple(rows[0]) == convlog.EXPORT_COLUMNS and len(rows) == 3
    assert json.loads(rows[1][convlog.EXPORT_COLUMNS.index("citations")])[0]["section"] == "第二十五条"
    with pytest.raises(ValueError):
        log.export("xml")


def test_rag_log_export_command(settings, tmp_path, capsys):
    from rag.cli import main

    convlog.record(settings, _result(f"身份证{ID_NUMBER}丢了"))
    convlog.for_settings(settings).flush()
    args = ["--index", str(settings.index_dir), "--corpus", str(settings.corpus_dir)]
    assert main(["log", "export", *args]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0])["question"] == "身份证[身份证号]丢了"
    target = tmp_path / "log.csv"
    assert main(["log", "export", "--format", "csv", "--out", str(target), *args]) == 0
    assert "身份证[身份证号]丢了" in target.read_text(encoding="utf-8")
    empty = ["--index", str(tmp_path / "none"), "--corpus", str(settings.corpus_dir)]
    assert main(["log", "export", *empty]) == 2
    assert "还没有对话记录" in capsys.readouterr().err


def test_daily_stats():
    rows = [
        {"created": "2026-11-30T10:00:00", "refused": True, "feedback": None, "citations": []},
        {"created": "2026-11-30T11:00:00", "refused": False, "feedback": "up",
         "citations": [{"source": "a.md", "title": "甲"}, {"source": "a.md", "title": "甲"}]},
        {"created": "2026-12-01T09:00:00", "refused": False, "feedback": "down",
         "citations": [{"source": "a.md", "title": "甲"}, {"source": "b.md", "title": "乙"}]},
    ]
    s = convlog.daily_stats(rows)
    assert s["days"] == [{"date": "2026-11-30", "questions": 2, "refused": 1, "up": 1, "down": 0},
                         {"date": "2026-12-01", "questions": 1, "refused": 0, "up": 0, "down": 1}]
    assert s["totals"] == {"questions": 3, "refused": 1, "up": 1, "down": 1, "rated": 2}
    assert s["top_documents"] == [{"source": "a.md", "title": "甲", "count": 2}, {"source": "b.md", "title": "乙", "count": 1}]


def test_logging_costs_the_question_microseconds(settings):
    """What a question waits for is the queueing only (target for the whole write: ≤ 2 ms);
    masking and SQLite happen on the writer thread. eval/convlog_overhead.py measures it end to end."""
    result = _result(f"我的手机号是{PHONE}，身份证号{ID_NUMBER}，网上买的衣服能退吗？")
    convlog.record(settings, result)
    times = []
    for _ in range(500):
        t0 = time.perf_counter()
        convlog.record(settings, result)
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.0002, statistics.median(times)
    assert sorted(times)[int(0.95 * len(times))] < 0.002
    assert convlog.for_settings(settings).flush(30)
    assert len(convlog.for_settings(settings).rows()) == 501
