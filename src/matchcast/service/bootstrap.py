"""First-run preparation: load the bundled data and train a first model when store or registry are empty."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from matchcast.config import CHALLENGER_ALIAS, Settings
from matchcast.data.features import features_stale, refresh_features
from matchcast.data.ingest import IngestReport, bundled_files, ingest
from matchcast.data.teams import load_aliases
from matchcast.service.training import TrainResult, train
from matchcast.service.wiring import registry_for, store_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutcome:
    """An ingestion and the feature rows it changed."""

    report: IngestReport
    features_changed: int


def ingest_files(
    settings: Settings,
    paths: Sequence[Path] = (),
    *,
    league: str | None = None,
    as_of: date | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> IngestOutcome:
    """Ingest ``paths`` (the bundled data when empty), then refresh stored features; ``progress`` is told."""
    store = store_for(settings)
    aliases = load_aliases(settings.team_aliases_path())
    report = ingest(
        store, list(paths) or bundled_files(), league=league, as_of=as_of, aliases=aliases, progress=progress
    )
    changed = 0
    if report.inserted or report.updated or features_stale(store):
        if progress:
            progress("computing features", 0, 1)
        changed = refresh_features(store)
    if progress:
        progress("computing features", 1, 1)
    return IngestOutcome(report, changed)


def train_model(
    settings: Settings, *, alias: str | None = None, progress: Callable[[str, int, int], None] | None = None
) -> TrainResult:
    """Train on the store and point ``alias`` at the new version.

    By default a first model becomes the serving alias (``champion``); later ones become ``challenger``, to be
    promoted with ``matchcast promote`` once they prove better.
    """
    if alias is None:
        serving = registry_for(settings).version_of(settings.model_alias)
        alias = settings.model_alias if serving is None else CHALLENGER_ALIAS
    return train(store_for(settings), registry_for(settings), alias=alias, progress=progress)


def prepare(settings: Settings) -> tuple[IngestOutcome | None, TrainResult | None]:
    """Ingest the bundled data if the store is empty; train if no version has the serving alias."""
    ingested = None
    store = store_for(settings)
    if store.count() == 0:
        log.info("empty store: ingesting the bundled data as of %s", settings.demo_as_of)
        ingested = ingest_files(settings, as_of=settings.demo_as_of)
    elif features_stale(store):  # a store of an earlier version: other features, or rows without revisions
        log.info("stored features are of another version: refreshed %d rows", refresh_features(store))
    trained = None
    if registry_for(settings).version_of(settings.model_alias) is None:
        log.info("no %r model: training a first one", settings.model_alias)
        trained = train_model(settings)
    return ingested, trained
