"""API keys: stored hashed, verified with a short cache, revoked, and the first-start admin key file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from matchcast.config import Settings
from matchcast.data.api_keys import ApiKeyStore
from matchcast.errors import InvalidInput, NotFound
from matchcast.service.auth import (
    TOKEN_RE,
    ApiKeyService,
    bootstrap_admin_key,
    hash_token,
    is_loopback,
    refuse_open_bind,
)


@pytest.fixture
def keys(tmp_path: Path) -> ApiKeyService:
    return ApiKeyService(ApiKeyStore(f"sqlite:///{tmp_path / 'store.db'}"), cache_s=60)


def test_create_returns_a_token_once_and_stores_only_its_hash(keys: ApiKeyService, tmp_path: Path) -> None:
    info, token = keys.create("predict", "dashboard")
    assert TOKEN_RE.fullmatch(token) and token.startswith(f"mc_{info.key_id}_")
    assert (info.role, info.name, info.active) == ("predict", "dashboard", True)
    row = keys.store.get(info.key_id)
    assert row is not None and row.token_hash == hash_token(token) and token not in repr(row)
    assert token.encode() not in (tmp_path / "store.db").read_bytes()
    assert keys.verify(token) == info
    other_info, other = keys.create("admin")
    assert other != token and other_info.key_id != info.key_id
    assert [k.key_id for k in keys.list()] == [info.key_id, other_info.key_id]


@pytest.mark.parametrize(
    "bad",
    ["", "mc_", "Bearer x", "mc_0123456789ab_short", "mc_zzzzzzzzzzzz_" + "a" * 43, "x" * 10_000, "mc_0123456789ab"],
)
def test_malformed_tokens_are_refused_without_a_lookup(keys: ApiKeyService, bad: str) -> None:
    assert keys.cached(bad) == (True, None)
    assert keys.verify(bad) is None


def test_wrong_secret_for_a_real_id_is_refused(keys: ApiKeyService) -> None:
    info, token = keys.create("admin")
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    assert keys.verify(forged) is None
    assert keys.verify(f"mc_{'0' * 12}_{'A' * 43}") is None
    assert keys.verify(token) == info


def test_revoke_is_immediate_here_and_cached_elsewhere(keys: ApiKeyService) -> None:
    info, token = keys.create("predict")
    elsewhere = ApiKeyService(keys.store, cache_s=60)
    uncached = ApiKeyService(keys.store, cache_s=0)
    assert elsewhere.verify(token) == info
    revoked = keys.revoke(info.key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert keys.verify(token) is None  # the revoking process forgets at once
    assert elsewhere.verify(token) == info  # another process trusts its cache for up to cache_s
    assert uncached.verify(token) is None
    assert keys.revoke(info.key_id).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(NotFound):
        keys.revoke("000000000000")


def test_roles_and_names_are_checked(keys: ApiKeyService) -> None:
    with pytest.raises(InvalidInput):
        keys.create("root")
    with pytest.raises(InvalidInput):
        keys.create("predict", "x" * 65)
    with pytest.raises(InvalidInput):
        keys.create("predict", "bad\nname")
    predict, _ = keys.create("predict")
    admin, _ = keys.create("admin")
    assert predict.allows("predict") and not predict.allows("admin")
    assert admin.allows("predict") and admin.allows("admin")


def test_first_start_admin_key_file(keys: ApiKeyService, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = bootstrap_admin_key(keys, home)
    assert first.created and first.token and first.path == home / "admin.key"
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert first.path.read_text().strip() == first.token
    info = keys.verify(first.token)
    assert info is not None and info.role == "admin"
    again = bootstrap_admin_key(keys, home)
    assert not again.created and again.token == first.token and len(keys.list()) == 1
    # A key revoked on purpose is not recreated behind the operator's back.
    keys.revoke(info.key_id)
    after = bootstrap_admin_key(keys, home)
    assert not after.created and after.token is None and "matchcast keys create" in after.note
    assert len(keys.list()) == 1


def test_no_first_start_key_when_keys_exist(keys: ApiKeyService, tmp_path: Path) -> None:
    keys.create("admin", "made by hand")
    found = bootstrap_admin_key(keys, tmp_path / "home")
    assert not found.created and found.token is None and not found.path.exists()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.8.9.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.org", False),
        ("", False),
    ],
)
def test_auth_off_only_on_loopback(host: str, loopback: bool, tmp_path: Path) -> None:
    assert is_loopback(host) is loopback
    off = Settings(home=tmp_path, auth="off")
    if loopback:
        refuse_open_bind(off, host)
    else:
        with pytest.raises(InvalidInput, match="MATCHCAST_AUTH=off"):
            refuse_open_bind(off, host)
    refuse_open_bind(Settings(home=tmp_path), host)  # with keys required any address is fine
