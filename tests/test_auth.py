"""Who may change the knowledge base: administrator password, API keys, `rag keys`, `rag serve --host`,
and the web app's knowledge-base handlers refusing a session that has not logged in.

The last part talks to a real server through Gradio's own HTTP queue, the way a
script would call the handlers directly, bypassing the page.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import free_port, private_kb
from rag import auth
from rag.auth import AdminPassword, AuthConfigError, KeyStore, LoginThrottle, hash_password, verify_password
from rag.cli import main as rag_main

ADMIN_PASSWORD = "zhanggui-2026!"


# --------------------------------------------------------------------------- passwords


def test_password_hash_roundtrip_and_format():
    h = hash_password(ADMIN_PASSWORD)
    assert h.startswith("scrypt$16384$8$1$") and ADMIN_PASSWORD not in h
    assert verify_password(ADMIN_PASSWORD, h)
    assert not verify_password(ADMIN_PASSWORD + "x", h) and not verify_password("", h)
    assert hash_password(ADMIN_PASSWORD) != h  # salted
    assert not verify_password(ADMIN_PASSWORD, "md5$abc")  # unknown schemes never match


def test_pbkdf2_hashes_are_accepted():
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", ADMIN_PASSWORD.encode(), salt, 200_000)
    stored = f"pbkdf2_sha256$200000${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    admin = AdminPassword(stored)
    assert admin.check(ADMIN_PASSWORD) and not admin.check("wrong")


def test_admin_password_from_environment():
    assert AdminPassword.from_env({}) is None
    plain = AdminPassword.from_env({"RAG_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert plain.check(ADMIN_PASSWORD) and not plain.check("nope") and not plain.check(None)
    assert ADMIN_PASSWORD not in repr(plain) and ADMIN_PASSWORD not in str(vars(plain))  # only the hash is kept
    hashed = AdminPassword.from_env({"RAG_ADMIN_PASSWORD_HASH": hash_password("another-secret"),
                                     "RAG_ADMIN_PASSWORD": ADMIN_PASSWORD})  # the hash wins
    assert hashed.check("another-secret") and not hashed.check(ADMIN_PASSWORD)
    with pytest.raises(AuthConfigError, match="RAG_ADMIN_PASSWORD_HASH"):
        AdminPassword.from_env({"RAG_ADMIN_PASSWORD_HASH": "not-a-hash"})
    with pytest.raises(AuthConfigError, match="至少 8 个字符"):
        AdminPassword.from_env({"RAG_ADMIN_PASSWORD": "short"})


def test_login_throttle():
    t = LoginThrottle(limit=3, window=60)
    for _ in range(3):
        assert not t.blocked("1.2.3.4")
        t.failed("1.2.3.4")
    assert t.blocked("1.2.3.4") and not t.blocked("5.6.7.8")
    t.succeeded("1.2.3.4")
    assert not t.blocked("1.2.3.4")


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True),
                                           ("::1", True), ("[::1]", True), ("0.0.0.0", False), ("::", False),
                                           ("192.168.1.10", False), ("example.com", False), ("", False)])
def test_loopback_addresses(host, loopback):
    assert auth.is_loopback(host) is loopback


def test_exposure_check():
    auth.check_exposure("127.0.0.1", None)
    auth.check_exposure("0.0.0.0", AdminPassword(hash_password(ADMIN_PASSWORD)))
    with pytest.raises(auth.ExposureError) as e:
        auth.check_exposure("0.0.0.0", None)
    assert "RAG_ADMIN_PASSWORD_HASH" in str(e.value) and "RAG_ADMIN_PASSWORD" in str(e.value)


# --------------------------------------------------------------------------- API keys


def test_keys_are_stored_hashed_and_shown_once(tmp_path):
    store = KeyStore(tmp_path / "api_keys.json")
    key, token = store.create("客服系统", "ask")
    admin, admin_token = store.create("运维", "admin")
    assert token.startswith("sk-rag-") and len(token) > 40 and token != admin_token
    raw = store.path.read_text(encoding="utf-8")
    assert token not in raw and admin_token not in raw  # only digests
    assert auth.token_digest(token) in raw
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.authenticate(token) == key and store.authenticate(admin_token).role == "admin"
    assert store.authenticate(token + "x") is None and store.authenticate("") is None
    assert [k.id for k in store.list()] == [key.id, admin.id]
    assert all(token not in json.dumps(k.public()) for k in store.list())


def test_revoke_and_changes_seen_by_a_running_server(tmp_path):
    server_side = KeyStore(tmp_path / "api_keys.json")
    cli_side = KeyStore(tmp_path / "api_keys.json")
    assert server_side.authenticate("sk-rag-nothing") is None  # no file yet
    key, token = cli_side.create("", "admin")
    assert server_side.authenticate(token) == key  # picked up without restart
    cli_side.revoke(key.id)
    assert server_side.authenticate(token) is None
    assert server_side.list()[0].revoked
    with pytest.raises(AuthConfigError, match="没有编号为"):
        cli_side.revoke("key_missing")
    with pytest.raises(AuthConfigError, match="未知的角色"):
        cli_side.create("", "root")


def test_damaged_key_file_is_a_clear_error(tmp_path):
    path = tmp_path / "api_keys.json"
    path.write_text("{broken", encoding="utf-8")
    with pytest.raises(AuthConfigError, match="已损坏"):
        KeyStore(path).authenticate("sk-rag-x")
    path.write_text('{"keys": 3}', encoding="utf-8")
    with pytest.raises(AuthConfigError, match="格式不对"):
        KeyStore(path).list()


def test_rag_keys_commands(tmp_path, capsys):
    index = tmp_path / "index"
    assert rag_main(["keys", "create", "--role", "admin", "--name", "运维脚本", "--index", str(index)]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("sk-rag-") and "只显示这一次" in out.err and token not in out.err
    assert (index / "api_keys.json").exists()
    assert rag_main(["keys", "list", "--index", str(index)]) == 0
    listed = capsys.readouterr().out
    assert "admin" in listed and "运维脚本" in listed and token not in listed and "有效" in listed
    kid = listed.split("\t")[0]
    assert rag_main(["keys", "revoke", kid, "--index", str(index)]) == 0
    assert "已吊销" in capsys.readouterr().err
    assert rag_main(["keys", "list", "--json", "--index", str(index)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked"]
    assert rag_main(["keys", "revoke", "key_nope", "--index", str(index)]) == 2
    assert "没有编号为 key_nope" in capsys.readouterr().err


def test_rag_hash_password_reads_stdin():
    out = subprocess.run([sys.executable, "-m", "rag.cli", "hash-password"], input=ADMIN_PASSWORD + "\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    stored = out.stdout.strip()
    assert verify_password(ADMIN_PASSWORD, stored) and "RAG_ADMIN_PASSWORD_HASH" in out.stderr
    short = subprocess.run([sys.executable, "-m", "rag.cli", "hash-password"], input="abc\n",
                           capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "至少 8 个字符" in short.stderr


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_ADMIN_")}
    env.update(extra)
    return env


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7"])
def test_serve_on_public_address_without_admin_password_refuses(tmp_path, host):
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "rag.cli", "serve", "--host", host, "--port", "9",
                          "--index", str(tmp_path / "index")], capture_output=True, text=True, timeout=120,
                         env=_clean_env())
    assert out.returncode == 2, out.stdout + out.stderr
    assert "RAG_ADMIN_PASSWORD_HASH" in out.stderr and "RAG_ADMIN_PASSWORD" in out.stderr
    assert f"拒绝在 {host} 上启动" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "index").exists()  # refused before building anything
    assert time.monotonic() - t0 < 60


def test_serve_with_a_bad_password_setting_refuses(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rag.cli", "serve", "--host", "0.0.0.0", "--port", "9",
                          "--index", str(tmp_path / "index")], capture_output=True, text=True, timeout=120,
                         env=_clean_env(RAG_ADMIN_PASSWORD="1234"))
    assert out.returncode == 2 and "至少 8 个字符" in out.stderr and "Traceback" not in out.stderr


# --------------------------------------------------------------------------- the web app's handlers


@pytest.fixture(scope="module")
def protected(shipped_settings, tmp_path_factory):
    """A running server (web app + API) on a private corpus/index, with an administrator password."""
    from ui.server import serve

    settings = private_kb(shipped_settings, tmp_path_factory.mktemp("auth-kb"))
    running = serve(settings, port=free_port(), block=False, admin=AdminPassword(hash_password(ADMIN_PASSWORD)))
    yield running, settings
    running.close()


class GradioSession:
    """Calls the page's event handlers over Gradio's HTTP queue, as a script could."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        self.session = uuid.uuid4().hex[:12]
        cfg = json.load(urllib.request.urlopen(f"{self.base}/config"))
        self.fns = {d["api_name"]: d["id"] for d in cfg["dependencies"]}

    def call(self, api_name: str, data: list) -> list:
        ok, out = self.try_call(api_name, data)
        assert ok, out
        return out

    def try_call(self, api_name: str, data: list) -> tuple[bool, list | str]:
        """(True, outputs) or (False, Gradio's error message)."""
        body = json.dumps({"data": data, "event_data": None, "fn_index": self.fns[api_name], "trigger_id": None,
                           "session_hash": self.session}).encode()
        req = urllib.request.Request(f"{self.base}/gradio_api/queue/join", data=body,
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        with urllib.request.urlopen(f"{self.base}/gradio_api/queue/data?session_hash={self.session}",
                                    timeout=180) as stream:
            for line in stream:
                line = line.decode("utf-8").strip()
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed":
                        if not msg.get("success"):
                            return False, str(msg.get("output", {}).get("error"))
                        return True, msg["output"]["data"]
        raise AssertionError("no result")


def _gradio_upload(base: str, name: str, data: bytes) -> dict:
    """Upload a file to Gradio's upload route (anyone can), returning the FileData the page would send."""
    import httpx

    r = httpx.post(f"{base.rstrip('/')}/gradio_api/upload", files={"files": (name, data, "text/markdown")}, timeout=60)
    r.raise_for_status()
    path = r.json()[0]
    return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


NEW_DOC = "---\ntitle: 琥珀猫砂售后\nkind: guide\n---\n# 琥珀猫砂售后\n\n## 琥珀猫砂结块\n\n琥珀猫砂结块不良可在七日内申请琥珀猫砂换货。\n"


def test_handlers_refuse_a_session_without_login(protected):
    from rag.index import current_version

    running, settings = protected
    version = current_version(settings.index_dir)
    files = sorted(p.name for p in settings.corpus_dir.rglob("*") if p.is_file())
    s = GradioSession(running.url)
    status, table, choices, summary = s.call("rebuild", [None])
    assert "请先以管理员身份登录" in status and table["value"]["data"] == [] and choices["choices"] == []
    upload = _gradio_upload(running.url, "amber.md", NEW_DOC.encode())
    status, *_ = s.call("upload", [[upload], None])
    assert "请先以管理员身份登录" in status
    assert not Path(upload["path"]).exists()  # the stranger's upload is not kept in the temp folder either
    ok, out = s.try_call("delete", ["laws/consumer-protection-law.md", None])
    # Gradio itself refuses a file that is not among this session's choices (none before login);
    # a value that passed would meet the handler's own check.
    assert not ok and "not in the list of choices" in out
    assert "请先以管理员身份登录" in running.app.delete("laws/consumer-protection-law.md", None)[0]
    view = s.call("kb_view", [None])
    assert view[0]["value"]["data"] == []  # the document list is not shown either
    # A wrong password does not log in; the handlers still refuse.
    out = s.call("login", ["guess-123", None])
    assert "管理员密码不正确" in out[4] and out[2]["visible"] is False
    assert "请先以管理员身份登录" in s.call("rebuild", [None])[0]
    assert current_version(settings.index_dir) == version
    assert sorted(p.name for p in settings.corpus_dir.rglob("*") if p.is_file()) == files


def test_login_opens_the_knowledge_base_for_that_session_only(protected):
    running, settings = protected
    admin = GradioSession(running.url)
    out = admin.call("login", [ADMIN_PASSWORD, None])
    assert out[1]["visible"] is False and out[2]["visible"] is True  # login box hidden, management shown
    assert len(out[5]["value"]["data"]) > 10  # the document list
    upload = _gradio_upload(running.url, "amber.md", NEW_DOC.encode())
    status, table, *_ = admin.call("upload", [[upload], None])
    assert "已加入：uploads/amber.md" in status and "索引已更新" in status, status
    assert (settings.corpus_dir / "uploads" / "amber.md").exists()
    assert not Path(upload["path"]).exists()  # the temporary copy is gone once used
    other = GradioSession(running.url)  # another browser: not logged in
    ok, out = other.try_call("delete", ["uploads/amber.md", None])
    assert not ok or "请先以管理员身份登录" in out[0]
    assert (settings.corpus_dir / "uploads" / "amber.md").exists()
    status, *_ = admin.call("delete", ["uploads/amber.md", None])
    assert "已删除：uploads/amber.md" in status
    out = admin.call("logout", [None])
    assert out[1]["visible"] is True and "请先以管理员身份登录" in admin.call("rebuild", [None])[0]


def test_too_many_wrong_passwords_are_throttled(protected):
    running, _ = protected
    s = GradioSession(running.url)
    running.app.throttle = LoginThrottle(limit=3, window=60)
    try:
        for _ in range(3):
            assert "管理员密码不正确" in s.call("login", ["wrong-password", None])[4]
        assert "尝试次数过多" in s.call("login", [ADMIN_PASSWORD, None])[4]  # even the right one, for now
    finally:
        running.app.throttle = LoginThrottle()


def test_upload_over_the_limit_is_refused_by_the_web_server(protected, tmp_path):
    """Gradio's upload route refuses a 60 MB file (limit: Settings.max_upload_bytes, 5 MB)."""
    import httpx

    running, settings = protected
    big = tmp_path / "big.txt"
    with open(big, "wb") as fh:
        fh.truncate(60 * 1024 * 1024)
    with open(big, "rb") as fh:
        r = httpx.post(f"{running.url}gradio_api/upload", files={"files": ("big.txt", fh, "text/plain")}, timeout=120)
    assert r.status_code == 413, r.text
    assert settings.max_upload_bytes == 5 * 1024 * 1024


def test_uploads_left_in_the_temp_folder_are_deleted_when_the_server_stops(shipped_settings):
    """A file uploaded to Gradio but never used (e.g. by a visitor who is not logged in) does not
    outlive the server."""
    import httpx

    from ui.server import serve

    running = serve(shipped_settings, port=free_port(), block=False, admin=None)
    try:
        r = httpx.post(f"{running.url}gradio_api/upload", files={"files": ("stray.md", b"# x\n\ny", "text/markdown")})
        path = Path(r.json()[0])
        assert path.exists()
    finally:
        running.close()
    assert not path.exists()
