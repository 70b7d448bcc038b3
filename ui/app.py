"""The web app (Gradio): ask questions with cited answers, and manage the knowledge base.

Why the chat shows our own HTML: answers and source cards quote documents,
which may be uploads and therefore untrusted. ``ui.render`` escapes every
document string and emits one raw HTML block per message, so neither the
Markdown renderer nor a ``<script>``/``onerror`` in a document can do anything;
Gradio's own sanitizer stays on as a second line of defence.

Rebuilds run in the knowledge-base tab while the ask tab keeps answering from
the previous index: ``build_index`` switches versions atomically and
``Assistant.ask`` picks up the new version on its next question.
"""
from __future__ import annotations

import logging
import re
import threading
import html
import queue
import time
import uuid
from pathlib import Path

import gradio as gr

from rag import feedback
from rag.config import Settings
from rag.documents import DocumentError
from rag.index import IndexBusy, IndexError_, build_index

from . import kb
from .render import answer_html, notice_html, question_html

log = logging.getLogger("ui")

EXAMPLES = [
    "网上买的衣服不喜欢，7天内能无理由退货吗？",
    "快递丢件了，商家和快递公司谁来赔？",
    "买到过期食品可以要求十倍赔偿吗？",
    "商家虚假宣传，我能要求退一赔三吗？",
]
GENERIC_ERROR = "出了点问题，这次没能完成。请稍后再试；详细原因已记录在服务器日志中。"
MODES = [("混合检索（推荐）", "hybrid"), ("向量检索", "dense"), ("关键词检索", "keyword")]
# Short follow-ups ("那运费谁出？") often lack the subject; when one that reads like a
# follow-up finds nothing on its own, it is asked again together with the previous question.
FOLLOW_UP_MAX_CHARS = 20
FOLLOW_UP = re.compile(r"^(那|这|它|如果|要是|万一|还有|另外|此外|然后|可是|但是|假如|那么)|这种|这样|那样|这个|那个|上面|刚才")

CSS = """
#chat .rag-answer, #chat .rag-question { line-height: 1.65; }
.rag-answer .ans-h { font-weight: 700; margin-top: .5em; }
.rag-answer .ans-h-guide { color: #8a5a00; }
.rag-answer .ans-li { margin: .15em 0 .15em 1.1em; text-indent: -1.1em; padding-left: 0; }
.rag-answer .ans-li::before { content: "• "; }
.rag-answer .ans-note { font-size: .85em; color: #666; margin-bottom: .4em; }
.rag-answer .ans-foot { font-size: .8em; color: #777; margin-top: .6em; }
.rag-answer .refusal { font-weight: 600; color: #9a3412; }
.rag-answer a.cite-ref { font-weight: 700; text-decoration: none; color: #1d4ed8; cursor: pointer; padding: 0 1px; }
.rag-answer a.cite-ref:hover { text-decoration: underline; }
.rag-answer .cards-h { margin-top: .9em; font-size: .9em; color: #555; }
.rag-answer .cards { display: flex; flex-direction: column; gap: .6em; margin-top: .4em; }
.rag-answer .cite-card { border: 1px solid #d4d4d8; border-left: 4px solid #a1a1aa; border-radius: 8px;
    padding: .6em .8em; background: rgba(250,250,250,.6); scroll-margin: 80px; transition: box-shadow .3s; }
.rag-answer .cite-card.kind-law { border-left-color: #2563eb; }
.rag-answer .cite-card.kind-guide { border-left-color: #d97706; }
.rag-answer .cite-card.flash { box-shadow: 0 0 0 3px #facc15; }
.rag-answer .card-head { font-weight: 600; }
.rag-answer .cite-n { color: #1d4ed8; }
.rag-answer .badge { display: inline-block; font-size: .75em; font-weight: 600; border-radius: 999px;
    padding: .05em .6em; margin-left: .3em; vertical-align: middle; }
.rag-answer .badge-law { background: #dbeafe; color: #1e40af; }
.rag-answer .badge-guide { background: #fef3c7; color: #92400e; }
.rag-answer .badge-howto { background: #dcfce7; color: #166534; }
.rag-answer .badge-other { background: #e4e4e7; color: #3f3f46; }
.rag-answer .card-meta { font-size: .78em; color: #71717a; margin: .15em 0 .35em; }
.rag-answer .card-score { margin-left: .6em; }
.rag-answer .card-passage { font-size: .92em; }
.rag-answer mark.used { background: #fde68a; color: inherit; padding: 0 1px; border-radius: 2px; }
.rag-answer details.card-full { margin-top: .35em; font-size: .88em; }
.rag-answer details.card-full summary { cursor: pointer; color: #1d4ed8; }
.rag-answer .card-full-text { margin-top: .3em; padding: .4em .6em; background: #f4f4f5; border-radius: 6px;
    max-height: 24em; overflow: auto; }
#ask-status .warn { color: #b91c1c; font-weight: 600; }
#ask-status .info { color: #166534; }
#kb-status .ok, #kb-status .bad { margin: .2em 0; }
#kb-status .ok { color: #166534; }
#kb-status .bad { color: #b91c1c; font-weight: 600; }
#kb-status .plain { color: #3f3f46; }
"""

# Clicking [n] scrolls its card into view (inside the chat's own scroll box) and flashes it.
HEAD = """
<script>
document.addEventListener("click", function (ev) {
  var a = ev.target && ev.target.closest ? ev.target.closest("a.cite-ref") : null;
  if (!a) return;
  ev.preventDefault();
  ev.stopPropagation();
  var id = (a.getAttribute("href") || "").replace(/^#/, "");
  var card = id ? document.getElementById(id) : null;
  if (!card) return;
  card.scrollIntoView({behavior: "auto", block: "center"});
  card.classList.add("flash");
  setTimeout(function () { card.classList.remove("flash"); }, 1600);
}, true);
</script>
"""


def _status(text: str, cls: str = "plain") -> str:
    return notice_html(text, cls)


class App:
    """State shared by all browser sessions: settings, the assistant, section lookups."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._assistant = None
        self._lock = threading.Lock()
        self._sections: tuple[str, dict] | None = None

    # -- assistant -----------------------------------------------------------------
    def assistant(self):
        if self._assistant is None:
            with self._lock:
                if self._assistant is None:
                    from rag.pipeline import Assistant

                    self._assistant = Assistant(self.settings)
        return self._assistant

    def warm_up(self) -> None:
        try:
            # One throwaway question loads jieba's dictionary (~1 s) and the encoder's buffers now,
            # instead of on the first shopper's question.
            self.assistant().ask("七天无理由退货")
        except Exception as e:  # the page still opens; the ask tab explains what is missing
            log.warning("assistant not ready at start: %s", e)

    def full_section(self, p: dict):
        """(whole article/section text, offset of passage p in it), from the serving index."""
        a = self._assistant
        if a is None or a.index is None:
            return None
        index = a.index
        if self._sections is None or self._sections[0] != index.version:
            groups: dict[tuple, list] = {}
            for c in index.chunks:
                groups.setdefault((c.source, c.section, tuple(c.heading_path)), []).append(c)
            by_pos = {}
            for members in groups.values():
                members.sort(key=lambda c: c.start)
                for c in members:
                    by_pos[(c.source, c.start, c.end)] = members
            self._sections = (index.version, by_pos)
        members = self._sections[1].get((p.get("source"), p.get("start"), p.get("end")))
        if not members:
            return None
        text, pos, offset = "", None, 0
        for c in members:
            if pos is None:
                start_in_text, text = 0, c.text
            elif c.start >= pos:
                text += "\n" if c.start > pos else ""
                start_in_text = len(text)
                text += c.text
            else:  # overlapping split parts
                start_in_text = len(text) - (pos - c.start)
                text += c.text[pos - c.start:]
            if c.start == p.get("start") and c.end == p.get("end"):
                offset = start_in_text
            pos = c.end if pos is None else max(pos, c.end)
        return text, max(0, offset)

    # -- ask tab ---------------------------------------------------------------------
    def respond(self, question, history, turns, k, mode, show_scores, use_llm=False):
        """Generator: show the question at once, then the answer with its source cards."""
        history = list(history or [])
        turns = dict(turns or {})
        q = (question or "").strip()
        from rag.pipeline import QuestionError, validate_question

        try:
            validate_question(question, self.settings.max_question_chars)
        except QuestionError as e:
            yield history, turns, question, _status(str(e), "warn")
            return
        history = history + [{"role": "user", "content": question_html(q)},
                             {"role": "assistant", "content": _status("正在查找相关条文……", "pending")}]
        yield history, turns, "", _status("正在查找……", "info")
        try:
            k, mode = int(k or self.settings.top_k), mode or self.settings.mode
            if use_llm and self.llm_ready():
                for partial in self._stream_llm(q, turns, k, mode):
                    if isinstance(partial, str):  # tokens so far, not yet verified
                        history[-1] = {"role": "assistant", "content": _status(partial + " ▌", "pending")}
                        yield history, turns, "", _status("大模型正在撰写，完成后将逐句核对引用……", "info")
                    else:
                        result, note = partial
            else:
                result, note = self._ask(q, turns, k, mode)
            llm = result.get("llm") or {}
            if llm.get("used"):
                note = (note + " " if note else "") + (
                    f"（由大模型 {llm.get('model')} 撰写；{llm.get('supported')}/{llm.get('total')} 句已在资料中核实"
                    + ("，无法核实的句子已标注" if llm.get("supported") != llm.get("total") else "") + "）")
            turn_id = uuid.uuid4().hex[:10]
            body = answer_html(result, turn_id, show_scores=bool(show_scores), full_sections=self.full_section,
                               note=note)
            history[-1] = {"role": "assistant", "content": body}
            turns[str(len(history) - 1)] = {
                "question": q, "answer": result["answer"], "citations": result["citations"],
                "refused": result["refused"], "index_version": result.get("index_version"),
            }
            status = "" if not result["refused"] else _status("资料中没有找到可靠依据，下面列出的是最接近的资料。", "info")
        except QuestionError as e:
            history = history[:-2]
            yield history, turns, question, _status(str(e), "warn")
            return
        except (IndexError_, DocumentError) as e:
            log.warning("ask failed: %s", e)
            history[-1] = {"role": "assistant", "content": _status(f"索引暂时不可用：{e}", "warn")}
            status = _status("索引暂时不可用，请到“知识库”页重建索引。", "warn")
        except Exception:
            log.exception("ask failed for question %r", q)
            history[-1] = {"role": "assistant", "content": _status(GENERIC_ERROR, "warn")}
            status = _status(GENERIC_ERROR, "warn")
        yield history, turns, "", status

    def llm_ready(self) -> bool:
        try:
            return self.assistant().llm is not None
        except Exception:
            return False

    def _stream_llm(self, q: str, turns: dict, k: int, mode: str):
        """Yield the growing LLM text while it streams, then the final (result, note)."""
        tokens: queue.Queue = queue.Queue()
        box: dict = {}

        def work():
            try:
                box["value"] = self._ask(q, turns, k, mode, use_llm=True, on_token=tokens.put)
            except BaseException as e:  # re-raised in the generator, where respond handles it
                box["error"] = e
            finally:
                tokens.put(None)

        threading.Thread(target=work, daemon=True).start()
        text, last = "", 0.0
        while (tok := tokens.get()) is not None:
            text += tok
            if time.monotonic() - last > 0.15:
                last = time.monotonic()
                yield html.escape(text)
        if "error" in box:
            raise box["error"]
        yield box["value"]

    def _ask(self, q: str, turns: dict, k: int, mode: str, use_llm: bool = False, on_token=None):
        a = self.assistant()
        result = a.ask(q, k=k, mode=mode, use_llm=use_llm, on_token=on_token)
        if result["refused"] and turns and len(q) <= FOLLOW_UP_MAX_CHARS and FOLLOW_UP.search(q):
            last = turns[max(turns, key=int)]
            if not last.get("refused"):
                combined = f"{last['question']} {q}"
                if len(combined) <= self.settings.max_question_chars:
                    again = a.ask(combined, k=k, mode=mode)
                    if not again["refused"]:
                        again["question"] = q
                        return again, f"（结合上一个问题“{last['question']}”来理解）"
        return result, ""

    def on_like(self, turns, data: gr.LikeData):
        turns = turns or {}
        idx = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        turn = turns.get(str(idx))
        if turn is None or data.liked not in (True, False):
            return gr.skip()
        try:
            feedback.record(self.settings, turn["question"], turn["answer"], turn["citations"],
                            "up" if data.liked else "down", index_version=turn.get("index_version"))
        except Exception:
            log.exception("could not record feedback")
            return _status("反馈没能保存，请稍后再试。", "warn")
        return _status("感谢反馈！已记录 " + ("👍" if data.liked else "👎"), "info")

    # -- knowledge-base tab --------------------------------------------------------------
    def kb_view(self):
        rows = kb.document_rows(self.settings)
        files = kb.corpus_files(self.settings)
        m = kb.read_manifest(self.settings) or {}
        lines = [f"共 {len(rows)} 篇文档、{m.get('chunks', 0)} 个片段；索引建立于 "
                 f"{str(m.get('created', '（尚未建立）')).replace('T', ' ')}。"]
        skipped = kb.skipped_files(self.settings)
        if skipped:
            lines.append("未能索引的文件：" + "；".join(f"{f}（{r}）" for f, r in skipped))
        summary = "".join(_status(x) for x in lines)
        return (gr.update(value=rows), gr.update(choices=files, value=None), summary)

    def _rebuild(self, progress, action: str) -> tuple[object, str]:
        progress(0, desc="正在读取文档、切分并准备模型…")

        def cb(done: int, total: int):
            progress((done, total), desc="正在为新片段计算向量", unit="片段")

        t0 = time.perf_counter()
        report = build_index(self.settings, progress=cb)
        progress(1.0, desc="已切换到新索引")
        elapsed = time.perf_counter() - t0
        log.info("%s: rebuilt in %.1fs (%s)", action, elapsed, report.version)
        return report, f"索引已更新：文档 {report.documents} 篇，片段 {report.chunks} 个（新计算 {report.embedded}，复用 {report.reused}），用时 {elapsed:.1f} 秒。"

    def upload(self, files, progress=gr.Progress()):
        msgs: list[str] = []
        good: list[tuple[Path, str]] = []
        for f in files or []:
            path = Path(f if isinstance(f, str) else getattr(f, "name", str(f)))
            name = getattr(f, "orig_name", None) or path.name
            try:
                good.append((path, kb.validate_upload(self.settings, path, name)))
            except kb.UploadRejected as e:
                msgs.append(_status(f"未加入：{e}", "bad"))
            except Exception:
                log.exception("validating upload %s failed", name)
                msgs.append(_status(f"未加入：{name}：检查文件时出错", "bad"))
        if not files:
            msgs.append(_status("请先选择要上传的文件。", "bad"))
        if not good:
            if files:
                msgs.append(_status("没有文件加入知识库，现有索引保持不变。", "plain"))
            return ("".join(msgs), *self.kb_view(), None)
        change = kb.Change()
        try:
            kb.add_files(self.settings, good, change)
            report, summary = self._rebuild(progress, "upload")
        except IndexBusy as e:
            change.undo()
            msgs.append(_status(f"{e}。上传的文件没有加入，请稍后重新上传。", "bad"))
            return ("".join(msgs), *self.kb_view(), gr.skip())
        except Exception as e:
            change.undo()
            if isinstance(e, (DocumentError, IndexError_)):
                log.warning("rebuild after upload failed: %s", e)
            else:
                log.exception("rebuild after upload failed")
            msgs.append(_status("重建索引失败，上传的文件已撤回，现有索引保持不变。", "bad"))
            return ("".join(msgs), *self.kb_view(), gr.skip())
        change.close()
        skipped = dict(report.skipped)
        for rel in change.added:
            if rel in skipped:
                (Path(self.settings.corpus_dir) / rel).unlink(missing_ok=True)
                msgs.append(_status(f"未加入：{Path(rel).name}：{skipped[rel]}", "bad"))
            else:
                msgs.append(_status(f"已加入：{rel}", "ok"))
        msgs.append(_status(summary, "ok"))
        return ("".join(msgs), *self.kb_view(), None)

    def delete(self, rel, progress=gr.Progress()):
        if not rel:
            return (_status("请先在列表中选择要删除的文档。", "bad"), *self.kb_view())
        change = kb.Change()
        try:
            kb.remove_file(self.settings, rel, change)
            report, summary = self._rebuild(progress, "delete")
        except kb.UploadRejected as e:
            return (_status(str(e), "bad"), *self.kb_view())
        except IndexBusy as e:
            change.undo()
            return (_status(f"{e}。文档没有删除。", "bad"), *self.kb_view())
        except Exception:
            change.undo()
            log.exception("delete of %s failed", rel)
            return (_status("删除后重建索引失败，文档已恢复，现有索引保持不变。", "bad"), *self.kb_view())
        change.close()
        return (_status(f"已删除：{rel}。" + summary, "ok"), *self.kb_view())

    def rebuild(self, progress=gr.Progress()):
        try:
            _, summary = self._rebuild(progress, "rebuild")
            msg = _status(summary, "ok")
        except IndexBusy as e:
            msg = _status(f"{e}。", "bad")
        except (DocumentError, IndexError_) as e:
            log.warning("rebuild failed: %s", e)
            msg = _status(f"重建索引失败：{e}", "bad")
        except Exception:
            log.exception("rebuild failed")
            msg = _status("重建索引失败，现有索引保持不变。详细原因已记录在服务器日志中。", "bad")
        return (msg, *self.kb_view())


def build_app(settings: Settings) -> gr.Blocks:
    """The Gradio Blocks for ``settings``; ``launch`` serves it (tests start it themselves)."""
    app = App(settings)
    app.warm_up()
    with gr.Blocks(title="售后问答") as demo:
        demo.rag_app = app  # for tests and embedding
        gr.Markdown("## 售后问答\n根据法律条文与维权指南回答网购售后问题。每句回答都标有来源 [n]，"
                    "“经验指南（未经核实）”来自第三方经验文章，仅供参考，不构成法律意见。")
        with gr.Tabs():
            with gr.Tab("提问", id="ask", elem_id="tab-ask"):
                chatbot = gr.Chatbot(
                    elem_id="chat", label="对话", show_label=False, height="62vh", layout="panel", sanitize_html=True,
                    allow_tags=False, latex_delimiters=[], render_markdown=True, line_breaks=False,
                    feedback_options=("Like", "Dislike"), autoscroll=True,
                    placeholder="请输入您遇到的网购售后问题，或点击下面的示例问题。",
                )
                turns = gr.State({})
                with gr.Row(equal_height=True):
                    question = gr.Textbox(elem_id="question", show_label=False, lines=1, max_lines=5, scale=8,
                                          placeholder="例如：网上买的衣服不喜欢，7天内能退吗？（回车发送）")
                    send = gr.Button("发送", variant="primary", elem_id="send", scale=1, min_width=80)
                    clear = gr.Button("清空对话", elem_id="clear", scale=1, min_width=80)
                status = gr.HTML(elem_id="ask-status", js_on_load=None)
                gr.Markdown("**示例问题**（点击即可提问）：")
                with gr.Row():
                    example_buttons = [gr.Button(q, size="sm", elem_classes=["example-q"]) for q in EXAMPLES]
                with gr.Accordion("设置", open=False, elem_id="settings"):
                    top_k = gr.Slider(1, 10, value=settings.top_k, step=1, label="用于回答的段落数（top-k）",
                                      elem_id="top-k")
                    mode = gr.Radio(MODES, value=settings.mode, label="检索方式", elem_id="mode")
                    show_scores = gr.Checkbox(False, label="显示检索得分与置信度", elem_id="show-scores")
                    llm_on = app.llm_ready()
                    use_llm = gr.Checkbox(
                        False, elem_id="use-llm", interactive=llm_on,
                        label="由大模型撰写回答（引用逐句核对）" if llm_on
                        else "由大模型撰写回答（未配置：设置 RAG_LLM_BASE_URL / RAG_LLM_MODEL 后可用）")

                ask_inputs = [question, chatbot, turns, top_k, mode, show_scores, use_llm]
                ask_outputs = [chatbot, turns, question, status]
                question.submit(app.respond, ask_inputs, ask_outputs, concurrency_id="ask")
                send.click(app.respond, ask_inputs, ask_outputs, concurrency_id="ask")
                for b, q in zip(example_buttons, EXAMPLES):
                    b.click(lambda q=q: q, None, question, queue=False).then(
                        app.respond, ask_inputs, ask_outputs, concurrency_id="ask")
                clear.click(lambda: ([], {}, ""), None, [chatbot, turns, status], queue=False)
                chatbot.like(app.on_like, [turns], [status])

            with gr.Tab("知识库", id="kb", elem_id="tab-kb"):
                gr.Markdown("上传的文档保存在知识库的 `uploads/` 文件夹；支持 .md、.txt、.html、.pdf、.docx。"
                            "重建期间“提问”页继续使用旧索引回答，新索引就绪后自动切换。")
                kb_summary = gr.HTML(elem_id="kb-summary", js_on_load=None)
                with gr.Row():
                    with gr.Column():
                        files = gr.File(file_count="multiple", label="上传文档（可多选）", elem_id="upload",
                                        height=140)
                        upload_btn = gr.Button("上传并重建索引", variant="primary", elem_id="upload-btn")
                    with gr.Column():
                        to_delete = gr.Dropdown(choices=[], label="选择要删除的文档", elem_id="delete-choice",
                                                filterable=True)
                        delete_btn = gr.Button("删除并重建索引", variant="stop", elem_id="delete-btn")
                        rebuild_btn = gr.Button("重建索引", elem_id="rebuild-btn")
                kb_status = gr.HTML(elem_id="kb-status", js_on_load=None, min_height=60)
                docs = gr.Dataframe(headers=["标题", "类型", "文件", "片段数", "索引时间"],
                                    datatype=["str", "str", "str", "number", "str"], interactive=False,
                                    column_widths=["32%", "7%", "33%", "8%", "20%"], elem_id="kb-docs",
                                    label="已索引的文档（新上传的排在前面）", wrap=True, max_height=420,
                                    show_search="search")

                view_outputs = [docs, to_delete, kb_summary]
                # progress shows in the status box only, so the document list stays readable meanwhile
                kb_events = dict(concurrency_id="kb", show_progress_on=[kb_status])
                upload_btn.click(app.upload, [files], [kb_status, *view_outputs, files], **kb_events)
                delete_btn.click(app.delete, [to_delete], [kb_status, *view_outputs], **kb_events)
                rebuild_btn.click(app.rebuild, None, [kb_status, *view_outputs], **kb_events)
        demo.load(app.kb_view, None, view_outputs)
    return demo


LAUNCH_OPTIONS = dict(css=CSS, head=HEAD, theme=gr.themes.Soft(
    font=["Noto Sans CJK SC", "WenQuanYi Zen Hei", "PingFang SC", "Microsoft YaHei", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"]), show_error=False, footer_links=[])


def launch(settings: Settings, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the app (blocking unless ``block=False``, which returns the Blocks)."""
    logging.getLogger("ui").setLevel(logging.INFO)
    demo = build_app(settings)
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
                **LAUNCH_OPTIONS)
    return demo
