"""The operator's console (运营后台): what shoppers asked, what went unanswered, and fixing it in seconds.

Four pages under one tab, for administrators only:

- 对话记录: the conversation log (rag/convlog.py), masked, searchable, exported as CSV or JSONL;
- 未解决的问题: refused questions and 👎 answers grouped by meaning (rag/unresolved.py), worst first,
  with what was retrieved then and whether the question is answered now;
- 命中测试: dense, keyword and fused ranks and scores for a question under any configuration the
  evaluation knows (rag/hittest.py), the confidence against the refusal threshold and the answer;
  from here a question is annotated onto the passage that should answer it (rag/annotate.py);
- 统计: questions per day, refusal rate, 赞/踩 (👍/👎), most cited documents.

Roles: the console uses the knowledge-base tab's login (the same server-side session state,
``App.is_admin``). Every handler checks it before reading the log or touching the corpus, and
every event is private (not offered to Gradio's API clients); a script calling the queue
without logging in gets the login notice and empty tables, never data.

Everything shown from the log or a document is escaped (``ui.render.esc``): questions are
shoppers' text and documents may be uploads.
"""
from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr

from rag import annotate, convlog
from rag.labels import section_label

from .render import answer_html, esc, kind_badge, notice_html

log = logging.getLogger("ui.console")

NEED_LOGIN = "运营后台需要管理员登录：请先在“知识库”页输入管理员密码。"
DAYS = [("最近 7 天", 7), ("最近 30 天", 30), ("最近 90 天", 90), ("全部（保留期内）", 0)]
MODES = [("按配置", ""), ("混合检索", "hybrid"), ("向量检索", "dense"), ("关键词检索", "keyword")]
CONFIG_LABELS = {
    "keyword": "只用关键词（keyword）",
    "dense": "只用向量（dense）",
    "hybrid": "混合，不扩展词、不用典型问题（hybrid）",
    "hybrid+lexicon": "混合 + 词表扩展（hybrid+lexicon）",
    "hybrid+lexicon+tq-separate": "混合 + 词表 + 典型问题单独成列（hybrid+lexicon+tq-separate）",
    "hybrid+lexicon+tq (default)": "默认：混合 + 词表 + 典型问题（hybrid+lexicon+tq）",
}
MODE_LABELS = {"hybrid": "混合检索", "dense": "向量检索", "keyword": "关键词检索"}
LOG_COLUMNS = ["编号", "时间", "渠道", "问题（已脱敏）", "回答摘要", "置信度", "拒答", "反馈", "引用"]
CHANNEL = {"web": "网页", "api": "API"}
FEEDBACK = {"up": "赞", "down": "踩"}
LOG_ROWS = 300
GROUPS_SHOWN = 30
RECHECK = 15  # groups whose representative question is asked again ("现在") on each refresh

CSS = """
.console-bar { align-items: flex-end !important; }
.console-bar > button { max-height: 3.2em; }
#console-body .console-note { color: #52525b; font-size: .9em; }
.hit-summary { border: 1px solid #e4e4e7; border-radius: 8px; padding: .6em .8em; line-height: 1.7; }
.hit-summary .verdict-ok { color: #166534; font-weight: 700; }
.hit-summary .verdict-refuse { color: #9a3412; font-weight: 700; }
.hit-summary .bar { position: relative; height: 10px; background: #f4f4f5; border-radius: 5px; margin: .3em 0 .5em; }
.hit-summary .bar .fill { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 5px; background: #2563eb; }
.hit-summary .bar .fill.low { background: #ea580c; }
.hit-summary .bar .mark { position: absolute; top: -3px; bottom: -3px; width: 2px; background: #18181b; }
.hit-summary .tok { display: inline-block; background: #f4f4f5; border-radius: 4px; padding: 0 .35em; margin: 0 .15em .15em 0;
    font-size: .85em; }
table.console-table { border-collapse: collapse; width: 100%; font-size: .88em; }
table.console-table th, table.console-table td { border-bottom: 1px solid #e4e4e7; padding: .3em .45em; text-align: left;
    vertical-align: top; }
table.console-table th { background: #fafafa; font-weight: 600; white-space: nowrap; }
table.console-table td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.console-table tr.in-answer td { background: #eff6ff; }
table.console-table .muted { color: #a1a1aa; }
table.console-table .snippet { color: #52525b; font-size: .92em; }
table.console-table .tq { color: #166534; }
.unresolved .grp-q { font-weight: 600; }
.unresolved .now-ok { color: #166534; font-weight: 600; }
.unresolved .now-bad { color: #9a3412; font-weight: 600; }
.unresolved details summary { cursor: pointer; color: #1d4ed8; }
.stats-cards { display: flex; gap: .8em; flex-wrap: wrap; }
.stats-cards .card { border: 1px solid #e4e4e7; border-radius: 8px; padding: .5em .9em; min-width: 8em; }
.stats-cards .card .v { font-size: 1.5em; font-weight: 700; }
.stats-cards .card .l { color: #71717a; font-size: .85em; }
"""


def _note(text: str, cls: str = "plain") -> str:
    return notice_html(text, cls)


class Console:
    """The console's handlers; ``app`` is the web app's ``ui.app.App`` (settings, login, assistant)."""

    def __init__(self, app):
        self.app = app
        self.settings = app.settings
        self._lock = threading.Lock()
        self._tester = None
        self._grouper = None
        self._export_dir: Path | None = None

    # -- shared -----------------------------------------------------------------------------
    def allowed(self, session) -> bool:
        return self.app.is_admin(session)

    @property
    def log(self) -> convlog.ConversationLog:
        return convlog.for_settings(self.settings)

    def tester(self):
        from rag.hittest import HitTester

        a = self.app.assistant()
        with self._lock:
            if self._tester is None or self._tester.assistant is not a:
                self._tester = HitTester(a)
            return self._tester

    def grouper(self):
        from rag.unresolved import Grouper

        a = self.app.assistant()
        with self._lock:
            if self._grouper is None or self._grouper.embedder is not a.embedder:
                self._grouper = Grouper(a.embedder)
            return self._grouper

    def view(self, session):
        """Login notice or console body, by the session's login; with the log page's data."""
        ok = self.allowed(session)
        return (gr.update(visible=not ok), gr.update(visible=ok), *self.log_view("", False, 30, session))

    # -- 对话记录 -----------------------------------------------------------------------------
    def log_view(self, search, only_unresolved, days, session):
        if not self.allowed(session):
            return gr.update(value=[]), gr.update(choices=[], value=None), _note(NEED_LOGIN, "bad")
        rows = self.log.rows(days=float(days or 0) or None, unresolved=bool(only_unresolved),
                             search=(search or "").strip(), limit=LOG_ROWS)
        table = [[r["id"], str(r["created"]).replace("T", " "), CHANNEL.get(r["channel"], r["channel"]), r["question"],
                  r["answer_summary"], "" if r["confidence"] is None else round(float(r["confidence"]), 2),
                  "是" if r["refused"] else "", FEEDBACK.get(r["feedback"] or "", ""),
                  "；".join(f"《{c.get('title', '')}》{section_label(c.get('section', ''))}" for c in r["citations"])]
                 for r in rows]
        choices = [(f"{r['id']} · {r['question'][:40]}", r["uid"]) for r in rows]
        state = "开启" if self.settings.convlog else "已关闭（RAG_CONVLOG=0），不再记录新的提问"
        summary = (f"共 {len(rows)} 条{'（只显示最近 %d 条）' % LOG_ROWS if len(rows) >= LOG_ROWS else ''}。"
                   f"记录：{state}；保留 {self.settings.convlog_retention_days} 天；手机号、身份证号、订单号和地址在保存前已脱敏。")
        return gr.update(value=table), gr.update(choices=choices, value=None), _note(summary)

    def log_export(self, fmt, days, session):
        if not self.allowed(session):
            return gr.update(value=None, visible=False), _note(NEED_LOGIN, "bad")
        fmt = fmt if fmt in ("csv", "jsonl") else "csv"
        text = self.log.export(fmt, days=float(days or 0) or None)
        if self._export_dir is None:
            self._export_dir = Path(tempfile.mkdtemp(prefix="rag-convlog-export-"))
        for old in self._export_dir.iterdir():
            old.unlink(missing_ok=True)
        path = self._export_dir / f"conversations-{time.strftime('%Y%m%d-%H%M%S')}.{fmt}"
        # CSV with a BOM so that Excel opens the Chinese text as UTF-8
        path.write_text(("\ufeff" if fmt == "csv" else "") + text, encoding="utf-8")
        n = max(0, text.count("\n") - (1 if fmt == "csv" else 0))
        return (gr.update(value=str(path), visible=True, label=f"下载 {path.name}"),
                _note(f"已导出 {n} 条记录，点击下载。", "ok"))

    def log_to_test(self, uid, session):
        """The picked log entry's question, sent to the 命中测试 page."""
        if not self.allowed(session):
            return gr.update(), gr.update(), gr.update(), _note(NEED_LOGIN, "bad")
        entry = self.log.get(uid) if uid else None
        if entry is None:
            return gr.update(), gr.update(), gr.update(), _note("请先在列表中选择一条记录。", "bad")
        return gr.Tabs(selected="hittest"), entry["question"], entry["question"], ""

    # -- 未解决的问题 -------------------------------------------------------------------------
    def unresolved_view(self, days, threshold, session):
        if not self.allowed(session):
            return _note(NEED_LOGIN, "bad"), gr.update(choices=[], value=None)
        rows = self.log.rows(days=float(days or 0) or None, unresolved=True)
        if not rows:
            return _note("这段时间没有被拒答或被踩的问题。", "ok"), gr.update(choices=[], value=None)
        groups = self.grouper().group(rows, float(threshold or 0.92))[:GROUPS_SHOWN]
        now = self._recheck([g.question for g in groups[:RECHECK]])
        return (self._unresolved_html(groups, now, len(rows)),
                gr.update(choices=[(f"{i}. {g.question[:40]}（{g.count} 次）", g.question)
                                   for i, g in enumerate(groups, 1)], value=None))

    def _recheck(self, questions: list[str]) -> dict[str, dict]:
        """Each question asked again now (not logged): is it still refused, what would be cited."""
        out = {}
        try:
            a = self.app.assistant()
        except Exception:
            return out
        for q in questions:
            try:
                out[q] = a.ask(q)
            except Exception:
                log.exception("re-checking %r failed", q)
        return out

    @staticmethod
    def _unresolved_html(groups, now: dict, total: int) -> str:
        head = ("<tr><th>#</th><th>问题（同义的合在一起）</th><th>次数</th><th>拒答 / 踩</th><th>首次 / 最近</th>"
                "<th>当时检索到的</th><th>现在</th></tr>")
        body = []
        for i, g in enumerate(groups, 1):
            others = [f"{esc(q)}（{n}）" for q, n in g.questions[1:]]
            variants = (f"<details><summary>另有 {len(others)} 种问法</summary>{'<br>'.join(others)}</details>"
                        if others else "")
            got = "<br>".join(f"《{esc(t)}》{esc(section_label(sec))} <span class='muted'>×{n}</span>"
                              for _, sec, t, n in g.retrieved) or "<span class='muted'>（无）</span>"
            r = now.get(g.question)
            if r is None:
                state = "<span class='muted'>—</span>"
            elif r.get("refused"):
                state = f"<span class='now-bad'>仍然拒答</span><br><span class='muted'>置信度 {r['confidence']:.2f}</span>"
            else:
                cited = "、".join(f"《{esc(c['title'])}》{esc(section_label(c['section']))}" for c in r["citations"][:2])
                state = f"<span class='now-ok'>已能回答</span><br><span class='muted'>{cited}</span>"
            body.append(f"<tr><td class='num'>{i}</td><td><span class='grp-q'>{esc(g.question)}</span>{variants}</td>"
                        f"<td class='num'>{g.count}</td><td class='num'>{g.refused} / {g.down}</td>"
                        f"<td>{esc(g.first.replace('T', ' '))}<br>{esc(g.last.replace('T', ' '))}</td>"
                        f"<td>{got}</td><td>{state}</td></tr>")
        intro = (f"<p class='console-note'>共 {total} 次提问被拒答或被踩，归并为 {len(groups)} 组，按次数从多到少排列。"
                 "“现在”一栏是用当前索引重新回答的结果。选择一组后点“去标注”，把它标注到应当回答它的条文。</p>")
        return (f"<div class='unresolved'>{intro}<table class='console-table'><thead>{head}</thead>"
                f"<tbody>{''.join(body)}</tbody></table></div>")

    def unresolved_to_test(self, question, session):
        if not self.allowed(session):
            return gr.update(), gr.update(), gr.update(), _note(NEED_LOGIN, "bad")
        if not question:
            return gr.update(), gr.update(), gr.update(), _note("请先选择一组问题。", "bad")
        return gr.Tabs(selected="hittest"), question, question, ""

    # -- 命中测试 -----------------------------------------------------------------------------
    def hit_run(self, question, config, mode, k, session):
        """(summary, answer, fused table, dense+keyword lists, annotation target choices, annotation question)."""
        empty = ("", "", "", gr.update(choices=[], value=None), gr.update())
        if not self.allowed(session):
            return (_note(NEED_LOGIN, "bad"), *empty)
        from rag.pipeline import QuestionError

        try:
            e = self.tester().explain(question, config or None, mode or None, int(k or self.settings.top_k))
        except (QuestionError, ValueError) as err:
            return (_note(str(err), "bad"), *empty)
        except Exception:
            log.exception("hit test failed for %r", question)
            return (_note("命中测试没能完成，详细原因已记录在服务器日志中。", "bad"), *empty)
        choices = []
        for r in e.fused:
            value = json.dumps([r.source, r.section], ensure_ascii=False)
            if value not in [v for _, v in choices]:
                choices.append((_target_label(r.title, r.section, r.source, r.fused_rank), value))
        answer = answer_html(e.result, "hit", show_scores=True)
        return (self._summary_html(e), answer, self._fused_html(e), self._lists_html(e),
                gr.update(choices=choices, value=choices[0][1] if choices else None), e.question)

    @staticmethod
    def _summary_html(e) -> str:
        pct = max(0.0, min(1.0, e.confidence)) * 100
        verdict = ("<span class='verdict-refuse'>会拒答</span>（置信度低于阈值，回答“资料中没有找到……”并列出最接近的资料）"
                   if e.refused else "<span class='verdict-ok'>会回答</span>")
        over = ", ".join(f"{k}={v}" for k, v in e.overrides.items()) or "默认设置"
        toks = "".join(f"<span class='tok'>{esc(t)}</span>" for t in e.tokens[:40])
        t = e.timings_ms
        return (f"<div class='hit-summary'><div>置信度 <b>{e.confidence:.3f}</b>，拒答阈值 <b>{e.threshold:.2f}</b>：{verdict}</div>"
                f"<div class='bar'><div class='fill{' low' if e.confidence < e.threshold else ''}' style='width:{pct:.1f}%'></div>"
                f"<div class='mark' style='left:{e.threshold * 100:.1f}%'></div></div>"
                f"<div>配置：{esc(CONFIG_LABELS.get(e.config, e.config))}（{esc(over)}）；"
                f"检索方式：{esc(MODE_LABELS.get(e.mode, e.mode))}；k = {e.k}</div>"
                f"<div>检索用的词：{toks or '<span class=muted>（无）</span>'}</div>"
                f"<div class='muted'>向量 {t.get('embed', 0)} ms，检索 {t.get('retrieve', 0)} ms，"
                f"回答 {t.get('answer', 0)} ms</div></div>")

    @staticmethod
    def _cell(v, fmt="{:.3f}") -> str:
        return "<span class='muted'>—</span>" if v is None else fmt.format(v)

    def _fused_html(self, e) -> str:
        head = ("<tr><th>融合排名</th><th>融合得分</th><th>向量排名</th><th>段落相似度</th><th>典型问题相似度</th>"
                "<th>匹配的典型问题</th><th>关键词排名</th><th>BM25</th><th>段落</th></tr>")
        rows = []
        for r in e.fused:
            in_answer = r.fused_rank is not None and r.fused_rank <= e.k
            rows.append(
                f"<tr class='{'in-answer' if in_answer else ''}'><td class='num'>{r.fused_rank}</td>"
                f"<td class='num'>{r.fused:.4f}</td><td class='num'>{self._cell(r.dense_rank, '{}')}</td>"
                f"<td class='num'>{self._cell(r.dense)}</td><td class='num'>{self._cell(r.question_cos)}</td>"
                f"<td class='tq'>{esc(r.matched_question) if r.matched_question else '<span class=muted>—</span>'}</td>"
                f"<td class='num'>{self._cell(r.keyword_rank, '{}')}</td><td class='num'>{r.keyword:.2f}</td>"
                f"<td>{_passage_cell(r)}</td></tr>")
        return (f"<p class='console-note'>融合列表（倒数排名融合；蓝底 = 用于回答的前 k 个）。向量相似度取段落与其典型问题中较高者参与排名。</p>"
                f"<table class='console-table' id='hit-fused-table'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>")

    def _lists_html(self, e) -> str:
        def table(rows, title, score_head, score, rank_of):
            if not rows:
                return f"<h4>{title}</h4><p class='muted'>（这个检索方式不使用这一路）</p>"
            body = "".join(
                f"<tr><td class='num'>{rank_of(r)}</td><td class='num'>{score(r)}</td>"
                f"<td class='num'>{self._cell(r.fused_rank, '{}')}</td><td>{_passage_cell(r, snippet=False)}</td></tr>"
                for r in rows)
            return (f"<h4>{title}</h4><table class='console-table'><thead><tr><th>排名</th><th>{score_head}</th>"
                    f"<th>融合排名</th><th>段落</th></tr></thead><tbody>{body}</tbody></table>")

        dense = table(e.dense, "向量检索（前 10）", "相似度",
                      lambda r: self._cell(max(x for x in (r.dense, r.question_cos) if x is not None)
                                           if (r.dense is not None or r.question_cos is not None) else None),
                      lambda r: r.dense_rank)
        keyword = table(e.keyword, "关键词检索（前 10）", "BM25", lambda r: f"{r.keyword:.2f}", lambda r: r.keyword_rank)
        return (f"<div style='display:flex;gap:1.2em;flex-wrap:wrap'><div style='flex:1;min-width:320px'>{dense}</div>"
                f"<div style='flex:1;min-width:320px'>{keyword}</div></div>")

    def passage_search(self, text, session):
        if not self.allowed(session):
            return gr.update(choices=[], value=None), _note(NEED_LOGIN, "bad")
        from rag.hittest import search_passages

        try:
            found = search_passages(self.app.assistant().index, text)
        except Exception:
            log.exception("passage search failed")
            return gr.update(), _note("搜索没能完成。", "bad")
        if not found:
            return gr.update(), _note("没有找到匹配的条文或章节，换个词试试（例如“消费者权益保护法 第二十四条”）。", "bad")
        choices = [(_target_label(t, sec, src), json.dumps([src, sec], ensure_ascii=False)) for src, sec, t, _ in found]
        return gr.update(choices=choices, value=choices[0][1]), _note(f"找到 {len(found)} 处，请在下拉框中选择。", "ok")

    # -- 标注 -------------------------------------------------------------------------------
    def annotate(self, question, target, session):
        """Add the question as a typical question of the picked passage ([source, section] as JSON)."""
        return self._change(session, target, 2, "请先选择要标注到的条文或章节。", "标注",
                            lambda source, section: annotate.add(self.settings, source, section, question,
                                                                 assistant=self.app.assistant()))

    def unannotate(self, pick, session):
        """Remove the picked annotation ([source, section, question] as JSON)."""
        return self._change(session, pick, 3, "请先选择要移除的标注。", "移除",
                            lambda source, section, q: annotate.remove(self.settings, source, section, q,
                                                                       assistant=self.app.assistant()))

    def _change(self, session, picked, fields: int, missing: str, what: str, do):
        """(status, annotation choices, annotation list) after checking the login and running ``do``."""
        if not self.allowed(session):
            log.warning("%s refused: not logged in as administrator", what)
            return _note(NEED_LOGIN, "bad"), gr.update(choices=[], value=None), ""
        try:
            parts = json.loads(picked) if picked else None
        except (TypeError, ValueError):
            parts = None
        if not isinstance(parts, list) or len(parts) != fields or not parts[0]:
            return _note(missing, "bad"), gr.update(), self._annotations_html()
        try:
            out = do(*parts)
        except annotate.AnnotationError as e:
            return _note(str(e), "bad"), gr.update(), self._annotations_html()
        except Exception:
            log.exception("%s failed", what)
            return (_note(f"{what}没能完成，索引保持不变。详细原因已记录在服务器日志中。", "bad"), gr.update(),
                    self._annotations_html())
        return _note(out.message, "ok" if out.ok else "bad"), self._annotation_choices(), self._annotations_html()

    def annotations_view(self, session):
        if not self.allowed(session):
            return gr.update(choices=[], value=None), _note(NEED_LOGIN, "bad")
        return self._annotation_choices(), self._annotations_html()

    def _annotation_choices(self):
        items = annotate.list_annotations(self.settings)
        return gr.update(choices=[(f"{a.question} → {a.source} {section_label(a.section)}",
                                   json.dumps([a.source, a.section, a.question], ensure_ascii=False)) for a in items],
                         value=None)

    def _annotations_html(self) -> str:
        items = annotate.list_annotations(self.settings)
        if not items:
            return "<p class='console-note'>还没有从后台标注过的典型问题。</p>"
        rows = "".join(f"<tr><td>{esc(a.date)}</td><td>{esc(a.question)}</td><td>{esc(a.source)}</td>"
                       f"<td>{esc(section_label(a.section) or a.section)}</td></tr>" for a in items)
        return (f"<p class='console-note'>共 {len(items)} 条后台标注，保存在 corpus/typical_questions/ 中"
                f"（行尾注释“# {annotate.MARK}”），随知识库一起纳入版本管理。</p>"
                f"<table class='console-table' id='annotation-table'><thead><tr><th>日期</th><th>问题</th><th>文档</th>"
                f"<th>条文/章节</th></tr></thead><tbody>{rows}</tbody></table>")

    # -- 统计 -------------------------------------------------------------------------------
    def stats_view(self, days, session):
        import pandas as pd

        if not self.allowed(session):
            return (_note(NEED_LOGIN, "bad"), gr.update(value=None), gr.update(value=None),
                    gr.update(value=None), gr.update(value=None))
        window = float(days or 0) or None
        s = convlog.daily_stats(self.log.rows(days=window, newest_first=False))
        by_day = {d["date"]: d for d in s["days"]}
        dates = _date_range(window, list(by_day))
        zero = {"questions": 0, "refused": 0, "up": 0, "down": 0}
        per_day = pd.DataFrame({"日期": [d for d in dates for _ in (0, 1)],
                                "结果": [x for _ in dates for x in ("已回答", "拒答")],
                                "提问数": [x for d in dates for x in (
                                    by_day.get(d, zero)["questions"] - by_day.get(d, zero)["refused"],
                                    by_day.get(d, zero)["refused"])]})
        refusal = pd.DataFrame({"日期": dates, "拒答率（%）": [
            round(100 * by_day[d]["refused"] / by_day[d]["questions"], 1) if d in by_day and by_day[d]["questions"]
            else 0.0 for d in dates]})
        fb = pd.DataFrame({"日期": [d for d in dates for _ in (0, 1)], "反馈": [x for _ in dates for x in ("赞", "踩")],
                           "次数": [x for d in dates for x in (by_day.get(d, zero)["up"], by_day.get(d, zero)["down"])]})
        from rag.retrieve import short_title

        top = pd.DataFrame({"文档": [short_title(t["title"]) for t in s["top_documents"]],
                            "被引用次数": [t["count"] for t in s["top_documents"]]})
        t = s["totals"]
        rate = (lambda a, b: f"{100 * a / b:.0f}%" if b else "—")
        cards = [(t["questions"], "提问"), (rate(t["refused"], t["questions"]), "拒答率"),
                 (t["up"], "赞"), (t["down"], "踩"), (rate(t["up"], t["up"] + t["down"]), "好评率（赞 /（赞 + 踩））"),
                 (rate(t["rated"], t["questions"]), "有反馈的比例")]
        html = "<div class='stats-cards'>" + "".join(
            f"<div class='card'><div class='v'>{esc(v)}</div><div class='l'>{esc(label)}</div></div>"
            for v, label in cards) + "</div>"
        return html, per_day, refusal, fb, top


def _date_range(days: float | None, seen: list[str]) -> list[str]:
    """Every date of the window (or from the first logged day) up to today, as YYYY-MM-DD."""
    import datetime as dt

    today = dt.date.today()
    if days:
        first = today - dt.timedelta(days=int(days) - 1)
    else:
        first = min((dt.date.fromisoformat(d) for d in seen if d), default=today)
    first = min([first] + [dt.date.fromisoformat(d) for d in seen if d])
    n = (today - first).days + 1
    return [(first + dt.timedelta(days=i)).isoformat() for i in range(max(n, 1))]


def _target_label(title: str, section: str, source: str, rank: int | None = None) -> str:
    where = section_label(section) or section
    return (f"{rank}. " if rank else "") + f"《{title}》{where} — {source}"


def _passage_cell(r, snippet: bool = True) -> str:
    text = r.text.replace("\n", " ")
    short = text[:70] + ("…" if len(text) > 70 else "")
    return (f"《{esc(r.title)}》{esc(section_label(r.section))} {kind_badge(r.kind)}<br>"
            f"<span class='muted'>{esc(r.source)}</span>" + (f"<br><span class='snippet'>{esc(short)}</span>" if snippet else ""))


def add_console(app, admin_session: gr.State) -> Console:
    """The 运营后台 tab; call inside the app's ``gr.Tabs()``. ``admin_session`` is the knowledge-base
    tab's login state: logging in there opens the console too."""
    from rag.hittest import DEFAULT_CONFIG, configs

    c = Console(app)
    private = dict(api_visibility="private")
    with gr.Tab("运营后台", id="console", elem_id="tab-console") as console_tab:
        login_needed = gr.HTML(_note(NEED_LOGIN, "bad"), visible=app.admin_required, elem_id="console-login-needed")
        with gr.Column(visible=not app.admin_required, elem_id="console-body") as body:
            with gr.Tabs(elem_id="console-tabs") as tabs:
                with gr.Tab("对话记录", id="log", elem_id="tab-log") as log_tab:
                    with gr.Row(elem_classes=["console-bar"]):
                        log_search = gr.Textbox(label="搜索问题或回答", elem_id="log-search", scale=4, max_lines=1)
                        log_unresolved = gr.Checkbox(label="只看拒答和被踩的", elem_id="log-unresolved", scale=1)
                        log_days = gr.Dropdown(DAYS, value=30, label="时间范围", elem_id="log-days", scale=1)
                        log_refresh = gr.Button("刷新", elem_id="log-refresh", scale=1, min_width=80)
                    log_summary = gr.HTML(elem_id="log-summary", js_on_load=None)
                    log_table = gr.Dataframe(headers=LOG_COLUMNS, datatype=["number", "str", "str", "str", "str", "number",
                                                                          "str", "str", "str"],
                                             interactive=False, wrap=True, max_height=520, elem_id="log-table",
                                             column_widths=["5%", "11%", "5%", "24%", "27%", "6%", "4%", "4%", "14%"],
                                             show_search="search", label="对话记录（新的在前）")
                    with gr.Row(elem_classes=["console-bar"]):
                        log_pick = gr.Dropdown(choices=[], label="选择一条记录", elem_id="log-pick", scale=4,
                                               filterable=True)
                        log_to_test = gr.Button("在命中测试中查看并标注", elem_id="log-to-test", scale=2)
                    with gr.Row(elem_classes=["console-bar"]):
                        log_format = gr.Radio([("CSV（Excel 可打开）", "csv"), ("JSONL", "jsonl")], value="csv",
                                              label="导出格式", elem_id="log-format", scale=2)
                        log_export = gr.Button("导出对话记录", elem_id="log-export", scale=1)
                        log_download = gr.DownloadButton("下载", visible=False, elem_id="log-download", scale=1)
                    log_status = gr.HTML(elem_id="log-status", js_on_load=None)

                with gr.Tab("未解决的问题", id="unresolved", elem_id="tab-unresolved") as unresolved_tab:
                    with gr.Row(elem_classes=["console-bar"]):
                        un_days = gr.Dropdown(DAYS, value=30, label="时间范围", elem_id="unresolved-days", scale=1)
                        un_threshold = gr.Slider(0.80, 0.98, value=0.92, step=0.01, label="归并为一组的相似度（余弦）",
                                                 elem_id="unresolved-threshold", scale=2)
                        un_refresh = gr.Button("刷新", elem_id="unresolved-refresh", scale=1, min_width=80)
                    with gr.Row(elem_classes=["console-bar"]):
                        un_pick = gr.Dropdown(choices=[], label="选择一组问题", elem_id="unresolved-pick", scale=4)
                        un_to_test = gr.Button("去标注", variant="primary", elem_id="unresolved-to-test", scale=1)
                    un_status = gr.HTML(elem_id="unresolved-status", js_on_load=None)
                    un_list = gr.HTML(elem_id="unresolved-list", js_on_load=None)

                with gr.Tab("命中测试", id="hittest", elem_id="tab-hittest") as hit_tab:
                    known = list(configs())
                    with gr.Row(elem_classes=["console-bar"]):
                        hit_question = gr.Textbox(label="问题", elem_id="hit-question", scale=5, max_lines=3,
                                                  placeholder="输入一个问题，看它会检索到什么、怎样回答")
                        hit_btn = gr.Button("测试", variant="primary", elem_id="hit-run", scale=1, min_width=80)
                    with gr.Row():
                        hit_config = gr.Dropdown([(CONFIG_LABELS.get(n, n), n) for n in known], value=DEFAULT_CONFIG if DEFAULT_CONFIG in known else known[0],
                                                 label="检索配置（与评测 eval/run.py 相同）", elem_id="hit-config", scale=3)
                        hit_mode = gr.Radio(MODES, value="", label="检索方式", elem_id="hit-mode", scale=3)
                        hit_k = gr.Slider(1, 10, value=app.settings.top_k, step=1, label="用于回答的段落数（k）",
                                          elem_id="hit-k", scale=2)
                    with gr.Row():
                        with gr.Column(scale=3):
                            hit_summary = gr.HTML(elem_id="hit-summary", js_on_load=None)
                            hit_answer = gr.HTML(elem_id="hit-answer", js_on_load=None, elem_classes=["rag-answer"])
                        with gr.Column(scale=2, elem_id="annotate-box"):
                            gr.Markdown("**标注**：把这个问题加为应当回答它的条文或章节的典型问题，"
                                        "索引随即增量更新（只计算这一个问题的向量）。")
                            ann_question = gr.Textbox(label="问题（顾客的原话，可修改）", elem_id="annotate-question",
                                                      max_lines=3)
                            ann_target = gr.Dropdown(choices=[], label="标注到（检索结果，或下面搜索）",
                                                     elem_id="annotate-target")
                            with gr.Row(elem_classes=["console-bar"]):
                                ann_search = gr.Textbox(label="搜索条文或章节", elem_id="passage-search", scale=3,
                                                        max_lines=1, placeholder="例如：消费者权益保护法 第二十四条")
                                ann_search_btn = gr.Button("搜索", elem_id="passage-search-btn", scale=1, min_width=70)
                            ann_btn = gr.Button("标注并更新索引", variant="primary", elem_id="annotate-btn")
                            ann_status = gr.HTML(elem_id="annotate-status", js_on_load=None)
                            with gr.Accordion("已有的后台标注", open=False, elem_id="annotations"):
                                ann_pick = gr.Dropdown(choices=[], label="选择要移除的标注", elem_id="annotation-pick")
                                unann_btn = gr.Button("移除标注并更新索引", variant="stop", elem_id="unannotate-btn")
                                ann_list = gr.HTML(elem_id="annotation-list", js_on_load=None)
                    hit_fused = gr.HTML(elem_id="hit-fused", js_on_load=None)
                    hit_lists = gr.HTML(elem_id="hit-lists", js_on_load=None)

                with gr.Tab("统计", id="stats", elem_id="tab-stats") as stats_tab:
                    with gr.Row(elem_classes=["console-bar"]):
                        st_days = gr.Dropdown(DAYS, value=30, label="时间范围", elem_id="stats-days", scale=1)
                        st_refresh = gr.Button("刷新", elem_id="stats-refresh", scale=1, min_width=80)
                    st_cards = gr.HTML(elem_id="stats-cards", js_on_load=None)
                    with gr.Row():
                        st_per_day = gr.BarPlot(x="日期", y="提问数", color="结果", title="每天的提问数（已回答 / 拒答）",
                                                elem_id="stats-per-day", height=280, y_lim=[0, None],
                                                color_map={"已回答": "#2563eb", "拒答": "#ea580c"}, x_label_angle=-45)
                        st_refusal = gr.BarPlot(x="日期", y="拒答率（%）", title="每天的拒答率（%）",
                                                elem_id="stats-refusal", height=280, y_lim=[0, 100], x_label_angle=-45,
                                                color_map={"拒答率（%）": "#ea580c"})
                    with gr.Row():
                        st_feedback = gr.BarPlot(x="日期", y="次数", color="反馈", title="每天的赞和踩",
                                                 elem_id="stats-feedback", height=280, y_lim=[0, None],
                                                 x_label_angle=-45,
                                                 color_map={"赞": "#16a34a", "踩": "#dc2626"})
                        st_top = gr.BarPlot(x="文档", y="被引用次数", title="被引用最多的文档", elem_id="stats-top-docs",
                                            height=280, sort="-y", x_label_angle=-30, y_lim=[0, None])

    log_inputs = [log_search, log_unresolved, log_days, admin_session]
    log_outputs = [log_table, log_pick, log_summary]
    hit_inputs = [hit_question, hit_config, hit_mode, hit_k, admin_session]
    hit_outputs = [hit_summary, hit_answer, hit_fused, hit_lists, ann_target, ann_question]
    un_outputs = [un_list, un_pick]
    st_outputs = [st_cards, st_per_day, st_refusal, st_feedback, st_top]
    ann_outputs = [ann_pick, ann_list]

    admin_session.change(c.view, [admin_session], [login_needed, body, *log_outputs], api_name="console_view", **private)
    console_tab.select(c.log_view, log_inputs, log_outputs, api_name="console_log_tab", **private)
    log_tab.select(c.log_view, log_inputs, log_outputs, api_name="console_log_subtab", **private)
    log_refresh.click(c.log_view, log_inputs, log_outputs, api_name="console_log", **private)
    log_search.submit(c.log_view, log_inputs, log_outputs, api_name="console_log_search", **private)
    log_unresolved.change(c.log_view, log_inputs, log_outputs, api_name="console_log_filter", **private)
    log_export.click(c.log_export, [log_format, log_days, admin_session], [log_download, log_status],
                     api_name="console_export", **private)
    jump = [tabs, hit_question, ann_question]
    log_to_test.click(c.log_to_test, [log_pick, admin_session], [*jump, log_status], api_name="console_log_pick",
                      **private).then(c.hit_run, hit_inputs, hit_outputs, api_name="console_hit_after_log", **private)

    unresolved_tab.select(c.unresolved_view, [un_days, un_threshold, admin_session], un_outputs,
                          api_name="console_unresolved_tab", concurrency_id="console", **private)
    un_refresh.click(c.unresolved_view, [un_days, un_threshold, admin_session], un_outputs,
                     api_name="console_unresolved", concurrency_id="console", **private)
    un_to_test.click(c.unresolved_to_test, [un_pick, admin_session], [*jump, un_status],
                     api_name="console_unresolved_pick", **private).then(
        c.hit_run, hit_inputs, hit_outputs, api_name="console_hit_after_unresolved", **private)

    hit_btn.click(c.hit_run, hit_inputs, hit_outputs, api_name="console_hit", concurrency_id="console", **private)
    hit_question.submit(c.hit_run, hit_inputs, hit_outputs, api_name="console_hit_submit", concurrency_id="console",
                        **private)
    hit_tab.select(c.annotations_view, [admin_session], ann_outputs, api_name="console_annotations_tab", **private)
    ann_search_btn.click(c.passage_search, [ann_search, admin_session], [ann_target, ann_status],
                         api_name="console_passage_search", **private)
    ann_search.submit(c.passage_search, [ann_search, admin_session], [ann_target, ann_status],
                      api_name="console_passage_search_submit", **private)
    # annotation changes the index: one at a time, and never beside an upload/delete/rebuild of the kb tab
    ann_btn.click(c.annotate, [ann_question, ann_target, admin_session], [ann_status, *ann_outputs],
                  api_name="console_annotate", concurrency_id="kb", **private)
    unann_btn.click(c.unannotate, [ann_pick, admin_session], [ann_status, *ann_outputs],
                    api_name="console_unannotate", concurrency_id="kb", **private)

    stats_tab.select(c.stats_view, [st_days, admin_session], st_outputs, api_name="console_stats_tab", **private)
    st_refresh.click(c.stats_view, [st_days, admin_session], st_outputs, api_name="console_stats", **private)
    st_days.change(c.stats_view, [st_days, admin_session], st_outputs, api_name="console_stats_days", **private)
    app.console = c
    return c
