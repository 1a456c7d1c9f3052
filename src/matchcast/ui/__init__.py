"""The Streamlit UI: a separate program that talks to the API over HTTP only.

Nothing in matchcast imports this package, and it imports nothing of matchcast but itself (both checked by
``lint-imports``). ``matchcast ui`` runs ``app.py`` with ``streamlit run``.
"""
