"""API keys: create, list, revoke, verify (with a short in-process cache), and the first-start admin key.

A token reads ``mc_<id>_<secret>``: ``<id>`` (12 hex digits) names the key in listings and logs, ``<secret>`` is
256 random bits. Only the SHA-256 of the whole token is stored; the token is shown once, when created.
Roles: ``predict`` (predictions, listings, task status) and ``admin`` (everything, including changes of state).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from matchcast.config import Settings
from matchcast.data.api_keys import ApiKeyRow, ApiKeyStore
from matchcast.errors import InvalidInput, NotFound

Role = Literal["predict", "admin"]
ROLES: tuple[Role, ...] = ("predict", "admin")
TOKEN_PREFIX = "mc_"
TOKEN_RE = re.compile(r"^mc_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
NAME_RE = re.compile(r"^[\w .,@:/()+-]{1,64}$")
ADMIN_KEY_FILE = "admin.key"


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKeyInfo:
    """What is known about a key, never its token."""

    key_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None

    def allows(self, role: Role) -> bool:
        """An admin key may do everything; a predict key only what needs ``predict``."""
        return self.role == "admin" or self.role == role

    @classmethod
    def of(cls, row: ApiKeyRow) -> ApiKeyInfo:
        """From a stored row (its hash left behind)."""
        role: Role = "admin" if row.role == "admin" else "predict"
        return cls(row.key_id, row.name, role, row.created_at, row.revoked_at)


class ApiKeyService:
    """Keys in the store; verification cached for ``cache_s`` seconds per process (revocation takes that long)."""

    def __init__(self, store: ApiKeyStore, cache_s: float = 10.0, max_cached: int = 10_000) -> None:
        self.store, self.cache_s, self.max_cached = store, cache_s, max_cached
        self._cache: dict[str, tuple[float, ApiKeyInfo | None]] = {}
        self._lock = threading.Lock()

    def create(self, role: str, name: str | None = None) -> tuple[ApiKeyInfo, str]:
        """A new key of ``role``: its info and its token (shown this once, stored only hashed)."""
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        name = (name or f"{role} key").strip()
        if not NAME_RE.fullmatch(name):
            raise InvalidInput("name: 1 to 64 letters, digits, spaces or . , @ : / ( ) + - _")
        key_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        row = self.store.add(key_id, name, role, hash_token(token))
        return ApiKeyInfo.of(row), token

    def list(self) -> list[ApiKeyInfo]:
        """Every key, revoked ones included, oldest first."""
        return [ApiKeyInfo.of(r) for r in self.store.all()]

    def revoke(self, key_id: str) -> ApiKeyInfo:
        """Revoke a key (at once in this process, within ``cache_s`` in others)."""
        row = self.store.revoke(key_id.strip())
        if row is None:
            raise NotFound(f"no API key with id {key_id!r}")
        with self._lock:
            self._cache.clear()
        return ApiKeyInfo.of(row)

    def cached(self, token: str) -> tuple[bool, ApiKeyInfo | None]:
        """(True, the verdict) when ``token`` was verified less than ``cache_s`` ago; (False, None) otherwise.

        Malformed tokens get their verdict (None) here without any lookup."""
        if not TOKEN_RE.fullmatch(token):
            return True, None
        with self._lock:
            hit = self._cache.get(hash_token(token))
        if hit and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def verify(self, token: str) -> ApiKeyInfo | None:
        """The active key this token belongs to, or None (malformed, unknown, wrong secret, revoked)."""
        known, info = self.cached(token)
        if known:
            return info
        m = TOKEN_RE.fullmatch(token)
        assert m is not None
        digest = hash_token(token)
        row = self.store.get(m.group(1))
        found = None
        if row is not None and hmac.compare_digest(row.token_hash, digest) and row.revoked_at is None:
            found = ApiKeyInfo.of(row)
        if self.cache_s > 0:
            with self._lock:
                if len(self._cache) >= self.max_cached:
                    self._cache.clear()
                self._cache[digest] = (time.monotonic() + self.cache_s, found)
        return found


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_open_bind(settings: Settings, host: str) -> None:
    """With ``MATCHCAST_AUTH=off`` the API may only listen on a loopback address."""
    if settings.auth == "off" and not is_loopback(host):
        raise InvalidInput(
            f"MATCHCAST_AUTH=off serves without API keys, so it only listens on 127.0.0.1; refusing host {host!r} "
            "(create keys with `matchcast keys create` and leave MATCHCAST_AUTH at `required`)"
        )


@dataclass(frozen=True)
class AdminKeyFile:
    """The first-start admin key: where its token is kept, the token when it was created now, and a note."""

    path: Path
    token: str | None
    created: bool
    note: str


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), replacing any earlier file atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def bootstrap_admin_key(keys: ApiKeyService, home: Path) -> AdminKeyFile:
    """On the first start (no key was ever created) create an admin key and keep its token in
    ``home/admin.key`` (mode 0600). Later starts reuse that file while its key is valid, and never recreate a
    key that was revoked on purpose."""
    path = home / ADMIN_KEY_FILE
    if path.exists():
        token = path.read_text().strip()
        info = keys.verify(token)
        if info is not None and info.role == "admin":
            with contextlib.suppress(OSError):
                path.chmod(0o600)
            return AdminKeyFile(path, token, False, f"admin key {info.key_id} in {path}")
    if keys.store.count() == 0:
        home.mkdir(parents=True, exist_ok=True)
        info, token = keys.create("admin", name="first start (matchcast up)")
        _write_private(path, token + "\n")
        return AdminKeyFile(path, token, True, f"created admin key {info.key_id}; its token is in {path} (0600)")
    return AdminKeyFile(
        path, None, False, f"API keys exist but none is in {path}; create one with `matchcast keys create`"
    )


def key_service_for(settings: Settings) -> ApiKeyService:
    """The key service on the match store these settings name."""
    return ApiKeyService(ApiKeyStore(settings.resolved_database_url()), settings.api_key_cache_s)
