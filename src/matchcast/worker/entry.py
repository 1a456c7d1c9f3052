"""The worker app for the ``celery`` command line (``celery -A matchcast.worker.entry:app flower``).

Settings come from the environment, as for every matchcast command; ``matchcast worker`` does not use this.
"""

from __future__ import annotations

from matchcast.config import get_settings
from matchcast.worker.app import create_app

app = create_app(get_settings())
