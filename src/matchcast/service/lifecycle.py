"""Promotion: the ``champion`` alias moves to a candidate only when the candidate is better on the same window."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from matchcast.config import CHALLENGER_ALIAS, Settings
from matchcast.errors import Conflict, ModelNotFound
from matchcast.model.registry import ModelRegistry
from matchcast.service.wiring import registry_for

log = logging.getLogger(__name__)
METRIC = "heldout_rps"


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` did."""

    version: str
    previous: str | None
    candidate_rps: float | None
    champion_rps: float | None
    forced: bool


def serve(registry: ModelRegistry, alias: str, version: str, previous: str | None, tags: dict[str, str]) -> None:
    """Point the serving ``alias`` at ``version`` and record it on the version (``tags`` too); a version that was
    the challenger stops being one. Workers switch at their next refresh (``MATCHCAST_MODEL_REFRESH_S``)."""
    registry.set_alias(alias, version)
    registry.tag_version(
        version, {"promoted_at": datetime.now(UTC).isoformat(), "promoted_from": str(previous), **tags}
    )
    if registry.version_of(CHALLENGER_ALIAS) == version:
        registry.delete_alias(CHALLENGER_ALIAS)


def promote(settings: Settings, version: str | None = None, *, force: bool = False) -> Promotion:
    """Point the serving alias at ``version`` (default: the ``challenger``) if its held-out RPS beats the champion's
    on the same held-out season; ``force`` skips the comparison (and says so in the version's tags and the log)."""
    registry = registry_for(settings)
    alias = settings.model_alias
    version = version or registry.version_of(CHALLENGER_ALIAS)
    if version is None:
        raise ModelNotFound("no candidate: train one first (`matchcast train` registers it as challenger)")
    candidate = registry.info(version=version)
    current = registry.version_of(alias)
    if current == candidate.version:
        raise Conflict(f"version {version} is already {alias}")
    champion = registry.info(version=current) if current else None
    c_rps, ch_rps = candidate.metrics.get(METRIC), champion.metrics.get(METRIC) if champion else None
    if champion is not None and not force:
        c_window, ch_window = candidate.tags.get("held_out_season"), champion.tags.get("held_out_season")
        if c_rps is None or ch_rps is None or c_window != ch_window:
            raise Conflict(
                f"cannot compare version {version} (held out {c_window}) with {alias} version {current} "
                f"(held out {ch_window}) on the same window; use --force to promote anyway"
            )
        if c_rps >= ch_rps:
            raise Conflict(
                f"version {version} does not beat {alias} version {current} on {c_window}: "
                f"RPS {c_rps:.5f} vs {ch_rps:.5f}"
            )
    serve(registry, alias, candidate.version, current, {"promotion_forced": str(force)})
    log.warning(
        "promoted version %s to %s (was %s)%s",
        candidate.version,
        alias,
        current,
        " FORCED without comparison" if force else "",
    )
    return Promotion(candidate.version, current, c_rps, ch_rps, force)
