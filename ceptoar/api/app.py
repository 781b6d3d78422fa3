"""The HTTP feed ingestion endpoint (FastAPI).

POST /v1/notices takes a ceptoar JSON notice, an OASIS CAP 1.2 alert or a
CSAF 2.0 advisory and answers 202 with the notice's id only once RabbitMQ
has confirmed the publish; 200 with the id for a notice already received;
400 (not well-formed), 415 (a format it does not take), 422 (invalid, the
field named), 413 (over the size limit), 401 (no valid key, bad or stale
signature), 403 (a source the key may not post as) and 503 with
Retry-After while the broker is unreachable, having accepted nothing.

Credentials: `Authorization: Bearer KEY` (`ceptoar feeds add NAME`). A feed
created with `--signed` must also send `X-Ceptoar-Timestamp` (Unix
seconds) and `X-Ceptoar-Signature: sha256=HEX`, the HMAC-SHA256 of
`TIMESTAMP.BODY` under its signing secret; a timestamp more than five
minutes away from now is refused as a replay.

The same application serves the answer pages that alert mails link to
(`ceptoar.api.answers`) and the portal (`ceptoar.api.portal`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from ceptoar import __version__
from ceptoar.api.answers import AnswerPages
from ceptoar.api.answers import router as answer_router
from ceptoar.api.portal import install as install_portal
from ceptoar.bus import Bus
from ceptoar.config import Settings
from ceptoar.dispatch.admission import admit
from ceptoar.errors import InvalidNotice
from ceptoar.feed.errors import MalformedNotice, UnsupportedFormat
from ceptoar.feed.formats import Parsed
from ceptoar.feed.offload import ParserBusy, ParserPool
from ceptoar.log import get_logger
from ceptoar.model.alert import AlertStatus
from ceptoar.model.notice import CONTENT_TYPES, OPERATOR_SOURCE
from ceptoar.retry import is_transient
from ceptoar.sealing import SecretBox, is_sealed
from ceptoar.store import Feed, Store
from ceptoar.store.feeds import seal_context

__all__ = ["SIGNATURE_MAX_AGE", "create_app", "sign"]

log = get_logger(__name__)

SIGNATURE_MAX_AGE = 300  # seconds either side of now
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
PUBLISH_TIMEOUT = 10.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Ceptoar-Signature value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error answer: what went wrong, in words and as a code."""

    error: ErrorDetail


class Accepted(BaseModel):
    """A notice the endpoint has (202) or had already (200)."""

    id: str
    source: str
    format: str
    status: Literal["accepted", "already received"]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    store: str
    broker: str


class ApiError(Exception):
    """An answer other than success, with its status and machine-readable code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.retry_after = (
            status,
            code,
            message,
            field,
            retry_after,
        )


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": ErrorBody} for s in statuses}


@dataclass
class Context:
    settings: Settings
    store: Store
    parser: ParserPool
    bus: Bus | None = None
    _box: SecretBox | None = None

    def secret_box(self) -> SecretBox:
        """What opens the feeds' signing secrets (read from the settings at first use)."""
        if self._box is None:
            self._box = self.settings.secret_box()
        return self._box

    async def broker(self) -> Bus:
        """The connected bus, connecting now if the broker was away."""
        if self.bus is not None and self.bus.connected:
            return self.bus
        bus = Bus.from_settings(self.settings)
        try:
            await bus.connect(name="ceptoar-api", within=5)
        except Exception as exc:
            await bus.close()
            if not is_transient(exc):
                raise
            raise ApiError(
                503, "broker_unavailable", "the message broker is unreachable; retry later", retry_after=5
            ) from exc
        self.bus = bus
        return bus


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


bearer = HTTPBearer(auto_error=False, description="A feed's API key, from `ceptoar feeds add NAME`.")


async def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Feed:
    """The feed whose key came with the request (401 otherwise)."""
    if credentials is None:
        raise ApiError(401, "unauthenticated", "send the feed's API key as 'Authorization: Bearer KEY'")
    feed = await _ctx(request).store.feeds.by_key(credentials.credentials)
    if feed is None or feed.revoked:
        raise ApiError(401, "invalid_key", "the API key is unknown or revoked")
    return feed


Authenticated = Annotated[Feed, Depends(authenticated)]


_DIGITS = re.compile(r"[0-9]{1,20}")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > limit:
        raise ApiError(413, "too_large", f"the body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "too_large", f"the body exceeds the limit of {limit} bytes")
    return bytes(body)


async def _signing_secret(ctx: Context, feed: Feed) -> str | None:
    """The feed's signing secret, opened; one an older release kept in the clear is sealed now."""
    kept = feed.signing_secret
    if kept is None:
        return None
    box = ctx.secret_box()
    if is_sealed(kept):
        return box.open(kept, context=seal_context(feed.name))
    await ctx.store.feeds.reseal(feed.name, box.seal(kept, context=seal_context(feed.name)))
    log.warning("feed.secret_sealed", feed=feed.name)
    return kept


def _check_signature(
    secret: str | None, feed: Feed, timestamp: str | None, signature: str | None, body: bytes
) -> None:
    if secret is None and signature is None:
        return
    if secret is None:
        raise ApiError(401, "unexpected_signature", f"feed {feed.name} has no signing secret")
    if not timestamp or not signature:
        raise ApiError(401, "signature_required", "send X-Ceptoar-Timestamp and X-Ceptoar-Signature")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise ApiError(
            401, "bad_timestamp", "X-Ceptoar-Timestamp must be the Unix time in seconds (ASCII digits)"
        )
    if abs(time.time() - int(timestamp)) > SIGNATURE_MAX_AGE:
        raise ApiError(
            401, "stale_signature", "X-Ceptoar-Timestamp is more than 5 minutes from now (replay?)"
        )
    expected = sign(secret, timestamp, body).encode()
    # Bytes: compare_digest refuses str with non-ASCII characters, which a header may hold.
    if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):
        raise ApiError(401, "bad_signature", "X-Ceptoar-Signature does not match the body")


async def _parse(ctx: Context, body: bytes, content_type: str | None) -> Parsed:
    try:
        return await ctx.parser.parse(body, content_type)
    except MalformedNotice as exc:
        raise ApiError(400, "malformed", exc.reason, field=exc.field) from exc
    except UnsupportedFormat as exc:
        raise ApiError(415, "unsupported_format", exc.reason, field=exc.field) from exc
    except InvalidNotice as exc:
        raise ApiError(422, "invalid_notice", exc.reason, field=exc.field) from exc
    except ParserBusy as exc:
        raise ApiError(503, "busy", f"{exc}; retry later", retry_after=5) from exc
    except Exception as exc:
        # A document no check foresaw: refuse it, and keep the trace for the developers.
        log.exception("api.parse_failed", bytes=len(body))
        raise ApiError(
            422, "invalid_notice", f"the document could not be checked ({exc.__class__.__name__})"
        ) from exc


async def _replayed(ctx: Context, feed: Feed, body: bytes, content_type: str | None) -> JSONResponse | None:
    """The answer to a notice this feed posted before, found without checking the document again."""
    try:
        key = await ctx.parser.peek(body, content_type)
    except (ParserBusy, InvalidNotice):
        return None
    if key is None or key.sent is None or key.source not in feed.sources or key.source == OPERATOR_SOURCE:
        return None
    # Only a notice already stored (from here or over AMQP), with the same sent time: anything
    # else, such as a CAP identifier used again for another message, is checked in full.
    stored = await ctx.store.alerts.existing(key.source, key.id)
    if stored is None or stored.sent != key.sent:
        return None
    if await ctx.store.feeds.receive_state(source=key.source, source_id=key.id) is None:
        await ctx.store.feeds.receive(source=key.source, source_id=key.id, fmt=key.format, feed=feed.name)
        await ctx.store.feeds.published(source=key.source, source_id=key.id)
    answer = Accepted(id=key.id, source=key.source, format=key.format, status="already received")
    log.info("api.replay", feed=feed.name, source=key.source, notice_id=key.id)
    return JSONResponse(answer.model_dump(), 200)


async def _publish(ctx: Context, body: bytes, parsed: Parsed, feed: Feed) -> None:
    notice = parsed.notice
    bus = await ctx.broker()
    try:
        await bus.publish_notice(
            body,
            fmt=parsed.format,
            key=notice.key,
            headers={"x-ceptoar-feed": feed.name},
            confirm_within=PUBLISH_TIMEOUT,
        )
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.error("api.publish_failed", error=repr(exc))
        raise ApiError(
            503, "broker_unavailable", "the broker did not confirm; nothing was accepted", retry_after=5
        ) from exc


# What a request's headers may hold in all: a browser's, with its cookies, fits in a few KiB.
HEADERS_MAX = 16 * 1024
HEADER_COUNT_MAX = 100


class HeaderLimits:
    """ASGI middleware: 431 for a request whose headers are too many or too large, before any route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            size = sum(len(name) + len(value) + 4 for name, value in headers)
            if size > HEADERS_MAX or len(headers) > HEADER_COUNT_MAX:
                body = ErrorBody(
                    error=ErrorDetail(
                        code="headers_too_large",
                        message=f"the request's headers are {size} bytes in {len(headers)} fields; "
                        f"the limit is {HEADERS_MAX} bytes in {HEADER_COUNT_MAX}",
                    )
                )
                await JSONResponse(body.model_dump(), 431)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(settings: Settings, *, store: Store | None = None) -> FastAPI:
    """The ingestion API; opens its own store unless one is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = store is None
        parser = ParserPool(workers=settings.parse_workers, timeout=settings.parse_timeout)
        ctx = Context(settings, store or await Store.open(settings.db_url), parser)
        app.state.ctx = ctx
        try:
            yield
        finally:
            parser.close()
            if ctx.bus is not None:
                await ctx.bus.close()
            if own:
                await ctx.store.close()

    app = FastAPI(
        title="ceptoar feed ingestion",
        version=__version__,
        description=__doc__,
        lifespan=lifespan,
        # No Swagger UI or ReDoc: their pages need inline script and assets from a public CDN,
        # unreachable on LGWAN and outside the CSP the portal keeps. The schema is /openapi.json.
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        if exc.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        body = ErrorBody(error=ErrorDetail(code=exc.code, message=exc.message, field=exc.field))
        return JSONResponse(body.model_dump(), status_code=exc.status, headers=headers)

    app.include_router(router)
    app.state.answer_pages = AnswerPages.from_settings(settings)
    app.include_router(answer_router)
    install_portal(app, settings)
    app.add_middleware(HeaderLimits)  # the outermost: added last
    return app


router = APIRouter()
_BODY_TYPES = {t: {"schema": {"type": "string"}} for t in (*CONTENT_TYPES.values(), "application/xml")}


async def _accept(ctx: Context, feed: Feed, body: bytes, content_type: str | None) -> Accepted | JSONResponse:
    replayed = await _replayed(ctx, feed, body, content_type)
    if replayed is not None:
        return replayed
    parsed = await _parse(ctx, body, content_type)
    notice = parsed.notice
    if notice.source == OPERATOR_SOURCE:
        # Whatever a feed was given: its notices would pass as the operators', unaudited.
        raise ApiError(
            403,
            "reserved_source",
            f"source {OPERATOR_SOURCE!r} is reserved for CEPTOAR's operators; no feed may post as it",
            field="source",
        )
    if notice.source not in feed.sources:
        raise ApiError(
            403, "wrong_source", f"feed {feed.name} may not post as {notice.source!r}", field="source"
        )
    try:
        # What the dispatcher would refuse is refused here: a 202 is never taken back.
        stored = await admit(ctx.store, notice, now=datetime.now(UTC))
    except InvalidNotice as exc:
        raise ApiError(422, "invalid_notice", exc.reason, field=exc.field) from exc
    key = {"source": notice.source, "source_id": notice.id}
    answer = Accepted(id=notice.id, source=notice.source, format=parsed.format, status="accepted")
    earlier = await ctx.store.feeds.receive(**key, fmt=parsed.format, feed=feed.name)
    if earlier == "publishing":
        raise ApiError(503, "in_progress", "the same notice is being accepted right now", retry_after=1)
    if earlier is None and stored is not None:
        await ctx.store.feeds.published(**key)  # it came in over AMQP before
        earlier = "published"
    if earlier is not None:
        return JSONResponse(answer.model_copy(update={"status": "already received"}).model_dump(), 200)
    try:
        await _publish(ctx, body, parsed, feed)
    except BaseException:
        await ctx.store.feeds.forget(**key)
        raise
    await ctx.store.feeds.published(**key)
    log.info("api.accepted", feed=feed.name, source=notice.source, notice_id=notice.id, format=parsed.format)
    return answer


@router.post(
    "/v1/notices",
    status_code=202,
    response_model=Accepted,
    responses={
        200: {"model": Accepted, "description": "Already received"},
        **_errors(400, 401, 403, 413, 415, 422, 503),
    },
    openapi_extra={"requestBody": {"required": True, "content": _BODY_TYPES}},
    summary="Post a notice (ceptoar JSON, CAP 1.2 or CSAF 2.0)",
)
async def post_notice(
    request: Request,
    feed: Authenticated,
    x_ceptoar_timestamp: Annotated[str | None, Header()] = None,
    x_ceptoar_signature: Annotated[str | None, Header()] = None,
) -> Any:
    """Accept a notice; 202 once the broker confirmed it, 200 if it was received before."""
    ctx = _ctx(request)
    body = await _read_body(request, ctx.settings.api_max_body)
    _check_signature(await _signing_secret(ctx, feed), feed, x_ceptoar_timestamp, x_ceptoar_signature, body)
    return await _accept(ctx, feed, body, request.headers.get("content-type"))


@router.get("/v1/notices/{notice_id}", response_model=AlertStatus, responses=_errors(401, 404))
async def get_notice(request: Request, notice_id: str, feed: Authenticated) -> AlertStatus:
    """A notice this feed sent, and its alert's deliveries."""
    ctx = _ctx(request)
    for source in feed.sources:
        alert = await ctx.store.alerts.find(source, notice_id)
        if alert is not None:
            return await ctx.store.status(alert)
        receipt = await ctx.store.feeds.receipt(source=source, source_id=notice_id)
        if receipt is not None:
            rejected = receipt.state == "rejected"
            return AlertStatus(
                notice_id=notice_id,
                source=source,
                alert_id=None,
                state="rejected" if rejected else "received",
                rejected_reason=receipt.reason if rejected else None,
                rejected_field=receipt.field if rejected else None,
            )
    raise ApiError(404, "not_found", f"no notice {notice_id!r} from feed {feed.name}")


@router.get("/v1/alerts/{alert_id}", response_model=AlertStatus, responses=_errors(401, 404))
async def get_alert(request: Request, alert_id: str, feed: Authenticated) -> AlertStatus:
    """An alert made from this feed's notice, and its deliveries."""
    ctx = _ctx(request)
    alert = await ctx.store.alerts.get(alert_id)
    if alert is None or alert.source not in feed.sources:
        raise ApiError(404, "not_found", f"no alert {alert_id!r} from feed {feed.name}")
    return await ctx.store.status(alert)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> Any:
    """Both the store and the broker can be reached."""
    ctx = _ctx(request)
    store_ok = broker_ok = "ok"
    try:
        await ctx.store.ping()
    except Exception as exc:
        store_ok = f"unreachable: {exc.__class__.__name__}"
    try:
        await ctx.broker()
    except ApiError:
        broker_ok = "unreachable"
    ready = Readiness(store=store_ok, broker=broker_ok)
    return JSONResponse(ready.model_dump(), 200 if store_ok == broker_ok == "ok" else 503)
