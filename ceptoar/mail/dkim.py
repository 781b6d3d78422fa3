"""DKIM signatures (RFC 6376) on each alert mail, RSA-SHA256 or Ed25519-SHA256 (RFC 8463).

Every recipient's mail differs (its To, Message-ID, return path and answer
link), so every mail is signed: with OpenSSL through `cryptography`, about
a millisecond for RSA-2048 and a few tens of microseconds for Ed25519 per
message (`bench/fanout.py --dkim` prints it). Canonicalisation is
relaxed/relaxed, which survives the re-folding and whitespace changes of
relays. The signed headers are those of `SIGNED` the message has; From is
signed once more than it appears, so no second From can be added.

Signing is off unless `CEPTOAR_DKIM_KEY` names a private key (PEM, made by
`ceptoar dkim keygen`, which prints the DNS TXT record to publish). A relay
that signs for the domain itself needs none of this.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from ceptoar.config import Settings
from ceptoar.errors import ConfigError

__all__ = ["SIGNED", "Algorithm", "DkimSigner", "generate_key", "txt_record"]

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

# Headers signed when present, in this order (lower case, as they are listed in h=).
SIGNED: Final = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "auto-submitted",
    "x-auto-response-suppress",
    "x-ceptoar-alert-id",
    "x-ceptoar-severity",
    # A digest's unsubscribe: RFC 8058 wants both signed.
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "x-ceptoar-tlp",
)

_WSP = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded value, whitespace runs as one space, none at the ends."""
    value = _WSP.sub(b" ", _FOLD.sub(b"", value)).strip(b" \t\r\n")
    return name.strip().lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: no whitespace at line ends, runs of it as one space, no empty lines at the end."""
    if not (b"\t" in body or b"  " in body or b" \r\n" in body or body.endswith(b" ")):
        # Nothing to change but the empty lines at the end, as in ceptoar's own (base64) bodies: a
        # tab, a run of whitespace or whitespace ending a line is all the rule changes.
        end = len(body)
        while body.endswith(b"\r\n", 0, end):
            end -= 2
        return body[:end] + b"\r\n" if end else b""
    lines = [_WSP.sub(b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
    while lines and not lines[-1]:
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def _split(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The header fields (name, raw value with its folding) and the body of a CRLF message."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, body = message, b""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\r\n" + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields, body


def _fold(tags: list[str]) -> str:
    """Tags joined by `; `, a new folded line before any that would make a line too long."""
    lines, line = [], "DKIM-Signature:"
    for i, tag in enumerate(tags):
        piece = " " + tag + (";" if i < len(tags) - 1 else "")
        if len(line) + len(piece) > 76 and line.strip():
            lines.append(line)
            line = "\t" + piece.lstrip()
        else:
            line += piece
    lines.append(line)
    return "\r\n".join(lines)[len("DKIM-Signature:") :]


def _chunks(text: str, width: int = 72) -> str:
    return "\r\n\t".join(text[i : i + width] for i in range(0, len(text), width))


@dataclass(frozen=True)
class DkimSigner:
    """Signs mail for `domain` under `selector` with one private key."""

    domain: str
    selector: str
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    clock: Callable[[], float] = time.time

    @property
    def algorithm(self) -> Algorithm:
        return "ed25519-sha256" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "rsa-sha256"

    @classmethod
    def from_file(cls, path: Path, *, domain: str, selector: str) -> DkimSigner:
        """The signer for a PEM private key file (RSA of at least 1024 bits, or Ed25519)."""
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"dkim_key: {path}: not a readable PEM private key ({exc})") from exc
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 1024:
                raise ConfigError(f"dkim_key: {path}: an RSA key of {key.key_size} bits is too short")
        elif not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"dkim_key: {path}: only RSA and Ed25519 keys sign DKIM")
        return cls(domain, selector, key)

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        """The configured signer, or None while signing is off (no `dkim_key`)."""
        if settings.dkim_key is None:
            return None
        domain, selector = settings.signing_domain, settings.dkim_selector
        return cls.from_file(settings.dkim_key, domain=domain, selector=selector)

    def signature(self, message: bytes) -> bytes:
        """The DKIM-Signature header field (with its CRLF) for a CRLF message."""
        fields, body = _split(message)
        body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()).decode()
        present = {name.strip().lower(): (name, value) for name, value in fields}
        names = [n for n in SIGNED if n.encode() in present] + ["from"]
        tags = [
            "v=1",
            f"a={self.algorithm}",
            "c=relaxed/relaxed",
            f"d={self.domain}",
            f"s={self.selector}",
            f"t={int(self.clock())}",
            f"h={':'.join(names)}",
            f"bh={body_hash}",
            "b=",
        ]
        value = _fold(tags)
        signed = b"".join(
            _relaxed_header(*present[n.encode()]) + b"\r\n" for n in names[:-1]
        ) + _relaxed_header(b"DKIM-Signature", value.encode())
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            raw = self.key.sign(hashlib.sha256(signed).digest())
        else:
            raw = self.key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        return f"DKIM-Signature:{value}{_chunks(base64.b64encode(raw).decode())}\r\n".encode()

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature first."""
        return self.signature(message) + message


def generate_key(algorithm: Algorithm = "rsa-sha256", *, bits: int = 2048) -> bytes:
    """A new private key, PEM (PKCS#8, unencrypted: keep the file to its owner)."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = (
        ed25519.Ed25519PrivateKey.generate()
        if algorithm == "ed25519-sha256"
        else rsa.generate_private_key(public_exponent=65537, key_size=bits)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def txt_record(signer: DkimSigner) -> str:
    """The DNS TXT record that publishes the signer's public key, as a zone file line."""
    public = signer.key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        k, p = "ed25519", public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        k = "rsa"
        p = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    text = f"v=DKIM1; k={k}; p={base64.b64encode(p).decode()}"
    # A TXT string holds at most 255 characters: longer records are several strings, joined by resolvers.
    strings = " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))
    return f"{signer.selector}._domainkey.{signer.domain}. IN TXT ( {strings} )"
