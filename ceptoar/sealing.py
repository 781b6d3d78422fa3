"""Secrets ceptoar must keep but never store in the clear: sealed with AES-GCM under the service's key.

A feed's signing secret has to be kept, since checking an HMAC needs it,
so it is kept sealed: a leaked database alone reveals no secret. The key
is `CEPTOAR_SECRET_KEY` (32 bytes, URL-safe base64); without one, a
development service makes `secret.key` in its var directory, readable by
its owner only. Production refuses to start without an explicit key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from ceptoar.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SEALED_PREFIX", "SecretBox", "decode_key", "derived_key", "is_sealed", "load_key", "new_key"]

SEALED_PREFIX = "sealed:v1:"
_NONCE = 12


def new_key() -> str:
    """A fresh key, as CEPTOAR_SECRET_KEY takes it."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def is_sealed(value: str) -> bool:
    return value.startswith(SEALED_PREFIX)


def decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.urlsafe_b64decode(text.strip().encode())
    except ValueError as exc:
        raise ConfigError(f"{where}: not URL-safe base64") from exc
    if len(key) != 32:
        raise ConfigError(f"{where}: a key is 32 bytes, this one is {len(key)}")
    return key


def load_key(path: Path) -> bytes:
    """The key in `path`, made there (owner-only) if there is none yet."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it meanwhile
        else:
            with os.fdopen(fd, "w") as out:
                out.write(new_key() + "\n")
    return decode_key(path.read_text(encoding="ascii"), str(path))


def derived_key(key: bytes, purpose: str) -> bytes:
    """A key for one purpose (`purpose` names it), derived from the service's key; never the key itself."""
    return hmac.new(key, b"ceptoar key for " + purpose.encode(), hashlib.sha256).digest()


class SecretBox:
    """Seals and opens short secrets with one key."""

    def __init__(self, key: bytes) -> None:
        # Loaded here, not with the module: the cipher's library costs a process about 9 MB,
        # and only the processes that open or seal a secret need it.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead: AESGCM = AESGCM(key)

    @classmethod
    def from_text(cls, text: str, *, where: str = "secret_key") -> SecretBox:
        return cls(decode_key(text, where))

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """The key in `path`, made there (owner-only) if there is none yet."""
        return cls(load_key(path))

    def seal(self, secret: str, *, context: str) -> str:
        """`secret`, sealed and bound to `context` (a feed's name): it opens under that context only."""
        nonce = secrets.token_bytes(_NONCE)
        sealed = self._aead.encrypt(nonce, secret.encode(), context.encode())
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, *, context: str) -> str:
        """The secret `seal` sealed; ConfigError if it was sealed under another key or context."""
        raw = base64.urlsafe_b64decode(sealed.removeprefix(SEALED_PREFIX).encode())
        try:
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except Exception as exc:  # cryptography's InvalidTag: the wrong key, or tampering
            raise ConfigError(f"a sealed secret of {context} does not open with this service's key") from exc
