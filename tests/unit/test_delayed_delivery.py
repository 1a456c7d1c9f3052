"""Native delayed delivery on a cluster: declared once, on the node the consumer is connected to first."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from matchcast.config import Settings
from matchcast.tasks.celery_app import make_celery
from matchcast.worker.delayed_delivery import ClusterDelayedDelivery

NODES = "amqp://u:p@b1:5672//;amqp://u:p@b2:5672//;amqp://u:p@b3//"


class Recording(ClusterDelayedDelivery):
    """Records the nodes it is asked to declare on; ``away`` ones fail as a node cut off would."""

    def __init__(self, away: set[str]) -> None:
        self.away, self.tried = away, []  # type: ignore[var-annotated]

    def _setup_delayed_delivery(self, c: Any, broker_url: str) -> None:
        host = broker_url.split("@")[1].split(":")[0].split("/")[0]
        self.tried.append(host)
        if host in self.away:
            raise TimeoutError("timed out")


def consumer(tmp_path: Path, host: str, port: int | None) -> Any:
    settings = Settings(home=tmp_path, broker_url=NODES, result_backend="redis://127.0.0.1:6379/0")
    return SimpleNamespace(app=make_celery(settings), connection=SimpleNamespace(hostname=host, port=port))


def test_the_consumers_own_node_is_tried_first_then_the_others_in_order(tmp_path: Path) -> None:
    step = Recording(away=set())
    step.start(consumer(tmp_path, "b2", 5672))
    assert step.tried == ["b2"]  # one node that answers is enough: the cluster shares what it declared
    cut = Recording(away={"b3", "b1"})
    cut.start(consumer(tmp_path, "b3", None))  # no port given: the AMQP port
    assert cut.tried == ["b3", "b1", "b2"]
