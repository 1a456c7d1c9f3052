"""A broker cluster as a failover list: its nodes one by one, named without credentials."""

from __future__ import annotations

from pathlib import Path

from matchcast.config import Settings
from matchcast.tasks.cluster import broker_urls, node_label


def test_a_failover_list_is_split_into_its_nodes() -> None:
    url = "amqp://mc:pw@broker-1:5672//;amqp://mc:pw@broker-2:5673//; amqp://mc:pw@broker-3//"
    assert [node_label(u) for u in broker_urls(url)] == ["broker-1:5672", "broker-2:5673", "broker-3:5672"]
    assert broker_urls("redis://127.0.0.1:6390/0") == ["redis://127.0.0.1:6390/0"]


def test_artifacts_stay_with_a_tracking_server(tmp_path: Path) -> None:
    # A tracking server (mlflow server --serve-artifacts) keeps the artifacts: no host's disk is named.
    assert Settings(home=tmp_path, mlflow_tracking_uri="http://registry:5000").artifact_location() is None
    assert Settings(home=tmp_path).artifact_location() == (tmp_path / "mlartifacts").as_uri()
