"""API keys in the match store's database: only a SHA-256 hash of each token is kept, never the token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, String, func, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from matchcast.data.store import Base, get_engine
from matchcast.errors import ServiceUnavailable


class ApiKey(Base):
    """One API key: its public id, a label, its role and the hash of its secret token."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ApiKeyRow:
    """A stored key as plain data."""

    key_id: str
    name: str
    role: str
    token_hash: str
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, k: ApiKey) -> ApiKeyRow:
        """Copy a mapped row into plain data."""
        created = _utc(k.created_at)
        assert created is not None
        return cls(k.key_id, k.name, k.role, k.token_hash, created, _utc(k.revoked_at))


class ApiKeyStore:
    """Reads and writes the ``api_keys`` table of a match store database."""

    def __init__(self, url: str) -> None:
        self.engine = get_engine(url)
        try:
            ApiKey.__table__.create(self.engine, checkfirst=True)  # type: ignore[attr-defined]
        except SQLAlchemyError:  # another process created it at the same moment
            ApiKey.__table__.create(self.engine, checkfirst=True)  # type: ignore[attr-defined]
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with self._sessions.begin() as s:
            yield s

    def add(self, key_id: str, name: str, role: str, token_hash: str) -> ApiKeyRow:
        """Store a new key."""
        row = ApiKey(key_id=key_id, name=name, role=role, token_hash=token_hash, created_at=datetime.now(UTC))
        with self.session() as s:
            s.add(row)
            s.flush()
            return ApiKeyRow.of(row)

    def get(self, key_id: str) -> ApiKeyRow | None:
        """One key by id, revoked or not."""
        try:
            with self.session() as s:
                k = s.get(ApiKey, key_id)
                return ApiKeyRow.of(k) if k else None
        except OperationalError as exc:
            raise ServiceUnavailable(f"API key store unreachable: {type(exc).__name__}", ["database"]) from exc

    def all(self) -> list[ApiKeyRow]:
        """Every key, oldest first."""
        with self.session() as s:
            return [ApiKeyRow.of(k) for k in s.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.key_id))]

    def count(self) -> int:
        """How many keys were ever created (revoked ones included)."""
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(ApiKey)) or 0)

    def revoke(self, key_id: str) -> ApiKeyRow | None:
        """Mark a key revoked (once; revoking again keeps the first time). None if unknown."""
        with self.session() as s:
            k = s.get(ApiKey, key_id)
            if k is None:
                return None
            if k.revoked_at is None:
                k.revoked_at = datetime.now(UTC)
            s.flush()
            return ApiKeyRow.of(k)
