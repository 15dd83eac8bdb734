"""The GraphQL documents the scenarios send, and the request bodies built from them."""

from __future__ import annotations

from typing import Any

import orjson

# (a) the console list: every Certificate field, the last withdrawal and the events.
CONSOLE_LIST = """
query ConsoleList($first: Int!) {
  certificates(first: $first) {
    nodes {
      id name type domainType brand domain additionalDomains status statusLabel
      availableActions version createdAt updatedAt issuedAt expiresAt
      domainValidation { method records { name type value } verifiedAt }
      organization { name country verifiedAt }
      lastWithdrawal { id status failureReason previousStatus requestedAt resolvedAt }
      events { id kind fromStatus toStatus at message }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

# (b) status polling.
STATUS_POLL = """
query StatusPoll($id: ID!) { certificate(id: $id) { status version updatedAt } }
"""

# (c) withdrawing an application, with an idempotency key as the console sends one.
WITHDRAW = """
mutation Withdraw($id: ID!, $key: String) {
  withdrawApplication(input: {certificateId: $id, idempotencyKey: $key}) {
    __typename
    ... on WithdrawApplicationSuccess { certificate { status version } withdrawal { id status } }
    ... on Error { code message }
  }
}
"""
WITHDRAW_SUCCESS = "WithdrawApplicationSuccess"

# (d) deep paging: a light selection, so the page query's own cost shows.
DEEP_PAGE = """
query DeepPage($first: Int!, $after: String) {
  certificates(first: $first, after: $after) {
    nodes { id name status updatedAt }
    pageInfo { hasNextPage endCursor }
  }
}
"""

# (e) the status feed.
STATUS_FEED = """
subscription StatusFeed {
  certificateStatusChanged {
    previousStatus status changedAt certificate { id name status statusLabel version }
  }
}
"""

PAGE_SIZE = 50


def body(query: str, operation: str, variables: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"query": " ".join(query.split()), "operationName": operation, "variables": variables}
    )


# A marker the Lua scripts put in place of the id (ids are base64: no `@` in them).
ID_SLOT = "@ID@"


def split_on_slot(raw: bytes) -> list[str]:
    """The body around each `ID_SLOT`, for a load generator that fills in ids."""
    return raw.decode().split(ID_SLOT)
