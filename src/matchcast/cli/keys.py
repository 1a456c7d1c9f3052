"""``matchcast keys create|list|revoke``, and what ``matchcast up`` says about keys when it starts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from matchcast.config import Settings, get_settings
from matchcast.errors import MatchcastError

if TYPE_CHECKING:
    from matchcast.service.auth import ApiKeyService

app = typer.Typer(help="API keys: create (the token is shown once), list, revoke.", no_args_is_help=True)
console = Console(stderr=True)


def _service() -> ApiKeyService:
    from matchcast.service.auth import key_service_for

    try:
        settings = get_settings()
    except Exception as exc:
        console.print(f"[red]error:[/red] invalid MATCHCAST_* setting: {exc}")
        raise typer.Exit(2) from None
    return key_service_for(settings)


@app.command()
def create(
    role: Annotated[str, typer.Option(help="predict (predictions and status) or admin (everything)")],
    name: Annotated[str | None, typer.Option(help="A label, e.g. who uses the key")] = None,
) -> None:
    """Create a key and print its token on stdout, this once (only a hash is stored)."""
    if role not in ("predict", "admin"):
        raise typer.BadParameter("must be predict or admin", param_hint="--role")
    try:
        info, token = _service().create(role, name)
    except MatchcastError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    console.print(f"created {info.role} key {info.key_id} ({info.name}); the token is shown only now:")
    print(token)


@app.command("list")
def list_keys() -> None:
    """Every key: id, name, role, created, revoked."""
    table = Table(title="API keys")
    for col in ("id", "name", "role", "created", "revoked"):
        table.add_column(col)
    for k in _service().list():
        revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else ""
        table.add_row(k.key_id, k.name, k.role, k.created_at.isoformat(timespec="seconds"), revoked)
    Console().print(table)


@app.command()
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (the part after mc_)")]) -> None:
    """Revoke a key: refused at once by new API processes, within MATCHCAST_API_KEY_CACHE_S by running ones."""
    try:
        info = _service().revoke(key_id)
    except MatchcastError as exc:
        console.print(f"[red]error:[/red] {exc.detail}")
        raise typer.Exit(1) from None
    console.print(f"revoked {info.role} key {info.key_id} ({info.name})")


def announce_auth(settings: Settings, out: Console) -> str | None:
    """For ``matchcast up``: with auth off say the API runs open; else make and show the first-start admin key.

    Returns the admin token when it is known (e.g. for a UI started alongside), else None."""
    from matchcast.service.auth import bootstrap_admin_key, key_service_for, refuse_open_bind

    if settings.auth == "off":
        refuse_open_bind(settings, settings.api_host)
        out.print(
            f"[yellow]MATCHCAST_AUTH=off: the API runs open, without API keys, on {settings.api_host} only[/yellow]"
        )
        return None
    found = bootstrap_admin_key(key_service_for(settings), settings.home)
    if found.created:
        out.print(f"{found.note}:", soft_wrap=True, markup=False, highlight=False)
        out.print(f"  X-API-Key: {found.token}", soft_wrap=True, markup=False, highlight=False)
    else:
        out.print(found.note, soft_wrap=True, markup=False, highlight=False)
    return found.token
