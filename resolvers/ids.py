"""Resolver layer: opaque global ids (base64 of "<Type>:<id>") and their decoding."""

from __future__ import annotations

import base64
import binascii
import re

CERTIFICATE = "Certificate"
WITHDRAWAL = "Withdrawal"
EVENT = "CertificateEvent"
TENANT = "Tenant"

# Stored ids are short tokens (uuid hex); anything else cannot name a stored object.
_LOCAL_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
# A global id longer than this cannot be one of ours; don't even decode it.
_MAX_GLOBAL_ID = 200


def to_global_id(type_name: str, local_id: str) -> str:
    return base64.b64encode(f"{type_name}:{local_id}".encode()).decode("ascii")


def from_global_id(global_id: str) -> tuple[str, str] | None:
    """(type name, local id), or None when the id is not one this API hands out."""
    if len(global_id) > _MAX_GLOBAL_ID:
        return None
    try:
        decoded = base64.b64decode(global_id.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error, ValueError):
        return None
    type_name, separator, local_id = decoded.partition(":")
    if not separator or not type_name or not _LOCAL_ID.match(local_id):
        return None
    return type_name, local_id


def local_id(global_id: str, type_name: str) -> str | None:
    """The local id behind a global id of `type_name`; None for malformed or other types."""
    parsed = from_global_id(global_id)
    if parsed is None or parsed[0] != type_name:
        return None
    return parsed[1]
