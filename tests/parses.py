"""Test support: the documents graphql-core's parser is started on (ours and Strawberry's
parses both go through `Parser`), counted instead of timed."""

from __future__ import annotations

from typing import Any

import pytest
from graphql.language import parser


def record_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on until the test ends, the source of every document parsed, in order."""
    started: list[str] = []
    original = parser.Parser.__init__

    def counting(self: parser.Parser, source: Any, *args: Any, **kwargs: Any) -> None:
        started.append(source if isinstance(source, str) else source.body)
        original(self, source, *args, **kwargs)

    monkeypatch.setattr(parser.Parser, "__init__", counting)
    return started
