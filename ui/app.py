"""The web app (Gradio): ask questions with cited answers, and manage the knowledge base.

Why the chat shows our own HTML: answers and source cards quote documents,
which may be uploads and therefore untrusted. ``ui.render`` escapes every
document string and emits one raw HTML block per message, so neither the
Markdown renderer nor a ``<script>``/``onerror`` in a document can do anything;
Gradio's own sanitizer stays on as a second line of defence.

Rebuilds run in the knowledge-base tab while the ask tab keeps answering from
the previous index: ``build_index`` switches versions atomically and
``Assistant.ask`` picks up the new version on its next question.

Roles: the ask tab is public; the knowledge-base tab asks for the administrator
password (``RAG_ADMIN_PASSWORD_HASH`` / ``RAG_ADMIN_PASSWORD``, see rag/auth.py)
when one is configured. The login lives in the session's server-side state, and
every handler that lists or changes the corpus checks it, so calling the
handlers directly (Gradio's HTTP queue) without logging in changes nothing.
Without a password the tab is open, which ``ui.server`` allows only on a
loopback address. The server itself (web app + HTTP API) is in ``ui/server.py``.
"""
from __future__ import annotations

import logging
import threading
import html
import queue
import time
import uuid
from pathlib import Path

import gradio as gr

from rag import convlog, feedback
from rag.auth import AdminPassword, LoginThrottle
from rag.config import Settings
from rag.documents import DocumentError
from rag.index import IndexError_

from . import i18n, kb
from .console import CSS as CONSOLE_CSS, add_console
from .render import answer_html, notice_html, question_html

log = logging.getLogger("ui")

EXAMPLES = [
    "网上买的衣服不喜欢，7天内能无理由退货吗？",
    "快递丢件了，商家和快递公司谁来赔？",
    "买到过期食品可以要求十倍赔偿吗？",
    "商家虚假宣传，我能要求退一赔三吗？",
]
GENERIC_ERROR = "出了点问题，这次没能完成。请稍后再试；详细原因已记录在服务器日志中。"
NEED_LOGIN = "请先以管理员身份登录（知识库页上方输入管理员密码）。"
MODES = [("混合检索（推荐）", "hybrid"), ("向量检索", "dense"), ("关键词检索", "keyword")]


def follow_up_note(result: dict) -> str:
    """What the answer understood a follow-up as: the LLM's standalone question, or the earlier question used."""
    how = (result.get("follow_up") or {}).get("how")
    rewritten = result.get("rewritten_question")
    if how == "llm" and rewritten and rewritten != result.get("question", "").strip():
        return f"（理解为：{rewritten}）"
    context = (result.get("follow_up") or {}).get("context") or []
    if how == "context" and context:
        return f"（结合上一个问题“{context[0]}”来理解）"
    return ""

CSS = """
#chat .rag-answer, #chat .rag-question { line-height: 1.65; }
.rag-answer .ans-h { font-weight: 700; margin-top: .5em; }
.rag-answer .ans-h-guide { color: #8a5a00; }
.rag-answer .ans-h-steps { color: #166534; }
.rag-answer .ans-key { background: #eff6ff; border-left: 4px solid #2563eb; padding: .45em .6em; margin: .2em 0 .4em; }
.rag-answer .ans-key-label { font-weight: 700; color: #1e40af; margin-right: .5em; }
.rag-answer .ans-gap { background: #fff7ed; border-left: 4px solid #ea580c; padding: .4em .6em; margin-bottom: .4em; }
.rag-answer .ans-step { margin: .15em 0 .15em 1em; }
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

    def __init__(self, settings: Settings, admin: AdminPassword | None = None):
        """``admin``: the administrator password; None leaves the knowledge-base tab open
        (``ui.server`` refuses that on any address but loopback)."""
        self.settings = settings
        self.admin = admin
        self.throttle = LoginThrottle()
        self._assistant = None
        self._lock = threading.Lock()
        self._sections: tuple[str, dict] | None = None

    # -- administrator login -------------------------------------------------------
    @property
    def admin_required(self) -> bool:
        return self.admin is not None

    def is_admin(self, session) -> bool:
        """Whether this browser session may list and change the knowledge base."""
        if self.admin is None:
            return True
        return isinstance(session, dict) and float(session.get("until", 0)) > time.time()

    def login(self, password, session, request: gr.Request):
        """Check the password; on success the session's (server-side) state records the login."""
        client = getattr(getattr(request, "client", None), "host", None) or "?"
        if self.admin is None:
            return (session, *self._login_view(True, ""), *self.kb_view(session))
        if self.throttle.blocked(client):
            return (session, *self._login_view(False, _status("尝试次数过多，请一分钟后再试。", "bad")),
                    *self._hidden_kb())
        if not self.admin.check(password):
            self.throttle.failed(client)
            log.warning("failed administrator login from %s", client)
            return (None, *self._login_view(False, _status("管理员密码不正确。", "bad")), *self._hidden_kb())
        self.throttle.succeeded(client)
        log.info("administrator logged in from %s", client)
        session = {"until": time.time() + self.settings.admin_session_hours * 3600}
        return (session, *self._login_view(True, ""), *self.kb_view(session))

    def logout(self, session):
        return (None, *self._login_view(False, _status("已退出登录。", "plain")), *self._hidden_kb())

    def _login_view(self, logged_in: bool, message: str):
        """(login box, management area, password box, login message) updates."""
        return (gr.update(visible=not logged_in), gr.update(visible=logged_in), gr.update(value=""), message)

    def _hidden_kb(self):
        return (gr.update(value=[]), gr.update(choices=[], value=None), "")

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
            log_id = convlog.record(self.settings, result, "web", mode=mode, k=k)  # masked, off the hot path
            turn_id = uuid.uuid4().hex[:10]
            body = answer_html(result, turn_id, show_scores=bool(show_scores), full_sections=self.full_section,
                               note=note)
            history[-1] = {"role": "assistant", "content": body}
            turns[str(len(history) - 1)] = {
                "question": q, "answer": result["answer"], "citations": result["citations"],
                "refused": result["refused"], "index_version": result.get("index_version"), "log_id": log_id,
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
        """Ask with the chat's earlier turns as history: a follow-up that lacks its subject is
        understood with the earlier questions, or rewritten by the LLM (rag/conversation.py); the
        note says which."""
        history = []
        for key in sorted(turns or {}, key=int):
            t = turns[key]
            history += [{"role": "user", "content": t["question"]}, {"role": "assistant", "content": t["answer"]}]
        result = self.assistant().ask(q, k=k, mode=mode, use_llm=use_llm, on_token=on_token, history=history)
        return result, follow_up_note(result)

    def on_like(self, turns, data: gr.LikeData):
        turns = turns or {}
        idx = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        turn = turns.get(str(idx))
        if turn is None or data.liked not in (True, False):
            return gr.skip()
        try:
            convlog.feedback(self.settings, turn.get("log_id"), "up" if data.liked else "down")
            feedback.record(self.settings, turn["question"], turn["answer"], turn["citations"],
                            "up" if data.liked else "down", index_version=turn.get("index_version"))
        except Exception:
            log.exception("could not record feedback")
            return _status("反馈没能保存，请稍后再试。", "warn")
        return _status("感谢反馈！已记录 " + ("👍" if data.liked else "👎"), "info")

    # -- knowledge-base tab --------------------------------------------------------------
    def kb_view(self, session=None):
        if not self.is_admin(session):
            return self._hidden_kb()
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

    @staticmethod
    def _progress(progress):
        """A ``(done, total)`` callback for ``build_index`` that drives a Gradio progress bar."""
        progress(0, desc="正在读取文档、切分并准备模型…")

        def cb(done: int, total: int):
            progress((done, total), desc="正在为新片段计算向量", unit="片段")
            if done >= total:
                progress(1.0, desc="正在切换到新索引")

        return cb

    def upload(self, files, session=None, progress=gr.Progress()):
        try:
            if not self.is_admin(session):
                log.warning("upload refused: not logged in as administrator")
                return (_status(NEED_LOGIN, "bad"), *self._hidden_kb(), None)
            pairs = []
            for f in files or []:
                path = Path(f if isinstance(f, str) else getattr(f, "name", str(f)))
                pairs.append((path, getattr(f, "orig_name", None) or path.name))
            out = kb.upload(self.settings, pairs, progress=self._progress(progress))
        finally:
            kb.discard_uploads(files)  # Gradio's temporary copies: the corpus has its own now
        msgs = [_status(f"未加入：{why}", "bad") for _, why in out.rejected]
        msgs += [_status(f"已加入：{rel}", "ok") for rel in out.added]
        msgs.append(_status(out.message, "ok" if out.ok else "bad"))
        return ("".join(msgs), *self.kb_view(session), None)

    def delete(self, rel, session=None, progress=gr.Progress()):
        if not self.is_admin(session):
            log.warning("delete refused: not logged in as administrator")
            return (_status(NEED_LOGIN, "bad"), *self._hidden_kb())
        out = kb.delete(self.settings, rel, progress=self._progress(progress) if rel else None)
        return (_status(out.message, "ok" if out.ok else "bad"), *self.kb_view(session))

    def rebuild(self, session=None, progress=gr.Progress()):
        if not self.is_admin(session):
            log.warning("rebuild refused: not logged in as administrator")
            return (_status(NEED_LOGIN, "bad"), *self._hidden_kb())
        out = kb.rebuild(self.settings, progress=self._progress(progress))
        return (_status(out.message, "ok" if out.ok else "bad"), *self.kb_view(session))


def build_app(settings: Settings, app: App | None = None) -> gr.Blocks:
    """The Gradio Blocks for ``settings`` (and ``app``'s administrator password, if given);
    ``ui.server`` serves it together with the HTTP API."""
    app = app or App(settings)
    app.warm_up()
    # Uploads Gradio keeps in its temporary folder are deleted after an hour, and all of them
    # when the server stops (the handlers delete the ones they used at once).
    with gr.Blocks(title="售后问答", delete_cache=(600, 3600)) as demo:
        demo.rag_app = app  # for tests and embedding
        gr.Markdown("## 售后问答\n根据法律条文与维权指南回答网购售后问题。每句回答都标有来源 [n]，"
                    "“办事指南（依据法条整理）”由本项目依据条文编写、每句注明条文；“经验指南（未经核实）”来自第三方经验文章，仅供参考。均不构成法律意见。")
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
                    question = gr.Textbox(elem_id="question", label="问题", show_label=False, lines=1, max_lines=5, scale=8,
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
                # Questions from different shoppers are answered side by side (up to web_concurrency at a time,
                # sharing one limit), so their embeddings are computed together (rag/embedding.py QueryBatcher).
                ask_events = dict(concurrency_id="ask", concurrency_limit=settings.web_concurrency)
                question.submit(app.respond, ask_inputs, ask_outputs, **ask_events)
                send.click(app.respond, ask_inputs, ask_outputs, **ask_events)
                for b, q in zip(example_buttons, EXAMPLES):
                    b.click(lambda q=q: q, None, question, queue=False).then(
                        app.respond, ask_inputs, ask_outputs, **ask_events)
                clear.click(lambda: ([], {}, ""), None, [chatbot, turns, status], queue=False)
                chatbot.like(app.on_like, [turns], [status])

            with gr.Tab("知识库", id="kb", elem_id="tab-kb"):
                admin_session = gr.State(None)
                with gr.Column(visible=app.admin_required, elem_id="kb-login") as login_box:
                    gr.Markdown("管理知识库（上传、删除文档，重建索引）需要管理员登录。")
                    with gr.Row(equal_height=True):
                        password = gr.Textbox(type="password", label="管理员密码", elem_id="admin-password",
                                              scale=4, max_lines=1)
                        login_btn = gr.Button("登录", variant="primary", elem_id="login-btn", scale=1, min_width=80)
                    login_status = gr.HTML(elem_id="login-status", js_on_load=None)
                with gr.Column(visible=not app.admin_required, elem_id="kb-manage") as manage:
                    if app.admin_required:
                        logout_btn = gr.Button("退出登录", size="sm", elem_id="logout-btn")
                    gr.Markdown("上传的文档保存在知识库的 `uploads/` 文件夹；支持 .md、.txt、.html、.pdf、.docx，"
                                f"每个文件不超过 {settings.max_upload_bytes / 1024 / 1024:g} MB。"
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
                # progress shows in the status box only, so the document list stays readable meanwhile;
                # "private": not offered to Gradio's API clients (and the handlers check the login anyway)
                kb_events = dict(concurrency_id="kb", show_progress_on=[kb_status], api_visibility="private")
                upload_btn.click(app.upload, [files, admin_session], [kb_status, *view_outputs, files], **kb_events)
                delete_btn.click(app.delete, [to_delete, admin_session], [kb_status, *view_outputs], **kb_events)
                rebuild_btn.click(app.rebuild, [admin_session], [kb_status, *view_outputs], **kb_events)
                login_outputs = [admin_session, login_box, manage, password, login_status, *view_outputs]
                login_events = dict(api_visibility="private", concurrency_id="login", concurrency_limit=4)
                login_btn.click(app.login, [password, admin_session], login_outputs, **login_events)
                password.submit(app.login, [password, admin_session], login_outputs, **login_events)
                if app.admin_required:
                    logout_btn.click(app.logout, [admin_session], login_outputs, api_visibility="private")
            add_console(app, admin_session)  # 运营后台: log, unresolved questions, hit test, stats (ui/console.py)
        demo.load(app.kb_view, [admin_session], view_outputs, api_visibility="private")
    return demo


LAUNCH_OPTIONS = dict(css=CSS + CONSOLE_CSS, head=HEAD + i18n.head(), i18n=i18n.translations(), theme=gr.themes.Soft(
    font=["Noto Sans CJK SC", "WenQuanYi Zen Hei", "PingFang SC", "Microsoft YaHei", "system-ui", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"]), show_error=False, footer_links=[])


def launch(settings: Settings, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the web app and the HTTP API (``ui.server``); with ``block=False`` return the running
    server (``.close()`` stops it)."""
    from .server import serve

    return serve(settings, host=host, port=port, block=block)
