"""The match store on PostgreSQL: the same ingest, features and queries as on SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from matchcast.config import Settings
from matchcast.data.ingest import bundled_files
from matchcast.schemas import FEATURE_NAMES
from matchcast.service.bootstrap import ingest_files
from matchcast.service.wiring import store_for
from tests.conftest import need, reachable

pytestmark = pytest.mark.integration
ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_url() -> Iterator[str]:
    need("PostgreSQL on 127.0.0.1:5432", reachable("127.0.0.1", 5432))
    name = f"matchcast_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    from matchcast.data.store import get_engine

    get_engine.cache_clear()
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_ingest_and_query_on_postgres(pg_url: str, tmp_path: object) -> None:
    settings = Settings(home=tmp_path, database_url=pg_url)  # type: ignore[arg-type]
    files = [p for p in bundled_files() if p.parent.name == "ligue-1" and p.name >= "season-2324.csv"]
    from datetime import date

    first = ingest_files(settings, files, as_of=date(2026, 4, 1))
    again = ingest_files(settings, files, as_of=date(2026, 4, 1))
    assert first.report.inserted > 800 and first.features_changed == first.report.inserted
    assert (again.report.inserted, again.report.updated, again.features_changed) == (0, 0, 0)
    store = store_for(settings)
    total, rows = store.upcoming(league="ligue-1", limit=5)
    assert total > 0 and [r.date for r in rows] == sorted(r.date for r in rows)
    found = store.get_with_features(rows[0].match_id)
    assert found is not None and len(found[2]) == len(FEATURE_NAMES)


def test_an_old_store_on_postgres_gains_the_new_columns(pg_url: str) -> None:
    from sqlalchemy import inspect

    from matchcast.data.features import refresh_features
    from matchcast.data.store import MatchStore, get_engine
    from tests.unit.test_store_upgrade import make_old_store

    make_old_store(pg_url)
    get_engine.cache_clear()
    store = MatchStore(pg_url)
    assert {"revision", "as_of", "seq"} <= {c["name"] for c in inspect(store.engine).get_columns("match_features")}
    assert refresh_features(store) == 2
    found = store.get_with_features(2)
    assert found is not None and found.revision is not None and str(found.as_of) == "2025-08-15"
    assert store.revisions_since(None)[0] == 1 and store.revisions_since(1) == (1, {})
    get_engine.cache_clear()


def test_leases_on_postgres(pg_url: str) -> None:
    from matchcast.data.store import MatchStore
    from tests.unit.test_leases import check_leases

    check_leases(MatchStore(pg_url))
