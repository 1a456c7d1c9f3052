"""The Streamlit entry point: ``streamlit run app.py`` (``matchcast ui`` does this with the right settings)."""

from __future__ import annotations

import streamlit as st

from matchcast.ui import pages
from matchcast.ui.client import ApiClient, UiConfig

TITLES = {
    "upcoming": "Upcoming matches",
    "batch": "Batch",
    "what-if": "What-if",
    "model": "Model",
    "results": "Results so far",
}
ICONS = {
    "upcoming": ":material/sports_soccer:",
    "batch": ":material/playlist_add_check:",
    "what-if": ":material/tune:",
    "model": ":material/model_training:",
    "results": ":material/scoreboard:",
}


@st.cache_resource
def _client(api_url: str, api_key: str | None) -> ApiClient:
    """One HTTP client (connection pool) per API for the whole UI process."""
    return ApiClient(api_url, api_key=api_key)


def _page(ui: pages.Ui, name: str) -> st.Page:
    def render() -> None:
        pages.PAGES[name](ui)

    return st.Page(render, title=TITLES[name], icon=ICONS[name], url_path=name, default=name == "upcoming")


def main() -> None:
    """Build the navigation and run the selected page."""
    st.set_page_config(page_title="matchcast", page_icon=":material/sports_soccer:", layout="wide")
    config = UiConfig.from_env()
    ui = pages.Ui(client=_client(config.api_url, config.api_key), home=config.home)
    nav = st.navigation([_page(ui, name) for name in pages.PAGES])
    st.sidebar.caption(f"API {config.api_url}")
    nav.run()


main()
