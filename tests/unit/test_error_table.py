"""One table of errors: each ``type`` slug carries its HTTP status, in the API and back from a worker."""

from __future__ import annotations

import pytest

from matchcast.api.errors import answer_of
from matchcast.errors import WIRE, MatchcastError, MatchNotFound, PredictionFailed, ServiceUnavailable, from_wire
from matchcast.tasks.status import answer_error, outcome


def every_error() -> list[type[MatchcastError]]:
    return sorted(set(WIRE.values()), key=lambda c: c.type)


def test_slugs_are_unique_and_every_error_has_a_status() -> None:
    errors = every_error()
    assert len({c.type for c in errors}) == len(errors) >= 18
    for cls in errors:
        assert 400 <= cls.status <= 599, cls


@pytest.mark.parametrize("cls", every_error(), ids=lambda c: c.type)
def test_an_error_from_a_worker_answers_as_if_the_api_raised_it(cls: type[MatchcastError]) -> None:
    for name in (cls.type, cls.__name__):
        exc = from_wire(name, "what went wrong")
        assert type(exc) is cls and exc.detail == "what went wrong"
        status, body, _ = answer_of(exc)
        assert status == cls.status and body["type"] == cls.type and body["detail"] == "what went wrong"


def test_a_celery_failure_record_maps_back_by_its_exception_type() -> None:
    meta = {"status": "FAILURE", "result": {"exc_type": "MatchNotFound", "exc_message": ["no match with match_id=7"]}}
    with pytest.raises(MatchNotFound) as caught:
        outcome(meta)
    assert caught.value.type == "match_not_found" and caught.value.detail == "no match with match_id=7"
    assert answer_of(caught.value)[0] == 404
    foreign = {"status": "FAILURE", "result": {"exc_type": "ZeroDivisionError", "exc_message": ["division by zero"]}}
    with pytest.raises(PredictionFailed, match="ZeroDivisionError: division by zero"):
        outcome(foreign)


def test_a_grouped_answer_maps_back_too() -> None:
    assert isinstance(answer_error({"error": "MatchNotFound", "detail": "no match with match_id=7"}), MatchNotFound)
    assert isinstance(answer_error({"error": "service_unavailable", "detail": "x"}), ServiceUnavailable)
    assert answer_of(answer_error({"error": "service_unavailable", "detail": "x"}))[1]["missing"] == []
    assert type(answer_error({"error": "Whatever", "detail": "x"})) is PredictionFailed
    assert type(answer_error(["not", "a", "dict"])) is PredictionFailed
