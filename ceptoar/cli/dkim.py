"""`ceptoar dkim`: make a DKIM signing key and print the DNS record that publishes it."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ceptoar.cli.common import EXIT_BAD_INPUT, fail, say, settings

__all__ = ["dkim"]


@click.group()
def dkim() -> None:
    """DKIM signing keys (signing is on once CEPTOAR_DKIM_KEY names one)."""


@dkim.command()
@click.option(
    "--algorithm",
    type=click.Choice(["rsa-sha256", "ed25519-sha256"]),
    default="rsa-sha256",
    show_default=True,
    help="Ed25519 signatures are smaller and faster; not every receiving system verifies them yet.",
)
@click.option(
    "--bits", type=click.IntRange(1024, 4096), default=2048, show_default=True, help="RSA key size."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the private key is written (default: CEPTOAR_DKIM_KEY, else var/dkim-SELECTOR.pem).",
)
def keygen(algorithm: str, bits: int, out: Path | None) -> None:
    """Write a new private key (never over an existing file) and print its DNS TXT record."""
    # Loaded here, not with the command line: OpenSSL's bindings would weigh on every ceptoar process.
    from ceptoar.mail.dkim import DkimSigner, generate_key, txt_record

    s = settings()
    path = out or s.dkim_key or s.var_dir / f"dkim-{s.dkim_selector}.pem"
    pem = generate_key("ed25519-sha256" if algorithm == "ed25519-sha256" else "rsa-sha256", bits=bits)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{path} exists: a key in use is never overwritten; name another with --out", EXIT_BAD_INPUT)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    signer = DkimSigner.from_file(path, domain=s.signing_domain, selector=s.dkim_selector)
    say(f"; private key written to {path}; sign with CEPTOAR_DKIM_KEY={path}")
    say(txt_record(signer))
