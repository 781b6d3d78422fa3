"""Return paths (VERP), reading what comes back to them, and recording it against the delivery.

Messages built here follow the RFCs' own examples (RFC 3464 DSNs, RFC 5965
feedback reports, RFC 3834 auto-replies); `tests/data/bounces/` holds real
ones from others (SOURCES.md). The end-to-end tests send real alerts
through the service to the mailbox and feed bounces for them to
`ceptoar bounces ingest`.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import aiosmtplib
import pytest
from sqlalchemy import select, update

from ceptoar.bounces.report import read_report
from ceptoar.bounces.verp import Verp
from ceptoar.mailbox import list_messages, read_message
from ceptoar.mailbox.dsn import Bouncer
from ceptoar.mailbox.maildir import addresses
from ceptoar.model.states import DeliveryState
from ceptoar.registry import RegistryRow
from ceptoar.store import ReturnedMail
from ceptoar.store.tables import deliveries, returned
from tests.conftest import StackFactory
from tests.harness import (
    REPO,
    MailboxServer,
    Stack,
    cli_env,
    free_port,
    notice_doc,
    run_cli_async,
    running,
    subset,
)

DATA = REPO / "tests" / "data" / "bounces"
VERP = Verp("bounces@ceptoar.example", b"k" * 32)


def test_a_return_path_names_its_delivery_and_only_ceptoar_can_make_one() -> None:
    address = VERP.address(12345)
    assert address.startswith("bounces+12345-") and address.endswith("@ceptoar.example")
    token = VERP.read(address)
    assert token is not None and token.valid and token.delivery_id == 12345
    assert VERP.read(address.upper()) == token  # mail systems may fold case
    assert VERP.read(f"<{address}>") == token
    forged = address.replace("bounces+12345-", "bounces+12346-")
    assert VERP.read(forged) is not None and not VERP.read(forged).valid  # type: ignore[union-attr]
    assert not Verp("bounces@ceptoar.example", b"x" * 32).read(address).valid  # type: ignore[union-attr]
    assert VERP.read("bounces+12345@ceptoar.example") is None  # mistyped: no MAC at all
    assert VERP.is_ours("bounces+12345@ceptoar.example")
    assert VERP.read("alerts@ceptoar.example") is None and not VERP.is_ours("someone@lg.example")


def _dsn(to: str, recipient: str, *, action: str = "failed", status: str = "5.1.1") -> bytes:
    """A delivery status notification as RFC 3464's examples and Postfix write it."""
    return (
        f"From: MAILER-DAEMON@relay.lg.example (Mail Delivery System)\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host relay.lg.example.\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.lg.example\r\n"
        "Arrival-Date: Wed,  2 Dec 2026 16:00:00 +0900 (JST)\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx.lg.example\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected:\r\n"
        "    User unknown in local recipient table\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "From: alerts@ceptoar.example\r\nSubject: alert\r\n"
        "\r\n--B--\r\n"
    ).encode()


def test_a_permanent_dsn_is_a_bounce_naming_the_recipient_status_and_diagnostic() -> None:
    report = read_report(_dsn(VERP.address(7), "primary@130001.lg.example"), VERP)
    assert report.kind == "bounce" and report.token is not None and report.token.delivery_id == 7
    (r,) = report.recipients
    assert (r.address, r.action, r.status) == ("primary@130001.lg.example", "failed", "5.1.1")
    assert r.diagnostic is not None and r.diagnostic.startswith("550 5.1.1") and "User unknown" in r.diagnostic


def test_a_delayed_dsn_is_a_delay_and_a_real_sendmail_bounce_is_read_by_its_words() -> None:
    delayed = read_report(_dsn(VERP.address(7), "a@lg.example", action="delayed", status="4.4.1"), VERP)
    assert delayed.kind == "delay"
    # A relay that retried until its queue lifetime ran out gave up: the alert will not arrive.
    expired = read_report(_dsn(VERP.address(7), "a@lg.example", action="failed", status="4.4.7"), VERP)
    assert expired.kind == "bounce" and expired.recipients[0].status == "4.4.7"
    # flufl.bounce's test message from a real sendmail, which writes no DSN and marks itself auto-generated.
    sendmail = read_report((DATA / "flufl-sendmail_02.txt").read_bytes(), VERP)
    assert sendmail.kind == "bounce" and [r.address for r in sendmail.recipients] == ["foo@rbd.spb.ru"]
    assert sendmail.token is None  # it went to another sender's address


def test_auto_replies_complaints_and_replies_are_not_bounces() -> None:
    away = EmailMessage()
    away["From"], away["To"], away["Subject"] = "primary@130001.lg.example", VERP.address(9), "不在のお知らせ"
    away["Auto-Submitted"] = "auto-replied"
    away.set_content("12月4日まで不在です。")
    assert read_report(away.as_bytes(), VERP).kind == "auto_reply"

    answer = EmailMessage()
    answer["From"], answer["To"], answer["Subject"] = "primary@130001.lg.example", VERP.address(9), "Re: 警報"
    answer.set_content("受領\n確認しました。")
    reply = read_report(answer.as_bytes(), VERP)
    assert reply.kind == "reply" and reply.token is not None and reply.token.delivery_id == 9

    arf = (
        f"From: abuse@isp.example\r\nTo: {VERP.address(9)}\r\nSubject: FW: alert\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n"
        "--F--\r\n"
    ).encode()
    assert read_report(arf, VERP).kind == "complaint"


def test_what_cannot_be_read_is_unknown_with_a_problem_never_an_exception() -> None:
    broken = b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"X\"\r\n\r\n--X\r\n\xff\xfe"
    assert read_report(broken, VERP).kind in ("unknown", "bounce", "delay")
    huge = _dsn(VERP.address(3), "a@lg.example") + b"x" * 10_000_000
    report = read_report(huge, VERP)
    assert report.kind == "bounce" and report.problem is not None and "read only" in report.problem
    assert read_report(b"", VERP).kind == "unknown"


async def _sent(stack: Stack, mailbox: MailboxServer, notice_id: str) -> dict[str, str]:
    """Publish an alert, wait until it is sent; per address, the return path its mail came from."""
    await stack.publish(notice_doc(id=notice_id))
    counts = await stack.wait_settled(notice_id)
    assert counts == {"sent": counts["sent"]}
    paths = {}
    for address in addresses(mailbox.root):
        n = len(list_messages(mailbox.root, address))
        paths[address] = read_message(mailbox.root, address, n)["Return-Path"].strip("<>")
    return paths


async def test_a_bounce_for_a_sent_alert_marks_its_delivery_bounced_and_forgeries_are_kept_unmatched(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 3))
    env = cli_env(stack.settings)
    async with running(stack.settings):
        paths = await _sent(stack, mailbox, "VERP-1")
    verp = Verp.from_settings(stack.settings)
    tokens = {address: verp.read(path) for address, path in paths.items()}
    assert len(tokens) == 6 and all(t is not None and t.valid for t in tokens.values())
    assert len({t.delivery_id for t in tokens.values() if t}) == 6  # every delivery its own return path

    gone, acked, late = sorted(paths)[:3]
    async with stack.store.engine.begin() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.email == acked)
            .values(state=DeliveryState.ACKNOWLEDGED.value)
        )
    parse = await run_cli_async("bounces", "parse", "-", "--json", env=env, stdin=_dsn(paths[gone], gone))
    doc = json.loads(parse.stdout)
    assert doc["kind"] == "bounce" and doc["token_valid"] is True and doc["recipients"][0]["status"] == "5.1.1"
    alert = await stack.store.alerts.resolve("VERP-1")
    assert await stack.store.alerts.counts(alert.id) == {"sent": 5, "acknowledged": 1}  # parse changed nothing

    forged = paths[late].replace("-", "-0", 1)
    for message in (
        _dsn(paths[gone], gone),
        _dsn(paths[acked], acked),
        _dsn(paths[late], late, action="delayed", status="4.2.2"),
        _dsn(forged, late),
    ):
        done = await run_cli_async("bounces", "ingest", "-", env=env, stdin=message)
        assert done.returncode == 0, done.stderr
    assert await stack.store.alerts.counts(alert.id) == {"sent": 4, "bounced": 1, "acknowledged": 1}
    (bounced,) = await stack.store.returns.of_delivery(tokens[gone].delivery_id)  # type: ignore[union-attr]
    assert bounced.status == "5.1.1" and "User unknown" in (bounced.diagnostic or "")
    (after_ack,) = await stack.store.returns.of_delivery(tokens[acked].delivery_id)  # type: ignore[union-attr]
    assert "stays acknowledged" in after_ack.outcome
    (delay,) = await stack.store.returns.of_delivery(tokens[late].delivery_id)  # type: ignore[union-attr]
    assert delay.kind == "delay" and delay.matched
    listed = await run_cli_async("bounces", "unmatched", env=env)
    assert "forged or mistyped" in listed.stdout and listed.stdout.count("#") == 1
    status = json.loads((await run_cli_async("status", "VERP-1", "--json", env=env)).stdout)
    assert status["counts"]["bounced"] == 1 and status["counts"]["acknowledged"] == 1


async def test_serve_takes_in_bounces_over_smtp_at_its_return_paths(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    port = free_port()
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2), bounce_port=port)
    async with running(stack.settings):
        paths = await _sent(stack, mailbox, "VERP-SMTP")
        gone = sorted(paths)[0]
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as relay:
            # A relay sends its DSN from the null sender to the return path.
            await relay.sendmail("", [paths[gone]], _dsn(paths[gone], gone))
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
                await relay.sendmail("", ["postmaster@ceptoar.example"], _dsn("x", gone))
    alert = await stack.store.alerts.resolve("VERP-SMTP")
    assert await stack.store.alerts.counts(alert.id) == {"sent": 3, "bounced": 1}


async def test_a_fan_out_where_one_percent_bounce_and_ten_answer_shows_who_to_call(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    port = free_port()
    stack = await make_stack(mailbox=mailbox, rows=registry_rows, bounce_port=port)
    unknown = {r.email for r in sorted(registry_rows, key=lambda r: r.email)[::100]}
    assert mailbox.handler is not None
    mailbox.handler.bouncer = Bouncer(unknown, ("127.0.0.1", port), after=0.1)
    async with running(stack.settings):
        await stack.publish(notice_doc(id="ONE-PERCENT"))
        await stack.wait_settled("ONE-PERCENT")
        alert = await stack.store.alerts.resolve("ONE-PERCENT")
        for _ in range(300):
            counts = await stack.store.alerts.counts(alert.id)
            if counts.get("bounced", 0) == len(unknown):
                break
            await asyncio.sleep(0.1)
        # Ten organisations answer by replying, through the relay to the return paths.
        primaries = {r.code: r.email for r in registry_rows if r.role == "primary" and r.email not in unknown}
        answering = sorted(primaries.items())[:10]
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as relay:
            for _, email in answering:
                n = len(list_messages(mailbox.root, email))
                path = read_message(mailbox.root, email, n)["Reply-To"]
                await relay.sendmail(email, [path], _reply(path, email, "影響なし"))
        env = cli_env(stack.settings)
        status = json.loads((await run_cli_async("status", "ONE-PERCENT", "--json", env=env)).stdout)
        silent = await run_cli_async("status", "ONE-PERCENT", "--silent", env=env)
    assert len(unknown) == 36
    assert status["counts"]["bounced"] == 36 and status["counts"]["acknowledged"] == 10
    assert status["counts"]["sent"] == 3576 - 36 - 10
    orgs = status["organisations"]
    assert orgs["total"] == 1788 and orgs["answered"] == 10 and orgs["by_answer"] == {"not_affected": 10}
    assert orgs["silent"] == 1778 and 0 < orgs["bounced"] <= 36
    listed = [line for line in silent.stdout.splitlines() if line.startswith("  ") and " last " in line]
    assert len(listed) == 1778 and not any(line.split()[0] in dict(answering) for line in listed)
    assert "organisations 1788: answered 10 (影響なし 10)" in silent.stdout
    assert not set(addresses(mailbox.root)) & unknown  # the mailbox filed none of theirs
    assert await stack.store.returns.unmatched() == []


def _reply(to: str, sender: str, first_line: str) -> bytes:
    reply = EmailMessage()
    reply["From"], reply["To"], reply["Subject"] = sender, to, "Re: 【重要】警報"
    reply.set_content(f"{first_line}\n\n担当: 情報政策課\n\n> 元のメール\n")
    return reply.as_bytes()


async def test_a_reply_acknowledges_its_delivery_and_its_first_line_is_the_organisations_answer(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 2)
    stack = await make_stack(mailbox=mailbox, rows=rows)
    env = cli_env(stack.settings)
    async with running(stack.settings):
        paths = await _sent(stack, mailbox, "ANSWER-1")
    one = sorted(paths)[0]
    mail = read_message(mailbox.root, one, 1)
    assert mail["Reply-To"] == paths[one]  # a reply goes to the delivery's own return path
    code = next(r.code for r in rows if r.email == one)
    alert = await stack.store.alerts.resolve("ANSWER-1")

    for sender, line in ((one, "影響なし 確認しました"), (one.upper(), "支援要請"), ("someone@else.example", "受領")):
        done = await run_cli_async("bounces", "ingest", "-", env=env, stdin=_reply(paths[one], sender, line))
        assert done.returncode == 0, done.stderr
    assert await stack.store.alerts.counts(alert.id) == {"sent": 3, "acknowledged": 1}
    assert await stack.store.answers.latest(alert.id) == {code: "needs_help"}  # the latest answer stands
    kept = await stack.store.returns.unmatched()
    assert len(kept) == 1 and "someone@else.example" in kept[0].outcome and kept[0].kind == "reply"
    plain = read_report(_reply(paths[one], one, "Thanks, we will check."), Verp.from_settings(stack.settings))
    assert plain.kind == "reply" and plain.answer is not None and plain.answer.value == "received"


async def test_bad_mail_at_the_return_paths_is_kept_unmatched_with_why_and_the_service_carries_on(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    port = free_port()
    stack = await make_stack(mailbox=mailbox, rows=subset(registry_rows, 2), bounce_port=port)
    async with running(stack.settings):
        paths = await _sent(stack, mailbox, "BAD-RETURNS")
        first, second, third = sorted(paths)[:3]
        no_recipient = (
            f"From: MAILER-DAEMON@relay.lg.example\r\nTo: {paths[first]}\r\nSubject: failure notice\r\n"
            "Auto-Submitted: auto-generated\r\n\r\nSorry, it did not work out.\r\n"
        ).encode()
        ill_formed = (
            f"To: {paths[first]}\r\nMIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="never-closed"\r\n\r\n'
            "--never-closed\r\nContent-Type: message/delivery-status\r\n\r\nAction: \xff\r\n"
        ).encode("latin-1")
        huge = _dsn(paths[second], second) + (b"X" * 76 + b"\r\n") * 132_000  # 10 MB in 78-byte lines
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60) as relay:
            for message, rcpt in ((no_recipient, paths[first]), (ill_formed, paths[first]), (huge, paths[second])):
                await relay.sendmail("", [rcpt], message)
            await relay.sendmail("", [paths[third]], _dsn(paths[third], third))  # the service carries on
    kept = await stack.store.returns.unmatched()
    assert len(kept) == 2 and all("not recognised" in r.outcome for r in kept)
    (big,) = await stack.store.returns.of_delivery(verp_id(stack, paths[second]))
    assert big.size > 10_000_000 and "read only the first" in big.outcome and big.status == "5.1.1"
    alert = await stack.store.alerts.resolve("BAD-RETURNS")
    assert await stack.store.alerts.counts(alert.id) == {"sent": 2, "bounced": 2}


def verp_id(stack: Stack, path: str) -> int:
    token = Verp.from_settings(stack.settings).read(path)
    assert token is not None and token.valid
    return token.delivery_id


async def test_the_mailbox_answers_as_the_world_does_out_of_office_and_a_subscribers_reply(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    port = free_port()
    rows = subset(registry_rows, 2)
    stack = await make_stack(mailbox=mailbox, rows=rows, bounce_port=port)
    away, answering = sorted(r.email for r in rows)[:2]
    assert mailbox.handler is not None
    mailbox.handler.bouncer = Bouncer(set(), ("127.0.0.1", port), after=0.1, away={away})
    env = cli_env(stack.settings)
    async with running(stack.settings):
        paths = await _sent(stack, mailbox, "WORLD-1")
        done = await run_cli_async(
            "mailbox", "reply", answering, "1", "--answer", "影響あり・対応中",
            "--returns", f"127.0.0.1:{port}", "--dir", str(mailbox.root), env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        for _ in range(50):
            if await stack.store.returns.of_delivery(verp_id(stack, paths[away])):
                break
            await asyncio.sleep(0.1)
    (out_of_office,) = await stack.store.returns.of_delivery(verp_id(stack, paths[away]))
    assert out_of_office.kind == "auto_reply" and out_of_office.matched
    alert = await stack.store.alerts.resolve("WORLD-1")
    assert await stack.store.alerts.counts(alert.id) == {"sent": 3, "acknowledged": 1}  # an auto-reply is no answer
    code = next(r.code for r in rows if r.email == answering)
    assert await stack.store.answers.latest(alert.id) == {code: "affected"}


async def test_an_address_that_bounced_on_its_last_three_alerts_is_listed_and_stays_on(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 2)
    stack = await make_stack(mailbox=mailbox, rows=rows)
    gone, flaky = sorted(r.email for r in rows)[:2]
    for n in range(4):
        stored = await stack.store_alert(notice_doc(id=f"BOUNCING-{n}"), published=True)
        async with stack.store.engine.begin() as conn:
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.alert_id == stored.alert_id)
                .values(state=DeliveryState.SENT.value)
            )
            found = await conn.execute(
                select(deliveries.c.id, deliveries.c.email).where(deliveries.c.alert_id == stored.alert_id)
            )
            ids = {email: i for i, email in found.all()}
        bounced = [gone] + ([flaky] if n != 2 else [])  # flaky got one through
        for email in bounced:
            mail = ReturnedMail("bounce", ids[email], True, email, "5.2.2", "552 mailbox full", "", b"")
            await stack.store.returns.record(mail)
    listed = await run_cli_async("subscribers", "bouncing", env=cli_env(stack.settings))
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if "bounced on" in line]
    assert len(lines) == 1 and gone in lines[0] and "BOUNCING" not in lines[0]
    assert "552 mailbox full" in listed.stdout
    assert len(await stack.store.subscribers.candidates()) == 4  # nothing was switched off


async def test_prune_removes_old_returned_mail_but_never_answers(
    make_stack: StackFactory, mailbox: MailboxServer, registry_rows: list[RegistryRow]
) -> None:
    rows = subset(registry_rows, 1)
    stack = await make_stack(mailbox=mailbox, rows=rows)
    env = cli_env(stack.settings)
    async with running(stack.settings):
        paths = await _sent(stack, mailbox, "PRUNE-1")
    one = sorted(paths)[0]
    await run_cli_async("bounces", "ingest", "-", env=env, stdin=_reply(paths[one], one, "影響なし"))
    await run_cli_async("bounces", "ingest", "-", env=env, stdin=_dsn("bounces+1-000000000000@x.example", one))
    async with stack.store.engine.begin() as conn:
        await conn.execute(update(returned).values(received_at=datetime.now(UTC) - timedelta(days=100)))
    done = await run_cli_async("prune", "--older-than", "90d", "--yes", env=env)
    assert done.returncode == 0 and "2 returned messages" in done.stdout, done.stderr
    assert await stack.store.returns.unmatched() == []
    alert = await stack.store.alerts.resolve("PRUNE-1")
    assert await stack.store.answers.latest(alert.id) == {rows[0].code: "not_affected"}


def test_an_exchange_report_marked_auto_replied_is_a_bounce_never_an_auto_reply() -> None:
    verp = Verp("bounces@ceptoar.example", b"k" * 32)
    online = (DATA / "sisimai" / "lhost-office365-01.eml").read_bytes()
    assert b"Auto-Submitted: auto-replied" in online and b"X-MS-Exchange-Message-Is-Ndr" in online
    report = read_report(online, verp)
    assert report.kind == "bounce"
    assert [(r.address, r.action, r.status) for r in report.recipients] == [
        ("kijitora@example.com", "failed", "5.1.10")
    ]
    assert report.recipients[0].diagnostic is not None and "RESOLVER.ADR.RecipientNotFound" in report.recipients[0].diagnostic
    # Without Exchange's words, a delivery report that names no one is still a bounce, not an auto-reply.
    bare = EmailMessage()
    bare["From"], bare["To"], bare["Subject"] = "postmaster@mx.example", "x@ceptoar.example", "Undeliverable: x"
    bare["Auto-Submitted"] = "auto-replied"
    bare["X-MS-Exchange-Message-Is-Ndr"] = ""
    bare.set_content("Your message could not be delivered.")
    assert read_report(bare.as_bytes(), verp).kind == "bounce"
    # A real out-of-office notice is still an auto-reply.
    away = EmailMessage()
    away["From"], away["To"], away["Subject"] = "a@b.example", "x@ceptoar.example", "自動応答: 不在"
    away["Auto-Submitted"] = "auto-replied"
    away.set_content("12月10日まで不在です。")
    assert read_report(away.as_bytes(), verp).kind == "auto_reply"
