"""The conversation log: every question asked in the web app or over the HTTP API, masked, in SQLite.

Why: the people who maintain the knowledge base need to see what shoppers ask,
which questions were refused or got 👎, and what was retrieved for them
(the operator's console, ``ui/console.py``, reads this log).

Why masked before storing: shoppers paste their phone number, ID-card number,
order number and address into questions. ``mask()`` replaces them with
``[手机号]``, ``[身份证号]``, ``[订单号]``, ``[地址]`` (and e-mail addresses with
``[邮箱]``) before anything reaches the file; only the masked text is ever written.

Why a writer thread: a question must not wait for the disk. ``record()`` only
appends a small tuple to a deque (a few microseconds, no lock, no thread woken);
one thread per log file wakes every ``WRITE_EVERY_S``, masks, inserts the batch
and commits. ``flush()`` wakes it and waits (exports, the console, tests).

Where: ``<index_dir>/conversations.sqlite3`` by default (``Settings.convlog_file``),
so each knowledge base keeps its own log; rebuilds only touch ``v-*`` folders.
Rows older than ``Settings.convlog_retention_days`` are deleted when the writer
starts and hourly; ``Settings.convlog = False`` (``RAG_CONVLOG=0``) switches
logging off (reading what is there still works).
"""
from __future__ import annotations

import atexit
import csv
import io
import json
import logging
from collections import deque
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from .config import Settings

log = logging.getLogger(__name__)

DB_NAME = "conversations.sqlite3"
CHANNELS = ("web", "api")
EXPORT_COLUMNS = ("id", "created", "channel", "question", "answer_summary", "refused", "confidence",
                  "feedback", "citations", "retrieved", "index_version", "mode", "k", "latency_ms")
SUMMARY_CHARS = 200
RETRIEVED_KEPT = 5
PURGE_EVERY_S = 3600
WRITE_EVERY_S = 0.25

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    uid TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    created TEXT NOT NULL,
    channel TEXT NOT NULL,
    question TEXT NOT NULL,
    answer_summary TEXT NOT NULL DEFAULT '',
    refused INTEGER NOT NULL DEFAULT 0,
    confidence REAL,
    citations TEXT NOT NULL DEFAULT '[]',
    retrieved TEXT NOT NULL DEFAULT '[]',
    index_version TEXT,
    mode TEXT,
    k INTEGER,
    latency_ms REAL,
    feedback TEXT CHECK (feedback IS NULL OR feedback IN ('up', 'down')),
    feedback_ts REAL
);
CREATE INDEX IF NOT EXISTS conversations_ts ON conversations (ts);
"""

# --------------------------------------------------------------------------- masking

_D = r"[0-9０-９]"
_NOT_ALNUM_BEFORE = r"(?<![0-9０-９A-Za-z])"
_NOT_ALNUM_AFTER = r"(?![0-9０-９A-Za-z])"
_SEP = r"[ \u3000\-－—]?"

# 18-character resident ID: 6-digit region, birth date 18xx–20xx, 3-digit sequence, check digit or X;
# also written in groups (6 8 4) with spaces or dashes; and the old 15-digit form (2-digit year).
_ID18 = re.compile(
    _NOT_ALNUM_BEFORE
    + rf"[1-9]{_D}{{5}}{_SEP}(?:18|19|20){_D}{{2}}(?:0[1-9]|1[0-2]){_SEP}?(?:0[1-9]|[12]{_D}|3[01]){_SEP}{_D}{{3}}[0-9０-９Xx×ｘＸ]"
    + _NOT_ALNUM_AFTER)
_ID15 = re.compile(_NOT_ALNUM_BEFORE + rf"[1-9]{_D}{{7}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]{_D}|3[01]){_D}{{3}}"
                   + _NOT_ALNUM_AFTER)
# Mainland mobile: 1[3-9]x xxxx xxxx, optionally +86 / 0086 / 86 first, spaces or dashes between groups
# (3-4-4 or run together); landlines: 0 + 2–3-digit area code, separator optional, 7–8 digits.
_MOBILE = re.compile(
    _NOT_ALNUM_BEFORE
    + rf"(?:(?:\+|＋|00)?86[ \u3000\-－]?|[(（](?:\+|＋)?86[)）][ \u3000]?)?1[3-9]{_D}{_SEP}{_D}{{4}}{_SEP}{_D}{{4}}"
    + _NOT_ALNUM_AFTER)
_LANDLINE = re.compile(
    _NOT_ALNUM_BEFORE + rf"(?:[(（]0{_D}{{2,3}}[)）][ \u3000]?|0{_D}{{2,3}}[ \u3000\-－]?){_D}{{7,8}}"
    + rf"(?:[ \u3000]?(?:转|-|－)[ \u3000]?{_D}{{1,5}})?" + _NOT_ALNUM_AFTER)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+")
# Order, waybill and payment numbers: after a cue word (订单号 123…, 快递单号：SF…), any run of 6+ letters
# and digits; elsewhere a run of 10+ digits (optionally with a carrier's letter prefix, or grouped by
# dashes like 230512-123456789012) is an order or waybill number rather than anything a question needs.
_ORDER_CUE = re.compile(
    r"((?:订单|子订单|运单|快递单|物流单|包裹|交易|支付|退款|售后|工单|服务单)(?:编号|单号|号码|号|ID|id)"
    r"|单号|订单)\s*(?:是|为|[:：#＃])?\s*([A-Za-z0-9０-９\-－]{6,40})")
_ORDER = re.compile(_NOT_ALNUM_BEFORE + rf"(?:[A-Za-z]{{1,4}}{_D}{{8,}}|{_D}{{10,}}|{_D}{{4,8}}[\-－]{_D}{{6,}})"
                    + _NOT_ALNUM_AFTER)
# Addresses. A Chinese place name is any run of Chinese characters, so a name must not swallow the
# words before it ("我住在…", "寄到…"): these characters never start a place name here.
_CJK = r"[\u4e00-\u9fff]"
_NAME = r"(?:(?![我你他她它们在的了是从到住寄送把给和与及或买卖收发往至于将被让请帮要想能会说问找去来这那哪就都也还但却很太吗呢吧啊])" + _CJK + ")"
_NUM = r"[0-9０-９一二三四五六七八九十百零〇两]"
_ADMIN = (rf"(?:{_NAME}{{2,8}}?(?:省|自治区|特别行政区))?(?:{_NAME}{{1,8}}?(?:市|自治州|地区|盟))?"
          rf"(?:{_NAME}{{1,8}}?(?:区|县|旗))?(?:{_NAME}{{1,8}}?(?:镇|乡|街道))?")
_ROAD = rf"{_NAME}{{1,12}}?(?:大道|大街|路|街|巷|弄|胡同|道)(?:[东西南北中]段)?[ \u3000]*{_NUM}+(?:[\-－]{_NUM}+)?[ \u3000]*号(?!码)"
_PLACE = rf"{_NAME}{{1,10}}?(?:小区|花园|公寓|大厦|家园|新村|社区|广场|苑|村|城)"
_UNIT = r"[ \u3000]*[0-9０-９A-Za-z一二三四五六七八九十]+[ \u3000]*(?:号楼|号院|栋|幢|座|单元|层|楼|室|户|号|组)"
_ADDRESS = re.compile(
    rf"{_ADMIN}{_ROAD}(?:{_PLACE})?(?:{_UNIT})*"  # …路88号 (+ 小区 + 5栋1203室)
    rf"|{_ADMIN}{_PLACE}(?:{_UNIT})+"  # …小区3栋502
    rf"|(?:{_NAME}{{2,8}}?(?:省|自治区))?{_NAME}{{1,8}}?(?:市|自治州){_NAME}{{1,8}}?(?:区|县|旗)"  # 杭州市西湖区
    rf"(?:{_NAME}{{1,8}}?(?:镇|乡|街道))?")
# After 地址/住址/寄到/送到/住在: the rest of the clause is an address when it names a place or a number.
_ADDRESS_CUE = re.compile(r"(收货地址|收件地址|家庭住址|地址|住址|寄到|送到|寄往|住在|家住)(是|为|[:：])?\s*([^，。；！？,.;!?\n]{3,60})")
_ADDRESS_HINT = re.compile(rf"{_NUM}|省|市|区|县|镇|乡|村|路|街|巷|弄|号|楼|室|栋|幢|单元|小区|大厦|公寓|花园")

PHONE, LANDLINE, ID_CARD, ORDER, ADDRESS, EMAIL = "[手机号]", "[电话]", "[身份证号]", "[订单号]", "[地址]", "[邮箱]"


def mask(text: str) -> str:
    """``text`` with phone, ID-card and order numbers, e-mail addresses and postal addresses replaced
    by ``[手机号]`` (landlines ``[电话]``), ``[身份证号]``, ``[订单号]``, ``[邮箱]``, ``[地址]``. ID numbers go first (an 18-digit ID
    would otherwise read as an order number), then phones, e-mail, cue-marked order numbers, long
    digit runs, and addresses."""
    if not text:
        return text or ""
    t = _ID18.sub(ID_CARD, text)
    t = _ID15.sub(ID_CARD, t)
    t = _EMAIL.sub(EMAIL, t)
    t = _MOBILE.sub(PHONE, t)
    t = _LANDLINE.sub(LANDLINE, t)
    t = _ORDER_CUE.sub(lambda m: m.group(0)[:m.start(2) - m.start(0)] + ORDER, t)
    t = _ORDER.sub(ORDER, t)
    t = _ADDRESS_CUE.sub(_cue_address, t)
    t = _ADDRESS.sub(ADDRESS, t)
    return t


def _cue_address(m: re.Match) -> str:
    rest = m.group(3)
    if not _ADDRESS_HINT.search(rest) or rest.strip() in (PHONE, LANDLINE, ORDER, ADDRESS):
        return m.group(0)
    return m.group(1) + (m.group(2) or "") + ADDRESS


# --------------------------------------------------------------------------- the log


def db_path(settings: Settings) -> Path:
    return Path(settings.convlog_file) if settings.convlog_file else Path(settings.index_dir) / DB_NAME


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


def _passages(items, keep: int | None = None) -> list[dict]:
    """What identifies a passage (not its text, which the index has): n, source, title, section, kind, score."""
    out = []
    for p in (items or [])[:keep]:
        if isinstance(p, dict):
            d = {k: p.get(k) for k in ("n", "source", "title", "section", "kind") if k in p}
            if isinstance(p.get("score"), (int, float)):
                d["score"] = round(float(p["score"]), 4)
            out.append(d)
    return out


def answer_summary(result: dict) -> str:
    """The 要点 sentence when the answer has one, otherwise its first line; at most SUMMARY_CHARS."""
    key = ((result.get("sections") or {}).get("key_point") or {}).get("text") if isinstance(
        result.get("sections"), dict) else None
    text = key or next((ln for ln in str(result.get("answer") or "").splitlines() if ln.strip()), "")
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS - 1] + "…"


class ConversationLog:
    """One log file: ``record`` / ``feedback`` leave writes for the writer thread; the readers open
    their own connection (WAL: reading never blocks the writer)."""

    def __init__(self, path: Path, retention_days: int = 90, enabled: bool = True):
        self.path = Path(path)
        self.retention_days = int(retention_days)
        self.enabled = enabled
        self._items: deque = deque()  # append/popleft are atomic: the hot path takes no lock
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._last_purge = 0.0
        self.dropped = 0

    # -- writing (hot path: no I/O, no regexes) ------------------------------------------------
    def record(self, result: dict, channel: str = "web", mode: str | None = None, k: int | None = None) -> str | None:
        """Queue one answered question; returns its log id (for 👍/👎 later), or None when logging is off."""
        if not self.enabled or not isinstance(result, dict):
            return None
        uid = uuid.uuid4().hex
        self._ensure_writer()
        self._items.append(("ask", uid, time.time(), channel, result.get("question"), result, mode, k))
        return uid

    def feedback(self, uid: str | None, rating: str) -> None:
        """Attach 👍 ("up") or 👎 ("down") to a logged question."""
        if not self.enabled or not uid or rating not in ("up", "down"):
            return
        self._ensure_writer()
        self._items.append(("feedback", uid, time.time(), rating))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is in the file."""
        if self._thread is None:
            return True
        done = threading.Event()
        self._items.append(("flush", done))
        self._wake.set()
        return done.wait(timeout)

    def _ensure_writer(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"convlog-{self.path.name}", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        conn = None
        while True:
            self._wake.wait(WRITE_EVERY_S)
            self._wake.clear()
            items = []
            while self._items and len(items) < 2000:  # one transaction for whatever has come in
                items.append(self._items.popleft())
            if not items:
                continue
            if self._items:
                self._wake.set()  # more than one batch waiting: go round again at once
            flushes = [it[1] for it in items if it[0] == "flush"]
            try:
                if conn is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    conn = _connect(self.path)
                self._write(conn, [it for it in items if it[0] != "flush"])
                if time.time() - self._last_purge > PURGE_EVERY_S:
                    self._purge(conn)
            except Exception:
                self.dropped += sum(1 for it in items if it[0] == "ask")
                log.exception("conversation log: could not write %d item(s) to %s", len(items), self.path)
                if conn is not None:
                    conn.close()
                conn = None
            for ev in flushes:
                ev.set()

    def _write(self, conn: sqlite3.Connection, items: list) -> None:
        if not items:
            return
        with conn:
            for it in items:
                if it[0] == "ask":
                    _, uid, ts, channel, question, r, mode, k = it
                    total = (r.get("timings_ms") or {}).get("total") if isinstance(r.get("timings_ms"), dict) else None
                    conn.execute(
                        "INSERT OR IGNORE INTO conversations (uid, ts, created, channel, question, answer_summary,"
                        " refused, confidence, citations, retrieved, index_version, mode, k, latency_ms)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (uid, ts, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts)), channel,
                         mask(str(question or "")), mask(answer_summary(r)), int(bool(r.get("refused"))),
                         r.get("confidence"),
                         json.dumps(_passages(r.get("citations")), ensure_ascii=False),
                         json.dumps(_passages(r.get("retrieved"), RETRIEVED_KEPT), ensure_ascii=False),
                         r.get("index_version"), mode, k, total))
                elif it[0] == "feedback":
                    _, uid, ts, rating = it
                    conn.execute("UPDATE conversations SET feedback = ?, feedback_ts = ? WHERE uid = ?",
                                 (rating, ts, uid))

    def _purge(self, conn: sqlite3.Connection) -> int:
        self._last_purge = time.time()
        if self.retention_days <= 0:
            return 0
        with conn:
            cur = conn.execute("DELETE FROM conversations WHERE ts < ?", (time.time() - self.retention_days * 86400,))
        if cur.rowcount:
            log.info("conversation log: %d entries older than %d days deleted", cur.rowcount, self.retention_days)
        return cur.rowcount

    def purge(self) -> int:
        """Delete entries older than the retention now; returns how many."""
        self.flush()
        if not self.path.exists():
            return 0
        conn = _connect(self.path)
        try:
            return self._purge(conn)
        finally:
            conn.close()

    # -- reading ------------------------------------------------------------------------------
    def rows(self, days: float | None = None, unresolved: bool = False, search: str = "",
             limit: int | None = None, newest_first: bool = True) -> list[dict]:
        """Logged questions (masked), newest first; ``unresolved``: refused or 👎 only."""
        self.flush()
        if not self.path.exists():
            return []
        where, args = ["1=1"], []
        cutoff = time.time() - self.retention_days * 86400 if self.retention_days > 0 else None
        if days:
            cutoff = max(cutoff or 0, time.time() - float(days) * 86400)
        if cutoff is not None:
            where.append("ts >= ?")
            args.append(cutoff)
        if unresolved:
            where.append("(refused = 1 OR feedback = 'down')")
        if search:
            where.append("(question LIKE ? OR answer_summary LIKE ?)")
            args += [f"%{search}%", f"%{search}%"]
        sql = (f"SELECT rowid, * FROM conversations WHERE {' AND '.join(where)} ORDER BY ts "
               f"{'DESC' if newest_first else 'ASC'}" + (f" LIMIT {int(limit)}" if limit else ""))
        conn = _connect(self.path)
        try:
            conn.row_factory = sqlite3.Row
            out = [dict(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()
        for r in out:
            r["id"] = r.pop("rowid")
            for key in ("citations", "retrieved"):
                try:
                    r[key] = json.loads(r[key])
                except (TypeError, ValueError):
                    r[key] = []
            r["refused"] = bool(r["refused"])
        return out

    def get(self, uid: str) -> dict | None:
        self.flush()
        if not self.path.exists():
            return None
        conn = _connect(self.path)
        try:
            row = conn.execute("SELECT rowid FROM conversations WHERE uid = ?", (uid,)).fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        return next((r for r in self.rows() if r["uid"] == uid), None)

    def export(self, fmt: str = "jsonl", days: float | None = None) -> str:
        """Every entry (oldest first) as JSON lines or CSV (UTF-8 with BOM-less header row)."""
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown export format {fmt!r} (jsonl or csv)")
        data = self.rows(days=days, newest_first=False)
        if fmt == "jsonl":
            return "".join(json.dumps({c: r.get(c) for c in EXPORT_COLUMNS}, ensure_ascii=False) + "\n" for r in data)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(EXPORT_COLUMNS)
        for r in data:
            w.writerow([json.dumps(r.get(c), ensure_ascii=False) if c in ("citations", "retrieved")
                        else ("" if r.get(c) is None else r.get(c)) for c in EXPORT_COLUMNS])
        return buf.getvalue()

    def close(self) -> None:
        self.flush()


def daily_stats(rows: list[dict], top: int = 10) -> dict:
    """Per day (questions, refused, 👍, 👎), totals, and the most cited documents, from log rows."""
    from collections import Counter

    days: dict[str, dict] = {}
    cited: Counter = Counter()
    titles: dict[str, str] = {}
    for r in rows:
        d = str(r.get("created") or "")[:10]
        day = days.setdefault(d, {"date": d, "questions": 0, "refused": 0, "up": 0, "down": 0})
        day["questions"] += 1
        day["refused"] += int(bool(r.get("refused")))
        if r.get("feedback") in ("up", "down"):
            day[r["feedback"]] += 1
        for src in dict.fromkeys(c.get("source", "") for c in r.get("citations") or []):
            if src:
                cited[src] += 1
        for c in r.get("citations") or []:
            titles.setdefault(c.get("source", ""), c.get("title") or c.get("source", ""))
    ordered = [days[d] for d in sorted(days)]
    totals = {k: sum(d[k] for d in ordered) for k in ("questions", "refused", "up", "down")}
    totals["rated"] = totals["up"] + totals["down"]
    return {"days": ordered, "totals": totals,
            "top_documents": [{"source": s, "title": titles.get(s, s), "count": n} for s, n in cited.most_common(top)]}


_LOGS: dict[Path, ConversationLog] = {}
_LOGS_LOCK = threading.Lock()


_BY_SETTING: dict[tuple, ConversationLog] = {}


def for_settings(settings: Settings) -> ConversationLog:
    """The log for ``settings`` (one per file and process: one writer thread each)."""
    key = (settings.convlog_file, settings.index_dir, settings.convlog, settings.convlog_retention_days)
    log_ = _BY_SETTING.get(key)  # the hot path: no filesystem call (resolve() costs ~0.1 ms)
    if log_ is not None:
        return log_
    path = db_path(settings).expanduser().resolve()
    with _LOGS_LOCK:
        log_ = _LOGS.get(path)
        if log_ is None:
            log_ = _LOGS[path] = ConversationLog(path, settings.convlog_retention_days, settings.convlog)
        log_.enabled = settings.convlog
        log_.retention_days = int(settings.convlog_retention_days)
        _BY_SETTING[key] = log_
    return log_


def record(settings: Settings, result: dict, channel: str = "web", mode: str | None = None,
           k: int | None = None) -> str | None:
    """Log one answered question (never raises: logging must not break answering)."""
    if not settings.convlog:
        return None
    try:
        return for_settings(settings).record(result, channel, mode=mode, k=k)
    except Exception:
        log.exception("conversation log: could not queue a question")
        return None


def feedback(settings: Settings, uid: str | None, rating: str) -> None:
    try:
        for_settings(settings).feedback(uid, rating)
    except Exception:
        log.exception("conversation log: could not queue feedback")


@atexit.register
def _flush_all() -> None:
    for log_ in list(_LOGS.values()):
        try:
            log_.flush(timeout=5)
        except Exception:
            pass
