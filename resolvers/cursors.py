"""Resolver layer: opaque cursors, base64url of compact JSON (the same bytes orjson writes)."""

from __future__ import annotations

import base64
import json


def encode_json_cursor(value: object) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode("ascii")


def decode_json_cursor(cursor: str) -> object:
    """The JSON value a cursor holds; ValueError when it holds none (bad base64, bad UTF-8,
    bad JSON, or characters outside ASCII)."""
    return json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
