"""Command line: ``rag index``, ``rag ask``, ``rag serve``, ``rag eval``, ``rag feedback``, ``rag log``.

Errors a user can cause (no index, empty question, bad corpus) print one
Chinese sentence and exit non-zero; tracebacks are only for real bugs.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import Settings
from .labels import kind_label, section_label

log = logging.getLogger("rag")


class UserError(Exception):
    pass


def _settings(args) -> Settings:
    return Settings().with_(corpus_dir=args.corpus, index_dir=args.index, store=getattr(args, "store", None))


def cmd_index(args) -> int:
    from .index import progress_bar
    from .store import build_index

    s = _settings(args)
    if not s.corpus_dir.is_dir():
        raise UserError(f"知识库文件夹不存在：{s.corpus_dir}")
    report = build_index(s, progress=progress_bar("计算向量"), strict=args.strict, wait=args.wait)
    print(report.summary(), file=sys.stderr)
    return 0


def format_answer(result: dict) -> str:
    out = [result["answer"], ""]
    if result["refused"]:
        out.append("可能相关：")
        items = result["retrieved"][:3]
    else:
        out.append("来源：")
        items = result["citations"]
    for p in items:
        out.append(f"[{p['n']}] 《{p['title']}》{section_label(p['section'])}（{kind_label(p['kind'])}，{p['source']}）")
        out.append("    " + p["text"].replace("\n", "\n    "))
    return "\n".join(out)


def question_text(value, where: str = "问题") -> str:
    """A question as read from argv or a --batch line: text that can be written out as UTF-8.

    Why here: argv bytes that are not UTF-8 (random bytes, a GBK terminal) arrive as lone
    surrogates, and JSON can carry them too ("\\udcff") or a number or a list; each would crash
    the encoder or the output. ``None`` is left to ``validate_question`` (an empty question)."""
    from .pipeline import QuestionError

    if value is None:
        return ""
    if not isinstance(value, str):
        raise QuestionError(f"{where}应为一段文字（JSON 字符串），收到的是{_JSON_TYPE.get(type(value), '其他类型')}。")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise QuestionError(f"{where}含有无法识别的字符（不是有效的 UTF-8 文字），请检查终端或文件的编码。") from None
    return value


_JSON_TYPE = {int: "数字", float: "数字", bool: "真假值", list: "列表", dict: "对象"}


def _printable(value):
    """``value`` for a JSON output line: a string with lone surrogates is shown escaped instead of crashing."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(value, str) else value


def _read_batch(path: Path) -> list[tuple[object, object]]:
    """(id, raw question) for each non-empty line; a line that is not a JSON object with a
    question field stops the batch before the model loads (a malformed file, not a bad question)."""
    if not path.exists():
        raise UserError(f"找不到问题文件：{path}")
    if path.is_dir():
        raise UserError(f"问题文件 {path} 是一个文件夹，请指定一个 JSONL 文件")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except PermissionError:
        raise UserError(f"没有读取问题文件 {path} 的权限") from None
    except UnicodeDecodeError:
        raise UserError(f"问题文件 {path} 不是 UTF-8 编码的文本（GBK 等编码请先转成 UTF-8，二进制文件不能作为问题文件）") from None
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            items.append((obj.get("id", lineno), obj["question"]))
        except (ValueError, KeyError, AttributeError):
            raise UserError(f"{path} 第 {lineno} 行不是含 question 字段的 JSON") from None
    return items


def cmd_ask(args) -> int:
    from .pipeline import Assistant, QuestionError

    s = _settings(args)
    if args.mode:
        s = s.with_(mode=args.mode)
    llm = None
    if args.llm:
        from .llm import LLMConfig

        try:
            llm = LLMConfig.from_file(args.llm_config) if args.llm_config else LLMConfig.from_env()
        except (OSError, ValueError) as e:
            raise UserError(f"大模型配置有误：{e}") from None
        if llm is None:
            raise UserError("未配置大模型：请设置 RAG_LLM_BASE_URL 和 RAG_LLM_MODEL（密钥放在 RAG_LLM_API_KEY），或用 --llm-config 指定配置文件")
    if args.batch:
        items = _read_batch(Path(args.batch))
        assistant = Assistant(s, llm=llm)
        from tqdm import tqdm

        def checked():
            for qid, q in items:
                try:
                    yield _printable(qid), question_text(q)
                except QuestionError as e:
                    yield _printable(qid), e

        # Query embeddings are computed in batches (Assistant.ask_batch); the answers are the same as one by one.
        answers = assistant.ask_batch(checked(), k=args.k, use_llm=args.llm)
        for (_, raw), (qid, _, result) in tqdm(zip(items, answers), total=len(items), desc="回答问题",
                                               file=sys.stderr, disable=args.quiet):
            if isinstance(result, QuestionError):
                result = {"id": qid, "question": _printable(raw), "error": str(result), "answer": "", "refused": True,
                          "citations": [], "retrieved": [], "timings_ms": {}}
            print(json.dumps(result, ensure_ascii=False), flush=True)
        return 0
    if not args.question:
        raise UserError("请提供问题，例如：rag ask \"网上买的衣服不喜欢能退吗\"")
    question = question_text(" ".join(args.question))
    if args.id is not None:
        question_text(args.id, where="--id ")
    from .pipeline import validate_question

    validate_question(question, s.max_question_chars)  # fail fast, before loading the model
    result = Assistant(s, llm=llm).ask(question, k=args.k, qid=args.id, use_llm=args.llm)
    print(json.dumps(result, ensure_ascii=False, indent=None if args.compact else 1) if args.json
          else format_answer(result))
    return 0


def cmd_serve(args) -> int:
    from .auth import AdminPassword, AuthConfigError, check_exposure
    from .store import ensure_index

    s = _settings(args)
    try:
        admin = AdminPassword.from_env()
        check_exposure(args.host, admin)  # before building anything
    except AuthConfigError as e:
        raise UserError(str(e)) from None
    ensure_index(s)
    from ui.server import serve

    serve(s, host=args.host, port=args.port, admin=admin)
    return 0


def cmd_keys(args) -> int:
    from .auth import AuthConfigError, keys_command

    try:
        return keys_command(args, _settings(args))
    except AuthConfigError as e:
        raise UserError(str(e)) from None


def cmd_hash_password(args) -> int:
    from .auth import AuthConfigError, hash_password_command

    try:
        return hash_password_command(args)
    except AuthConfigError as e:
        raise UserError(str(e)) from None


def cmd_feedback(args) -> int:
    from .feedback import export

    s = _settings(args)
    print(export(s, fmt=args.format))
    return 0


def cmd_log(args) -> int:
    from .convlog import for_settings

    conv = for_settings(_settings(args))
    if args.action == "purge":
        print(f"已删除 {conv.purge()} 条超过保留期（{conv.retention_days} 天）的对话记录。", file=sys.stderr)
        return 0
    if not conv.path.exists():
        raise UserError(f"还没有对话记录：{conv.path}")
    text = conv.export(args.format, days=args.days)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"已导出 {text.count(chr(10)) - (args.format == 'csv')} 条对话记录到 {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--corpus", help="知识库文件夹（默认：仓库里的 corpus/）")
    common.add_argument("--index", help="索引文件夹（默认：仓库里的 index/）")
    common.add_argument("--store", choices=["faiss", "milvus"],
                        help="索引存放在哪里：faiss（本地文件，默认）或 milvus（RAG_MILVUS_URI；默认同 RAG_STORE）")
    common.add_argument("-v", "--verbose", action="store_true")
    p = argparse.ArgumentParser(prog="rag", description="售后问答：基于法律条文和维权指南的网购售后问答")
    sub = p.add_subparsers(dest="cmd", required=True)

    pi = sub.add_parser("index", parents=[common], help="从知识库建立/更新索引")
    pi.add_argument("--strict", action="store_true", help="任何文件有问题就失败，而不是跳过")
    pi.add_argument("--wait", action="store_true", help="若另一个重建正在进行，等待它结束")
    pi.set_defaults(func=cmd_index)

    pa = sub.add_parser("ask", parents=[common], help="提问")
    pa.add_argument("question", nargs="*")
    pa.add_argument("--json", action="store_true", help="输出 JSON（见 README 的 JSON 约定）")
    pa.add_argument("--compact", action="store_true", help="JSON 不缩进")
    pa.add_argument("-k", type=int, default=None, help="用于回答的段落数")
    pa.add_argument("--mode", choices=["hybrid", "dense", "keyword"])
    pa.add_argument("--batch", help="JSONL 文件，每行含 id 与 question；每个问题输出一行 JSON")
    pa.add_argument("--id", default=None)
    pa.add_argument("--llm", action="store_true", help="由已配置的大模型（OpenAI 兼容接口）撰写回答，引用经核对")
    pa.add_argument("--llm-config", help="大模型配置文件（.toml/.json：base_url, model, timeout_s, max_tokens）")
    pa.add_argument("-q", "--quiet", action="store_true")
    pa.set_defaults(func=cmd_ask)

    ps = sub.add_parser("serve", parents=[common], help="启动网页和 HTTP API（必要时先建立索引）")
    ps.add_argument("--host", default="127.0.0.1")
    ps.add_argument("--port", type=int, default=7860)
    ps.set_defaults(func=cmd_serve)

    # Listed for --help only: main() hands `rag eval …` to eval.run before parsing.
    pe = sub.add_parser("eval", help="运行评测（参数见 python -m eval.run --help）")
    pe.add_argument("rest", nargs=argparse.REMAINDER)

    pk = sub.add_parser("keys", parents=[common], help="管理 HTTP API 密钥（只保存摘要，在索引文件夹的 api_keys.json）")
    pk.add_argument("action", choices=["create", "list", "revoke"])
    pk.add_argument("key_id", nargs="?", help="revoke：要吊销的密钥编号（见 rag keys list）")
    pk.add_argument("--name", default="", help="create：备注名，例如使用它的系统")
    pk.add_argument("--role", choices=["ask", "admin"], default="ask", help="create：ask 只能提问；admin 还能管理知识库")
    pk.add_argument("--json", action="store_true", help="list：输出 JSON")
    pk.set_defaults(func=cmd_keys)

    ph = sub.add_parser("hash-password", help="生成管理员密码的哈希，用作 RAG_ADMIN_PASSWORD_HASH")
    ph.set_defaults(func=cmd_hash_password)

    pf = sub.add_parser("feedback", parents=[common], help="导出网页上收集的 👍/👎 反馈")
    pf.add_argument("action", choices=["export"])
    pf.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    pf.set_defaults(func=cmd_feedback)

    pl = sub.add_parser("log", parents=[common], help="导出对话记录（网页和 HTTP API 的提问，已脱敏）")
    pl.add_argument("action", choices=["export", "purge"], help="export：导出；purge：删除超过保留期的记录")
    pl.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    pl.add_argument("--days", type=float, default=None, help="只导出最近这么多天")
    pl.add_argument("--out", help="写入文件（默认输出到屏幕）")
    pl.set_defaults(func=cmd_log)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["eval"]:  # the evaluation has its own options
        from eval.run import main as eval_main

        return eval_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if getattr(args, "k", None) is not None and not 1 <= args.k <= 50:
        print("错误：-k 应在 1 到 50 之间", file=sys.stderr)
        return 2
    from .documents import DocumentError
    from .embedding import ModelError
    from .index import IndexBusy, IndexError_
    from .pipeline import QuestionError

    try:
        return args.func(args)
    except (UserError, QuestionError, DocumentError, IndexError_, IndexBusy, ModelError) as e:
        print(f"错误：{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("已中断", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
