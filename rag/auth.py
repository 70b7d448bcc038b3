"""Who may do what on the server: the administrator password and HTTP API keys.

Why hashed: the password comes from configuration (``RAG_ADMIN_PASSWORD``, or
better its scrypt hash in ``RAG_ADMIN_PASSWORD_HASH`` from ``rag hash-password``)
and is kept in memory only as a salted scrypt hash; API keys are random tokens
shown once by ``rag keys create`` and stored as their SHA-256 digest in a small
JSON file beside the index (``<index>/api_keys.json``, mode 0600). A copied key
file therefore lets no one in, and comparisons use ``hmac.compare_digest``.

Roles: an ``ask`` key may ask questions (needed only when
``RAG_API_REQUIRE_KEY=1``); an ``admin`` key may also list, upload and delete
documents and rebuild the index. Neither tokens nor passwords are ever logged.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PASSWORD_ENV = "RAG_ADMIN_PASSWORD"
PASSWORD_HASH_ENV = "RAG_ADMIN_PASSWORD_HASH"
ROLES = ("ask", "admin")
TOKEN_PREFIX = "sk-rag-"
KEYS_FILE_NAME = "api_keys.json"
MIN_PASSWORD_CHARS = 8

# scrypt cost: ~50 ms and 16 MiB per check on one core, enough to make guessing slow.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2 ** 14, 8, 1


class AuthConfigError(ValueError):
    """The administrator password or key file is misconfigured; the message is Chinese."""


class ExposureError(AuthConfigError):
    """Serving on a non-loopback address without an administrator password."""


def is_loopback(host: str) -> bool:
    host = (host or "").strip().strip("[]").lower()
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or 0.0.0.0-like wildcard: reachable by others


def check_exposure(host: str, admin: "AdminPassword | None") -> None:
    """Refuse to serve on an address others can reach while administration is unprotected."""
    if admin is None and not is_loopback(host):
        raise ExposureError(
            f"拒绝在 {host} 上启动：这个地址其他人也能访问，但没有设置管理员密码，任何人都能修改知识库。"
            f"请设置环境变量 {PASSWORD_HASH_ENV}（用 rag hash-password 生成）或 {PASSWORD_ENV}，"
            "或者只在本机地址 127.0.0.1 上启动。")


# --------------------------------------------------------------------------- passwords


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt>$<hash>`` (base64), the format RAG_ADMIN_PASSWORD_HASH takes."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                            maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (scrypt$… or pbkdf2_sha256$iterations$salt$hash)."""
    try:
        scheme, *parts = stored.split("$")
        if scheme == "scrypt":
            n, r, p, salt, want = int(parts[0]), int(parts[1]), int(parts[2]), parts[3], parts[4]
            got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=n, r=r, p=p,
                                 maxmem=256 * 1024 * 1024, dklen=len(base64.b64decode(want)))
        elif scheme == "pbkdf2_sha256":
            iterations, salt, want = int(parts[0]), parts[1], parts[2]
            got = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), base64.b64decode(salt), iterations,
                                      dklen=len(base64.b64decode(want)))
        else:
            return False
        return hmac.compare_digest(got, base64.b64decode(want))
    except (ValueError, IndexError, TypeError):
        return False


def _check_hash_format(stored: str) -> None:
    scheme = stored.split("$", 1)[0]
    parts = stored.split("$")
    ok = (scheme == "scrypt" and len(parts) == 6) or (scheme == "pbkdf2_sha256" and len(parts) == 4)
    if ok:
        try:
            [int(x) for x in parts[1:(4 if scheme == "scrypt" else 2)]]
            [base64.b64decode(x, validate=True) for x in parts[-2:]]
        except ValueError:
            ok = False
    if not ok:
        raise AuthConfigError(f"{PASSWORD_HASH_ENV} 的格式不对：请用 rag hash-password 生成（形如 scrypt$16384$8$1$…$…）")


class AdminPassword:
    """The configured administrator password, held only as a hash."""

    def __init__(self, stored_hash: str):
        _check_hash_format(stored_hash)
        self._hash = stored_hash

    def __repr__(self) -> str:
        return "AdminPassword(<hash>)"

    def check(self, password: str | None) -> bool:
        return bool(password) and verify_password(str(password), self._hash)

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "AdminPassword | None":
        """From RAG_ADMIN_PASSWORD_HASH, else RAG_ADMIN_PASSWORD (hashed at once); None if neither is set."""
        env = os.environ if environ is None else environ
        stored = (env.get(PASSWORD_HASH_ENV) or "").strip()
        if stored:
            return cls(stored)
        plain = env.get(PASSWORD_ENV) or ""
        if not plain:
            return None
        if len(plain) < MIN_PASSWORD_CHARS:
            raise AuthConfigError(f"{PASSWORD_ENV} 太短：管理员密码至少 {MIN_PASSWORD_CHARS} 个字符")
        return cls(hash_password(plain))


class LoginThrottle:
    """At most ``limit`` failed logins per client within ``window`` seconds."""

    def __init__(self, limit: int = 5, window: float = 60.0):
        self.limit, self.window = limit, window
        self._fails: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque:
        q = self._fails.setdefault(client, deque())
        while q and now - q[0] > self.window:
            q.popleft()
        return q

    def blocked(self, client: str) -> bool:
        with self._lock:
            return len(self._recent(client, time.monotonic())) >= self.limit

    def failed(self, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(client, now).append(now)
            if len(self._fails) > 10_000:  # forget idle clients
                for c in [c for c, q in self._fails.items() if not q]:
                    del self._fails[c]

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._fails.pop(client, None)


# --------------------------------------------------------------------------- API keys


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: str
    prefix: str  # the first characters of the token, to recognise it in a list
    created: str
    revoked: str | None = None

    def public(self) -> dict:
        return {"id": self.id, "name": self.name, "role": self.role, "prefix": self.prefix,
                "created": self.created, "revoked": self.revoked}


class KeyStore:
    """API keys in a JSON file: ``{"keys": [{id, name, role, sha256, prefix, created, revoked}]}``.

    The file is re-read when it changes on disk, so ``rag keys create`` / ``revoke`` take
    effect on a running server at its next request."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._cache: tuple[tuple, dict[str, tuple[str, ApiKey]]] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings) -> "KeyStore":
        path = getattr(settings, "api_keys_file", None) or Path(settings.index_dir) / KEYS_FILE_NAME
        return cls(path)

    # -- file
    def _read(self) -> list[dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, UnicodeDecodeError):
            raise AuthConfigError(f"API 密钥文件 {self.path} 已损坏，无法读取") from None
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise AuthConfigError(f"API 密钥文件 {self.path} 的格式不对")
        return keys

    def _write(self, keys: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"version": 1, "keys": keys}, fh, ensure_ascii=False, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    @contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _key(d: dict) -> ApiKey:
        return ApiKey(id=str(d.get("id")), name=str(d.get("name", "")), role=str(d.get("role")),
                      prefix=str(d.get("prefix", "")), created=str(d.get("created", "")), revoked=d.get("revoked"))

    # -- commands
    def create(self, name: str, role: str) -> tuple[ApiKey, str]:
        """A new key; returns it and the token, which is shown once and stored only as a digest."""
        if role not in ROLES:
            raise AuthConfigError(f"未知的角色“{role}”，应为 ask 或 admin")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked():
            keys = self._read()
            ids = {k.get("id") for k in keys}
            kid = "key_" + secrets.token_hex(4)
            while kid in ids:
                kid = "key_" + secrets.token_hex(4)
            record = {"id": kid, "name": name or "", "role": role, "sha256": token_digest(token),
                      "prefix": token[:len(TOKEN_PREFIX) + 4], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                      "revoked": None}
            self._write(keys + [record])
        return self._key(record), token

    def list(self) -> list[ApiKey]:
        return [self._key(k) for k in self._read()]

    def revoke(self, key_id: str) -> ApiKey:
        with self._locked():
            keys = self._read()
            for k in keys:
                if k.get("id") == key_id:
                    if not k.get("revoked"):
                        k["revoked"] = time.strftime("%Y-%m-%dT%H:%M:%S")
                        self._write(keys)
                    return self._key(k)
        raise AuthConfigError(f"没有编号为 {key_id} 的 API 密钥（rag keys list 列出全部）")

    # -- checking
    def authenticate(self, token: str | None) -> ApiKey | None:
        """The live key whose digest matches ``token``, else None."""
        if not token:
            return None
        table = self._table()
        hit = table.get(token_digest(token))
        if hit is None:
            return None
        stored, key = hit
        if not hmac.compare_digest(stored, token_digest(token)) or key.revoked or key.role not in ROLES:
            return None
        return key

    def _table(self) -> dict[str, tuple[str, ApiKey]]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if self._cache is None or self._cache[0] != stamp:
                keys = self._read() if stamp is not None else []
                table = {str(k.get("sha256")): (str(k.get("sha256")), self._key(k)) for k in keys}
                self._cache = (stamp, table)
            return self._cache[1]


# --------------------------------------------------------------------------- commands


def keys_command(args, settings) -> int:
    """``rag keys create|list|revoke``: the token is printed once, on stdout; the rest on stderr."""
    store = KeyStore.for_settings(settings)
    if args.action == "create":
        key, token = store.create(args.name or "", args.role)
        print(f"已创建 {key.role} 密钥 {key.id}（{key.name or '无备注'}），保存在 {store.path}（只存摘要）。"
              "下面的密钥只显示这一次，请立即妥善保存：", file=sys.stderr)
        print(token)
        return 0
    if args.action == "list":
        keys = store.list()
        if getattr(args, "json", False):
            print(json.dumps([k.public() for k in keys], ensure_ascii=False, indent=1))
            return 0
        if not keys:
            print(f"还没有 API 密钥（{store.path}）。用 rag keys create --role ask|admin 创建。", file=sys.stderr)
            return 0
        for k in keys:
            state = f"已吊销 {k.revoked}" if k.revoked else "有效"
            print(f"{k.id}\t{k.role}\t{k.prefix}…\t{k.created}\t{state}\t{k.name}")
        return 0
    if args.action == "revoke":
        if not args.key_id:
            raise AuthConfigError("请给出要吊销的密钥编号，例如：rag keys revoke key_1a2b3c4d（rag keys list 列出全部）")
        key = store.revoke(args.key_id)
        print(f"已吊销 {key.id}（{key.role}，{key.name or '无备注'}）；正在运行的服务下一次请求起就拒绝它。",
              file=sys.stderr)
        return 0
    raise AuthConfigError(f"未知的操作：{args.action}")


def hash_password_command(args) -> int:
    """``rag hash-password``: read the password (twice from a terminal, else one line of stdin)
    and print the value for RAG_ADMIN_PASSWORD_HASH."""
    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("管理员密码：")
        if getpass.getpass("再输入一次：") != first:
            raise AuthConfigError("两次输入的密码不一致")
    else:
        first = sys.stdin.readline().rstrip("\r\n")
    if len(first) < MIN_PASSWORD_CHARS:
        raise AuthConfigError(f"管理员密码至少 {MIN_PASSWORD_CHARS} 个字符")
    print(hash_password(first))
    print(f"把上面这一行设为环境变量 {PASSWORD_HASH_ENV} 的值（例如 export {PASSWORD_HASH_ENV}='…'）。",
          file=sys.stderr)
    return 0


__all__ = ["check_exposure", "is_loopback", "ExposureError", "keys_command", "hash_password_command", "AdminPassword", "AuthConfigError", "ApiKey", "KeyStore", "LoginThrottle", "hash_password",
           "verify_password", "PASSWORD_ENV", "PASSWORD_HASH_ENV", "ROLES"]
