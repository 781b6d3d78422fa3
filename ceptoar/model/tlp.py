"""The one TLP 2.0 gate every mail passes, whatever its kind.

CLEAR and GREEN reach any address; AMBER only addresses with the security
role; AMBER+STRICT only an organisation's designated security contact; RED
is never fanned out: an operator releases it to the addresses they name.
The dispatcher applies it when it chooses an audience
(alert, update, cancel alike), and the mailer once more just before it
sends, so a path that chose its recipients otherwise (a resend, an address
whose role changed since) cannot let a mail through either.
"""

from __future__ import annotations

from ceptoar.model.notice import Tlp
from ceptoar.model.subscriber import Role

__all__ = ["tlp_withholds", "withheld_reply"]

_NEEDS: dict[str, tuple[str, str]] = {
    Tlp.AMBER: ("tlp-amber-needs-security-role", "TLP:AMBER reaches only addresses with the security role"),
    Tlp.AMBER_STRICT: (
        "tlp-amber-strict-needs-contact",
        "TLP:AMBER+STRICT reaches only the organisation's designated security contact",
    ),
    Tlp.RED: ("tlp-red", "TLP:RED is never fanned out"),
}


def tlp_withholds(tlp: str, *, role: str, contact: bool, released: bool = False) -> str | None:
    """Why TLP keeps a mail labelled `tlp` from an address with this role, or None when it may have it.

    `released`: an operator released the alert to addresses they named
    (`ceptoar release`), which is the only way a TLP:RED mail goes out.
    """
    if tlp in (Tlp.CLEAR, Tlp.GREEN) or (tlp == Tlp.RED and released):
        return None
    if tlp == Tlp.AMBER and role == Role.SECURITY:
        return None
    if tlp == Tlp.AMBER_STRICT and contact:
        return None
    return _NEEDS.get(tlp, ("tlp-unknown", f"unknown TLP label {tlp!r}"))[0]


def withheld_reply(tlp: str) -> str:
    """What a delivery stopped by the gate keeps as its reason."""
    return "not sent: " + _NEEDS.get(tlp, ("", f"unknown TLP label {tlp!r}"))[1]
