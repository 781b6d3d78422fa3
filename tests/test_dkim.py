"""DKIM: ceptoar signs (with `cryptography`), dkimpy verifies, an independent implementation."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from ceptoar.feed import parse_notice
from ceptoar.mail.dkim import DkimSigner, _relaxed_body, generate_key, txt_record
from ceptoar.mailbox import list_messages
from ceptoar.model.alert import AlertView
from ceptoar.registry import RegistryRow
from ceptoar.render import Renderer, default_templates_dir
from tests.conftest import StackFactory
from tests.harness import REPO, MailboxServer, notice_doc, run_cli, running, subset


def _signer(tmp_path: Path, algorithm: str) -> DkimSigner:
    key = tmp_path / f"{algorithm}.pem"
    key.write_bytes(generate_key("ed25519-sha256" if algorithm == "ed25519-sha256" else "rsa-sha256"))
    return DkimSigner.from_file(key, domain="ceptoar.example", selector="s2026")


def _dns(signer: DkimSigner) -> Callable[..., bytes | None]:
    """What a resolver answers for the signer's TXT record: its strings joined."""
    record = "".join(re.findall(r'"([^"]*)"', txt_record(signer))).encode()

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"s2026._domainkey.ceptoar.example." else None

    return lookup


def _mail() -> bytes:
    notice = parse_notice((REPO / "examples" / "notice.json").read_bytes())
    alert = AlertView.of_notice(notice, severity="critical", rules=["cvss-critical"], id="20261207-dkim0001")
    renderer = Renderer(default_templates_dir(), sender="alerts@ceptoar.example", sender_name="CEPTOAR")
    return renderer.message(
        alert,
        language="ja",
        to="primary@130001.lg.example",
        message_id="<20261207-dkim0001.1@ceptoar.example>",
        reply_to="bounces+1-abc@ceptoar.example",
        answer_url="https://ceptoar.lg.example/a/1-abc",
    )


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_a_signed_alert_verifies_and_a_changed_one_does_not(tmp_path: Path, algorithm: str) -> None:
    signer = _signer(tmp_path, algorithm)
    signed = signer.sign(_mail())
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    assert f"a={algorithm}" in header and "c=relaxed/relaxed" in header
    names = re.search(r"h=([^;]+);", header.replace("\r\n\t", " "))
    assert names is not None
    signed_names = names.group(1).split(":")
    for required in ("from", "to", "subject", "date", "message-id", "x-ceptoar-alert-id", "x-ceptoar-severity"):
        assert required in signed_names
    assert dkim.verify(signed, dnsfunc=_dns(signer))

    assert not dkim.verify(signed.replace(b"Subject: ", b"Subject: FW: ", 1), dnsfunc=_dns(signer))
    body_at = signed.index(b"\r\n\r\n") + 4
    tampered = signed[:body_at] + signed[body_at:].replace(b"Q", b"R", 1)
    assert not dkim.verify(tampered, dnsfunc=_dns(signer))
    # A second From cannot be slipped in: From is signed once more than it appears.
    assert not dkim.verify(signed.replace(b"\r\n\r\n", b"\r\nFrom: x@evil.example\r\n\r\n", 1), dnsfunc=_dns(signer))


def test_relaxed_canonicalisation_survives_a_relay_refolding_headers(tmp_path: Path) -> None:
    signer = _signer(tmp_path, "rsa-sha256")
    signed = signer.sign(_mail())
    refolded = signed.replace(b"X-Ceptoar-Severity: critical", b"X-Ceptoar-Severity:   \r\n\tcritical", 1)
    assert refolded != signed and dkim.verify(refolded, dnsfunc=_dns(signer))


def test_keygen_writes_a_private_key_once_and_prints_its_txt_record(tmp_path: Path) -> None:
    key = tmp_path / "dkim.pem"
    env = {"CEPTOAR_VAR_DIR": str(tmp_path), "CEPTOAR_DKIM_SELECTOR": "s2026"}
    done = run_cli("dkim", "keygen", "--algorithm", "ed25519-sha256", "--out", str(key), env=env)
    assert done.returncode == 0, done.stderr
    assert key.stat().st_mode & 0o777 == 0o600
    assert re.search(r"^s2026\._domainkey\.ceptoar\.example\. IN TXT \( \"v=DKIM1; k=ed25519; p=", done.stdout, re.M)
    again = run_cli("dkim", "keygen", "--out", str(key), env=env)
    assert again.returncode == 2 and "never overwritten" in again.stderr


async def test_every_mail_of_a_fanout_is_signed_and_verifies(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow], tmp_path: Path
) -> None:
    key = tmp_path / "dkim.pem"
    key.write_bytes(generate_key("rsa-sha256"))
    rows = subset(registry_rows, 3)
    stack = await make_stack(mailbox=mailbox, rows=rows, dkim_key=key, dkim_selector="s2026")
    signer = DkimSigner.from_file(key, domain="ceptoar.example", selector="s2026")
    async with running(stack.settings):
        await stack.publish(notice_doc(id="DKIM-1"))
        counts = await stack.wait_settled("DKIM-1")
    assert counts == {"sent": len(rows)}
    for row in rows:
        (entry,) = list_messages(mailbox.root, row.email)
        stored = entry.path.read_bytes()
        assert stored.count(b"DKIM-Signature:") == 1
        # As the mailbox filed it, with its Received and Return-Path lines above the signature (unsigned).
        assert dkim.verify(stored, dnsfunc=_dns(signer))


def test_the_fast_body_canonicalisation_gives_what_the_rule_gives() -> None:
    # RFC 6376 3.4.4 as written: each line's whitespace runs as one space, none at its end, no empty
    # lines at the end of the body.
    def by_the_rule(body: bytes) -> bytes:
        lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
        while lines and not lines[-1]:
            lines.pop()
        return b"".join(line + b"\r\n" for line in lines)

    rng = random.Random(6376)
    pieces = [b"a", b"Q", b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n"]
    for _ in range(20_000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert _relaxed_body(body) == by_the_rule(body), body
