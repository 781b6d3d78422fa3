"""`ceptoar subscribers`: load, dump and count the registry."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ceptoar.cli.common import run, say, settings
from ceptoar.registry import RegistryRow, read_registry, write_registry
from ceptoar.store import Bouncing, ImportResult, RegistryCounts, Store

__all__ = ["subscribers"]


@click.group()
def subscribers() -> None:
    """The registry of local governments and their addresses."""


@subscribers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--replace", is_flag=True, help="Deactivate addresses and organisations that the file does not list."
)
def import_(file: Path, replace: bool) -> None:
    """Load a registry CSV; any bad row refuses the whole file, naming its line."""
    s = settings()

    async def _import() -> tuple[ImportResult, RegistryCounts]:
        rows = read_registry(file)
        async with await Store.open(s.db_url) as store:
            result = await store.subscribers.import_rows(rows, replace=replace)
            return result, await store.subscribers.counts()

    result, counts = run(_import())
    click.echo(
        f"imported {file}: {result.organisations_added} organisation(s) and "
        f"{result.addresses_added} address(es) added, {result.addresses_updated} updated, "
        f"{result.addresses_deactivated} deactivated; now {counts.organisations} organisations, "
        f"{counts.addresses} addresses"
    )


@subscribers.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path), required=False)
def export(file: Path | None) -> None:
    """Write the active registry as CSV to FILE, or to standard output."""
    s = settings()

    async def _export() -> list[RegistryRow]:
        async with await Store.open(s.db_url) as store:
            return await store.subscribers.export_rows()

    rows = run(_export())
    if file is None:
        write_registry(rows, sys.stdout)
    else:
        with file.open("w", encoding="utf-8", newline="") as out:
            write_registry(rows, out)
        click.echo(f"wrote {len(rows)} address(es) to {file}", err=True)


@subscribers.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def count(as_json: bool) -> None:
    """Active organisations (prefectures, municipalities) and addresses by role."""
    s = settings()

    async def _count() -> RegistryCounts:
        async with await Store.open(s.db_url) as store:
            return await store.subscribers.counts()

    c = run(_count())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "organisations": c.organisations,
                    "prefectures": c.prefectures,
                    "municipalities": c.municipalities,
                    "addresses": c.addresses,
                    "by_role": c.by_role,
                }
            )
        )
        return
    click.echo(
        f"organisations {c.organisations} ({c.prefectures} prefectures, {c.municipalities} municipalities)"
    )
    roles = ", ".join(f"{n} {role}" for role, n in sorted(c.by_role.items()))
    click.echo(f"addresses     {c.addresses} ({roles})")


@subscribers.command()
@click.option("--last", type=click.IntRange(1, 50), default=3, show_default=True, help="Alerts looked at.")
def bouncing(last: int) -> None:
    """Addresses whose mail bounced on each of their last alerts. Nothing is switched off."""
    s = settings()

    async def _list() -> list[Bouncing]:
        async with await Store.open(s.db_url) as store:
            return await store.returns.bouncing(last=last)

    found = run(_list())
    for b in found:
        say(f"{b.code} {b.name}  {b.email} ({b.role})  bounced on {', '.join(b.alert_ids)}")
        say(f"    {b.last_reply}")
    say(f"{len(found)} addresses bounced on each of their last {last} alerts", err=True)
