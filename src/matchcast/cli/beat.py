"""``matchcast beat``: a real ``celery beat`` sending the schedule of ``tasks/schedule.py``.

Its schedule file (when each entry last ran) is kept under ``MATCHCAST_HOME/beat``, so a restarted beat neither
runs everything at once nor forgets an entry. Run one beat per deployment.
"""

from __future__ import annotations

from matchcast.config import Settings
from matchcast.tasks.celery_app import make_celery
from matchcast.tasks.schedule import beat_schedule


def run_beat(settings: Settings) -> None:
    """Run celery beat in this process until it is stopped (SIGTERM or Ctrl-C)."""
    app = make_celery(settings, publisher=True)
    app.conf.beat_schedule = beat_schedule(settings)
    # Wake up often enough for short intervals (tests, replays), at most once a minute otherwise.
    intervals = [float(e["schedule"]) for e in app.conf.beat_schedule.values()]
    app.conf.beat_max_loop_interval = max(1.0, min([60.0, *intervals]))
    path = settings.beat_schedule_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    app.Beat(schedule=str(path), loglevel=settings.log_level.upper(), quiet=True).run()
