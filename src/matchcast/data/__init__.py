"""Match data: the store, ingestion of football-data.co.uk files, and feature building."""
