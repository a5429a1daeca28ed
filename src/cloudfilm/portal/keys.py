"""The server secret and what is derived from it.

Film links and access codes are *derived* from the secret (HMAC of the film id and its
generation), so the server can print the same link and code again (a lost paper report, the
demo banner) while the index keeps only their hashes: a copy of the index alone opens nothing.
Short secrets (6-digit codes, phone suffixes) are hashed with the secret too (an HMAC), since a
plain hash of a 6-digit number is reversed by trying a million values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cloudfilm.access.keys import mac, mac_hex, server_secret

__all__ = ["mac", "mac_hex", "server_secret"]


def link_token(secret: bytes, kind: str, ident: str, generation: int = 1) -> str:
    """A 256-bit URL-safe token for a film or share link (43 characters)."""
    raw = mac(secret, "link", kind, ident, str(generation))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def six_digits(secret: bytes, kind: str, ident: str, generation: int = 1) -> str:
    raw = mac(secret, "code", kind, ident, str(generation))
    return f"{int.from_bytes(raw[:8], 'big') % 1_000_000:06d}"


def sha256_hex(text: str) -> str:
    """Lookup key of a long random credential (a link token, a session id)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))


def new_id() -> str:
    """A public handle (film_id, share_id, report_id): random, not a credential."""
    return secrets.token_hex(8)


def digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def phone_key(secret: bytes, phone: str) -> str | None:
    """The patient's phone number as a key that links films and never shows the number."""
    number = digits(phone)
    if len(number) < 6:
        return None
    return mac_hex(secret, "phone", number[-11:])


def mask_phone(phone: str) -> str:
    number = digits(phone)
    return f"{number[:3]}****{number[-4:]}" if len(number) >= 7 else "****"
