"""What every portal page shares for its safety: headers, cookies, CSRF, forms and rate limits.

- Headers: a Content-Security-Policy that allows no inline script or style
  and nothing from elsewhere, no framing, no referrer (a sign-in link is a
  credential), no caching, no indexing; HSTS when served over TLS.
- Session cookies hold a random token (only its SHA-256 is stored), are
  HttpOnly and SameSite=Lax. Over TLS (the request's, or an https
  CEPTOAR_PUBLIC_URL: a proxy in front terminates TLS) every cookie is
  Secure and named `__Host-…` (so no other host or path can set it);
  over plain HTTP, in development, each is scoped to its part of the site.
- CSRF: the `ceptoar_csrf` cookie holds a random value for the browser;
  every form carries an HMAC, under a key of the service's, of that value
  and of the session cookies the request carries, so a token is good for
  one browser's one session only. A POST whose form lacks it or differs,
  whose Origin (or Sec-Fetch-Site) is another site's, or that carries a
  session and comes from an opaque origin (`Origin: null`) that is not
  one of our own pages, is refused with 403.
- Rate limits count per client address and per account in this process
  (`RateLimit`); sign-in links are also counted per address in the
  database, so several hosts together mail no more.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from typing import Final
from urllib.parse import parse_qs, urlsplit

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_PURPOSE",
    "FORM_MAX",
    "OPS_COOKIE",
    "ORG_COOKIE",
    "SESSION_COOKIES",
    "Forbidden",
    "RateLimit",
    "SecureHeaders",
    "bound_csrf",
    "check_csrf",
    "client_of",
    "cookie_name",
    "cookie_of",
    "csrf_token",
    "delete_cookie",
    "hashed",
    "new_token",
    "read_form",
    "set_cookie",
]

CSRF_COOKIE: Final = "ceptoar_csrf"
# The sessions' cookies: an operator's, and a local government's address's.
OPS_COOKIE: Final = "ceptoar_ops"
ORG_COOKIE: Final = "ceptoar_portal"
SESSION_COOKIES: Final = (OPS_COOKIE, ORG_COOKIE)
# What the CSRF tokens' key is derived for (`Settings.derived_key`).
CSRF_PURPOSE: Final = "portal-csrf"
CSRF_FIELD: Final = "csrf"
# The largest form a portal page takes (the settings form is the largest).
FORM_MAX: Final = 16 * 1024

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_PORTAL_PATHS: Final = ("/portal", "/ops", "/digest")


class Forbidden(Exception):
    """A request refused before it does anything (CSRF, or another site's form)."""


def new_token() -> str:
    """A random token for a cookie or a link: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hashed(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def is_tls(request: Request) -> bool:
    """Whether the visitor reaches the portal over TLS: directly, or through a proxy in front of a service
    whose public address is https."""
    return _tls(request.scope)


def _tls(scope: Scope) -> bool:
    public: str | None = scope["app"].state.portal.settings.public_url
    return scope.get("scheme") == "https" or bool(public and public.startswith("https:"))


def cookie_name(request: Request, name: str) -> str:
    """A cookie's name as this request's site uses it: `__Host-NAME` over TLS."""
    return _named(name, tls=is_tls(request))


def _named(name: str, *, tls: bool) -> str:
    return f"__Host-{name}" if tls else name


def cookie_of(request: Request, name: str) -> str | None:
    """The value of the cookie `name` (as `cookie_name` names it) the request carries."""
    return request.cookies.get(cookie_name(request, name))


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, path: str, max_age: int | None
) -> None:
    """Set a session cookie; over TLS as `__Host-NAME`, which must have the path `/`."""
    tls = is_tls(request)
    response.set_cookie(
        cookie_name(request, name),
        value,
        max_age=max_age,
        path="/" if tls else path,
        httponly=True,
        secure=tls,
        samesite="lax",
    )


def delete_cookie(response: Response, request: Request, name: str, *, path: str) -> None:
    response.delete_cookie(cookie_name(request, name), path="/" if is_tls(request) else path)


def bound_csrf(key: bytes, browser: str, sessions: list[str]) -> str:
    """The CSRF token for the browser value `browser` and the session tokens it holds (in order)."""
    given = "\0".join([browser, *sessions]).encode("utf-8", "surrogateescape")
    return hmac.new(key, given, hashlib.sha256).hexdigest()


def _csrf_for(request: Request, browser: str) -> str:
    key: bytes = request.app.state.portal.csrf_key
    return bound_csrf(key, browser, [cookie_of(request, c) or "" for c in SESSION_COOKIES])


def csrf_token(request: Request) -> str:
    """The CSRF token forms on this page carry: bound to the visitor's browser cookie (a new one the
    page sets, if it has none) and to its sessions."""
    browser = cookie_of(request, CSRF_COOKIE)
    if browser is None or len(browser) < 32:
        browser = request.state.new_csrf = new_token()
    return _csrf_for(request, browser)


class SecureHeaders:
    """ASGI middleware: the portal's headers on every portal answer, and the CSRF cookie a page handed out.

    Plain ASGI rather than a BaseHTTPMiddleware, so the live counts' event streams pass straight through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope["path"]).startswith(_PORTAL_PATHS):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                tls = _tls(scope)
                if tls:
                    headers["Strict-Transport-Security"] = "max-age=31536000"
                new_csrf = scope.get("state", {}).get("new_csrf")
                if new_csrf is not None:
                    cookie = Response()
                    name = _named(CSRF_COOKIE, tls=tls)
                    cookie.set_cookie(name, new_csrf, path="/", httponly=True, secure=tls, samesite="lax")
                    headers.append("set-cookie", cookie.headers["set-cookie"])
            await send(message)

        await self.app(scope, receive, with_headers)


async def read_form(request: Request) -> dict[str, list[str]]:
    """A posted urlencoded form (nothing else is taken); empty when too large or of another type."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_MAX:
            return {}
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def check_csrf(request: Request, form: dict[str, list[str]]) -> None:
    """Refuse a POST whose form does not carry the CSRF token of the visitor's browser and sessions,
    or that another site, or an opaque origin with a session, sent."""
    origin = request.headers.get("origin")
    site = request.headers.get("sec-fetch-site")
    if site == "cross-site":
        raise Forbidden("a form from another site was refused")
    if origin == "null":
        # A browser sends `Origin: null` for our own pages' forms too, as they send no referrer; it then
        # says `Sec-Fetch-Site: same-origin`. A sandboxed frame or a data: URL elsewhere does not.
        if site != "same-origin" and any(cookie_of(request, c) for c in SESSION_COOKIES):
            raise Forbidden("a form from an opaque origin (Origin: null) was refused")
    elif origin:
        theirs = urlsplit(origin)
        if (theirs.scheme, theirs.netloc) != (request.url.scheme, request.url.netloc):
            raise Forbidden(f"a form from another site ({origin}) was refused")
    browser = cookie_of(request, CSRF_COOKIE) or ""
    given = form.get(CSRF_FIELD, [""])
    expected = _csrf_for(request, browser).encode()
    matches = len(given) == 1 and hmac.compare_digest(expected, given[0].encode("utf-8", "replace"))
    if not browser or not matches:
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page and try again")


def forbidden_page(exc: Forbidden) -> HTMLResponse:
    return HTMLResponse(f"<!DOCTYPE html><title>403</title><p>{_escape(str(exc))}</p>", 403)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def client_of(request: Request) -> str:
    """The client's address as the connection gives it (a proxy in front should pass the real one)."""
    return request.client.host if request.client else "unknown"


class RateLimit:
    """At most `most` events per key in any `per` seconds (a sliding window, in this process)."""

    def __init__(self, most: int, per: float) -> None:
        self._most, self._per = most, per
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        """Count one event for `key`; False (and not counted) when it is over the limit."""
        if self.exceeded(key):
            return False
        self._seen[key].append(time.monotonic())
        return True

    def exceeded(self, key: str) -> bool:
        """Whether `key` has had its `most` events in the window (counting nothing)."""
        now = time.monotonic()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self._per:
            seen.popleft()
        if len(self._seen) > 100_000:
            self._forget_idle(now)
            seen = self._seen.setdefault(key, deque())
        return len(seen) >= self._most

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, v in self._seen.items() if not v or v[-1] <= now - self._per]:
            del self._seen[key]
