"""Personal data protection on the command line: ``crm customer export-data|erase`` and
``crm privacy apply-retention``.

The customer commands join the ``customer`` group (defined in :mod:`crmcore.cli.entities`) with
``add_command``; the engine is ``crm.privacy`` (:mod:`crmcore.application.privacy`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ..domain.errors import CRMError, ValidationError
from ..store.sealed import new_key
from .context import Session, pass_session
from .entities import customer, resolve_customer


def output_paths(output: str) -> tuple[Path, Path]:
    """``--output FILE``: the JSON file and the HTML summary beside it (``x.json`` + ``x.html``;
    ``x.html`` + ``x.json``; anything else gets ``.html`` added for the summary)."""
    path = Path(output)
    if path.suffix.lower() == ".html":
        return path.with_suffix(".json"), path
    if path.suffix.lower() == ".json":
        return path, path.with_suffix(".html")
    return path, path.with_name(path.name + ".html")


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only (mode 0600): it holds one person's data."""
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(handle, 0o600)  # also when the file existed with a wider mode
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)


@click.command("export-data")
@click.argument("customer_ref", metavar="CUSTOMER")
@click.option("--output", "-o", required=True, metavar="FILE",
              help="Write the JSON here and a readable HTML summary beside it (FILE.html).")
@pass_session
def export_data(session: Session, customer_ref: str, output: str) -> None:
    """Everything held about one person (subject access): JSON plus an HTML summary.

    CUSTOMER is an id, an external id or an email address."""
    crm = session.crm
    data = crm.privacy.export(resolve_customer(session, customer_ref))
    json_path, html_path = output_paths(output)
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        _write_private(json_path, json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
        _write_private(html_path, crm.privacy.render_html(data))
    except OSError as exc:
        raise CRMError(f"cannot write {exc.filename or output}: {exc.strerror or exc}") from None
    counts = {name: len(rows) for name, rows in data["sections"].items()}
    counts.update({f"plugin:{name}": len(rows) for name, rows in data["plugins"].items()})
    session.emit_object({"customer_id": data["customer"]["id"], "json": str(json_path), "html": str(html_path),
                         "rows": counts},
                        f"customer {data['customer']['id']}: {sum(counts.values())} records written to "
                        f"{json_path} and {html_path}")


@click.command("erase")
@click.argument("customer_ref", metavar="CUSTOMER")
@click.option("--reason", required=True, help="Why (kept in the audit trail, e.g. 'PIPL request 2026-114').")
@click.option("--yes", "-y", is_flag=True, help="Confirm: an erasure cannot be undone.")
@pass_session
def erase(session: Session, customer_ref: str, reason: str, yes: bool) -> None:
    """Erase one person: remove or anonymise their personal data everywhere (cannot be undone).

    Deal amounts and dates, points and consent decisions stay, anonymous, so reports do not
    change.  Running it again for an erased customer checks again and changes nothing more."""
    if not yes:
        raise ValidationError.single("--yes", f"customer {customer_ref} is not erased: add --yes "
                                     "(an erasure cannot be undone)")
    result = session.crm.privacy.erase(resolve_customer(session, customer_ref), reason)
    total = sum(result.rows.values())
    message = (f"customer {result.customer_id} was already erased on {result.erased_at:%Y-%m-%d}; checked again"
               if result.already else
               f"customer {result.customer_id} erased: {total} rows anonymised or removed, "
               f"{result.files} rows removed from reject files, {result.audit} audit records redacted")
    session.emit_object(result.as_dict(), message)


customer.add_command(export_data)
customer.add_command(erase)


@click.group("privacy")
def privacy() -> None:
    """Personal data protection: retention policies ([privacy] in crm.toml)."""


@privacy.command("apply-retention")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@click.option("--as-of", "as_of", metavar="DATE", help="Treat this date/time as now.")
@pass_session
def apply_retention(session: Session, dry_run: bool, as_of: str | None) -> None:
    """Apply [privacy.retention]: old interactions, unconverted leads, old message bodies.

    Run it daily (cron, a systemd timer); it reports what it removed."""
    crm = session.crm
    moment = crm.as_of(as_of) if as_of else session.as_of
    found = crm.privacy.apply_retention(moment, dry_run=dry_run)
    if not found:
        if session.as_json:
            session.emit([])
        else:
            session.echo("no retention policy is configured ([privacy.retention] in crm.toml): nothing to do")
        return
    verb = "would remove" if dry_run else "removed"
    labels = {"interactions": "interactions", "leads": "unconverted leads (erased)",
              "outbox_bodies": "message bodies"}
    session.emit([{"policy": name, verb.replace(" ", "_"): count} for name, count in found.items()],
                 title=f"Retention as of {moment:%Y-%m-%d}: " + ", ".join(
                     f"{verb} {count} {labels.get(name, name)}" for name, count in found.items()))


@privacy.command("rotate-key")
@pass_session
def rotate_key(session: Session) -> None:
    """Re-seal every encrypted field with the first key of [privacy.encryption].

    To rotate: put a new key (crm privacy new-key) first in the key file or variable, keep the
    old one after it, run this, then remove the old key.  Also seals the values stored before
    encryption was turned on."""
    counts = session.crm.privacy.rotate_key()
    session.emit([{"field": name, "resealed": count} for name, count in counts.items()],
                 title=f"Re-sealed {sum(counts.values())} values with the first key")


@privacy.command("new-key")
@pass_session
def new_key_command(session: Session) -> None:
    """Print a new random encryption key (32 bytes, base64url) for [privacy.encryption]."""
    key = new_key()
    session.emit_object({"key": key}, key)
