"""A digest's one-click unsubscribe (RFC 8058): `PUBLIC_URL/digest/unsubscribe/ADDRESS_ID-MAC`.

A mail program that offers "unsubscribe" POSTs `List-Unsubscribe=One-Click`
to the link; a person who opens it gets a page with a button that does the
same. Either switches that address's digest off, audited. A GET changes
nothing (mail scanners fetch every link). The link, with its MAC, is the
credential: the POST needs no session or CSRF token, since no one who
does not hold the link can name it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from ceptoar.api.portal.pages import portal_of
from ceptoar.api.portal.security import client_of, read_form
from ceptoar.bounces.links import UnsubscribeLinks
from ceptoar.log import get_logger
from ceptoar.model.digest import DigestKind
from ceptoar.store import Actor

__all__ = ["router"]

log = get_logger(__name__)

router = APIRouter(prefix="/digest", include_in_schema=False)


def _address_id(request: Request, token: str) -> int | None:
    portal, _ = portal_of(request)
    links = UnsubscribeLinks.from_settings(portal.settings)
    return None if links is None else links.read(token)


@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def confirm(request: Request, token: str) -> Response:
    """The button that stops the digest; opening the page changes nothing."""
    portal, store = portal_of(request)
    address_id = _address_id(request, token)
    address = None if address_id is None else await store.portal.address_of(address_id)
    status = 200 if address is not None else 404
    return portal.page(request, "unsubscribe.html.j2", status=status, target=address, done=False)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe(request: Request, token: str) -> Response:
    """Switch the address's digest off (a one-click POST, or the page's button); audited."""
    portal, store = portal_of(request)
    await read_form(request)  # `List-Unsubscribe=One-Click`, or the button's empty form
    address_id = _address_id(request, token)
    address = None if address_id is None else await store.portal.address_of(address_id)
    if address is None or address_id is None:
        return portal.page(request, "unsubscribe.html.j2", status=404, target=None, done=False)
    who = Actor(operator=address.email, host=f"one-click {client_of(request)}")
    before = await store.digests.set_choice(address_id, DigestKind.NONE, who=who, why="digest-unsubscribe")
    log.info("digest.unsubscribed", address_id=address_id, was=before)
    return portal.page(request, "unsubscribe.html.j2", target=address, done=True)
