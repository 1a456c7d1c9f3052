"""``python -m matchcast``."""

from matchcast.cli import main

main()
