"""matchcast: football match outcome predictions, served synchronously and asynchronously."""

__version__ = "0.1.0"
