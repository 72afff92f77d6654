"""``crm serve``: the HTTP API on uvicorn."""

from __future__ import annotations

import os

import click

from .context import Session, pass_session


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (each opens the CRM; use a database server for more than one).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--forwarded-allow-ips", metavar="IPS",
              help="Behind a reverse proxy: the proxy addresses (comma-separated, or '*') whose "
                   "X-Forwarded-For names the client; rate limits then count the client, not the proxy.")
@pass_session
def serve(session: Session, host: str, port: int, workers: int, log_level: str,
          forwarded_allow_ips: str | None) -> None:
    """Serve the HTTP API (docs at /docs, OpenAPI at /openapi.json) on the configured database.

    Requests act as the user of their API token (crm token create); this command's
    own user (--as) only needs the right to serve (api.serve).
    """
    import uvicorn

    crm = session.crm
    crm.authorize("api.serve", None)
    if workers > 1 and crm.engine.dialect.name == "sqlite":
        session.echo("note: several workers on one SQLite file take turns to write (a server database "
                     "scales further)")
    # Each worker process builds its CRM and app from the same options (crmcore.web.asgi).
    for name, value in (("CRM_SERVE_DATABASE_URL", crm.config.database_url),
                        ("CRM_SERVE_CONFIG", session.config_file), ("CRM_SERVE_PLUGINS", session.plugins),
                        ("CRM_SERVE_NO_PLUGINS", "1" if session.no_plugins else None),
                        ("CRM_SERVE_PLUGINS_DIR", session.plugins_dir)):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    session.echo(f"serving the crmcore API on http://{host}:{port} (docs: /docs) with {workers} worker(s)")
    from ..web.app import start_pages

    # An address one can open: "every interface" is reachable on loopback.
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    for label, path in start_pages(crm):
        session.echo(f"{label}: http://{shown}:{port}{path}")
    # Forwarding headers are trusted only from the proxies named: anyone else could forge them.
    uvicorn.run("crmcore.web.asgi:app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, proxy_headers=forwarded_allow_ips is not None,
                forwarded_allow_ips=forwarded_allow_ips, server_header=False)
