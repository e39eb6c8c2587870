"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``"<webhook-id>.<webhook-timestamp>.<body>"``; the signature is
``"v1," + base64(HMAC-SHA256(key, content))`` where the key is the base64 part of a
``whsec_<base64>`` secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from tickwork.errors import InvalidArgument

__all__ = ["parse_secret", "signature", "signed_headers"]

_PREFIX = "whsec_"


def parse_secret(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret.

    Raises:
        InvalidArgument: not of that form (the message never shows the secret).
    """
    if not isinstance(secret, str) or not secret.startswith(_PREFIX):
        raise InvalidArgument(
            "the webhook secret must have the Standard Webhooks form whsec_<base64> "
            "(TICKWORK_WEBHOOK_SECRET)"
        )
    try:
        key = base64.b64decode(secret[len(_PREFIX) :], validate=True)
    except binascii.Error:
        raise InvalidArgument(
            "the webhook secret after whsec_ is not valid base64 (TICKWORK_WEBHOOK_SECRET)"
        ) from None
    if not key:
        raise InvalidArgument("the webhook secret holds no key after its prefix")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def signed_headers(key: bytes | None, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers (only ``webhook-id`` and ``webhook-timestamp``
    when ``key`` is None: the receiver can still drop duplicates)."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if key is not None:
        headers["webhook-signature"] = signature(key, msg_id, timestamp, body)
    return headers
