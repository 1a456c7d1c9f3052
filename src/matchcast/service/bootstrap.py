"""First-run preparation: load the bundled data and train a first model when store or registry are empty."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from matchcast.config import Settings
from matchcast.data.features import refresh_features
from matchcast.data.ingest import IngestReport, bundled_files, ingest
from matchcast.service.training import TrainResult, train
from matchcast.service.wiring import registry_for, store_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOutcome:
    """An ingestion and the feature rows it changed."""

    report: IngestReport
    features_changed: int


def ingest_files(
    settings: Settings, paths: Sequence[Path] = (), *, league: str | None = None, as_of: date | None = None
) -> IngestOutcome:
    """Ingest ``paths`` (the bundled data when empty), then refresh stored features."""
    store = store_for(settings)
    report = ingest(store, list(paths) or bundled_files(), league=league, as_of=as_of)
    changed = refresh_features(store) if (report.inserted or report.updated or not store.feature_table()) else 0
    return IngestOutcome(report, changed)


def train_model(settings: Settings, *, alias: str | None = None) -> TrainResult:
    """Train on the store and point ``alias`` (the serving alias by default) at the new version."""
    return train(store_for(settings), registry_for(settings), alias=alias or settings.model_alias)


def prepare(settings: Settings) -> tuple[IngestOutcome | None, TrainResult | None]:
    """Ingest the bundled data if the store is empty; train if no version has the serving alias."""
    ingested = None
    if store_for(settings).count() == 0:
        log.info("empty store: ingesting the bundled data as of %s", settings.demo_as_of)
        ingested = ingest_files(settings, as_of=settings.demo_as_of)
    trained = None
    if registry_for(settings).version_of(settings.model_alias) is None:
        log.info("no %r model: training a first one", settings.model_alias)
        trained = train_model(settings)
    return ingested, trained
