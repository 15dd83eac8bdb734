"""Server layer: the simulated CA's own order book, as plain state and rules.

This is "the other company": it keeps its own view of each order, decides on reviews, and
logs each decision for the service to poll. Storage is pluggable (SQL, or in memory for tests).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from domain.ca import CaDecision, DecisionKind, OrderRequest, WithdrawalAnswer, WithdrawalReply
from domain.model import DnsRecord, new_id
from domain.sandbox import SandboxDecision
from domain.statuses import CertificateType
from server.ca.x509 import IssuedPair, document_from_pem


class Stage(StrEnum):
    DOMAIN = "DOMAIN"
    ORGANIZATION = "ORGANIZATION"
    ISSUED = "ISSUED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"
    REVOKED = "REVOKED"
    DELETED = "DELETED"


class Review(StrEnum):
    NONE = "NONE"
    DOMAIN_CHECK = "DOMAIN_CHECK"
    ORGANIZATION = "ORGANIZATION"
    ADDITION = "ADDITION"
    WITHDRAWAL = "WITHDRAWAL"
    REVOCATION = "REVOCATION"
    DELETION = "DELETION"


OPEN_STAGES = frozenset({Stage.DOMAIN, Stage.ORGANIZATION})
# Reviews that interrupt another one, which resumes if they are turned down.
INTERRUPTING = frozenset({Review.ADDITION, Review.WITHDRAWAL, Review.DELETION})


# Makes a key and a certificate for (domains, issued at, validity in years): the CA's root signs.
Signer = Callable[[tuple[str, ...], datetime, int], IssuedPair]


def challenge_record(order_reference: str, domain: str) -> DnsRecord:
    base = domain.removeprefix("*.")
    digest = hashlib.sha256(f"{order_reference}|{base}".encode()).digest()
    token = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return DnsRecord(name=f"_acme-challenge.{base}", type="TXT", value=token)


@dataclass(slots=True)
class SimOrder:
    id: str
    reference: str
    type: CertificateType
    domains: tuple[str, ...]
    records: tuple[DnsRecord, ...]
    stage: Stage
    review: Review
    created_at: datetime
    suspended_review: Review = Review.NONE
    pending_domains: tuple[str, ...] = ()
    review_started_at: datetime | None = None
    issued_at: datetime | None = None
    last_seq: int = 0
    validity_years: int = 1
    certificate_pem: str | None = None
    private_key_pem: str | None = None
    new_decisions: list[CaDecision] = field(default_factory=list)

    @classmethod
    def place(cls, request: OrderRequest, now: datetime) -> SimOrder:
        return cls(
            id=new_id(),
            reference=request.reference,
            type=request.type,
            domains=request.domains,
            records=tuple(challenge_record(request.reference, d) for d in request.domains),
            stage=Stage.DOMAIN,
            review=Review.NONE,
            created_at=now,
            validity_years=request.validity_years,
        )

    # ---- requests from the service

    def _start(self, review: Review, now: datetime) -> None:
        if review in INTERRUPTING:
            self.suspended_review = self.review
        self.review = review
        self.review_started_at = now

    def request_domain_check(self, now: datetime) -> None:
        if self.stage is Stage.DOMAIN and self.review in (Review.NONE, Review.DOMAIN_CHECK):
            self._start(Review.DOMAIN_CHECK, now)

    def add_domains(self, domains: tuple[str, ...], now: datetime) -> None:
        if self.stage in OPEN_STAGES and self.review not in INTERRUPTING:
            self.pending_domains = domains
            self._start(Review.ADDITION, now)

    def request_withdrawal(self, now: datetime) -> WithdrawalReply:
        if self.stage is Stage.ISSUED:
            document = document_from_pem(self.certificate_pem) if self.certificate_pem else None
            return WithdrawalReply(WithdrawalAnswer.ALREADY_ISSUED, self.issued_at, document)
        if self.stage in OPEN_STAGES and self.review is not Review.WITHDRAWAL:
            self._start(Review.WITHDRAWAL, now)
        elif self.stage is Stage.REJECTED:
            # Nothing left to review: the withdrawal of a refused application succeeds.
            self._decide(DecisionKind.WITHDRAWAL_APPROVED, now)
        return WithdrawalReply(WithdrawalAnswer.ACCEPTED)

    def request_revocation(self, now: datetime) -> None:
        if self.stage is Stage.ISSUED:
            self._start(Review.REVOCATION, now)

    def request_deletion(self, now: datetime) -> None:
        if self.stage in OPEN_STAGES | {Stage.ISSUED} and self.review is not Review.DELETION:
            self._start(Review.DELETION, now)

    # ---- decisions

    def _decide(
        self,
        kind: DecisionKind,
        now: datetime,
        *,
        sign: Signer | None = None,
        records: tuple[DnsRecord, ...] = (),
        message: str | None = None,
    ) -> None:
        """Log a decision; with `sign`, the decision issues the certificate."""
        document = None
        if sign is not None:
            issued = sign(self.domains, now, self.validity_years)
            self.stage, self.issued_at = Stage.ISSUED, now
            self.certificate_pem, self.private_key_pem = issued.chain_pem, issued.private_key_pem
            document = document_from_pem(issued.chain_pem)
        self.last_seq += 1
        self.new_decisions.append(
            CaDecision(
                order_id=self.id,
                seq=self.last_seq,
                kind=kind,
                at=now,
                issued_at=now if document else None,
                records=records,
                message=message,
                document=document,
            )
        )

    def _resume(self, now: datetime) -> None:
        self.review, self.suspended_review = self.suspended_review, Review.NONE
        self.review_started_at = now if self.review is not Review.NONE else None

    def _settle(self) -> None:
        self.review, self.suspended_review, self.review_started_at = Review.NONE, Review.NONE, None

    def decide(self, decision: SandboxDecision, now: datetime, sign: Signer) -> bool:
        """Decide what is under review; False when there is nothing this decision can apply to.

        `sign` issues the certificate when the decision approves it."""
        if decision is SandboxDecision.ISSUE:
            if self.stage not in OPEN_STAGES:
                return False
            self._settle()
            self.pending_domains = ()
            self._decide(
                DecisionKind.ISSUED, now, sign=sign, message="The CA issued the certificate."
            )
            return True
        approve = decision is SandboxDecision.APPROVE
        review = self.review
        if review in (Review.NONE, Review.DOMAIN_CHECK) and self.stage is Stage.DOMAIN:
            if not approve:
                self._settle()
                self.stage = Stage.REJECTED
                self._decide(
                    DecisionKind.DOMAIN_CHECK_REJECTED, now, message="Domain check failed."
                )
            elif self.type is CertificateType.DV:
                self._settle()
                self._decide(DecisionKind.DOMAIN_CHECK_APPROVED, now, sign=sign)
            else:
                self.stage = Stage.ORGANIZATION
                self.review, self.review_started_at = Review.ORGANIZATION, now
                self._decide(DecisionKind.DOMAIN_CHECK_APPROVED, now)
        elif review is Review.ORGANIZATION:
            self._settle()
            if approve:
                self._decide(DecisionKind.ORGANIZATION_APPROVED, now, sign=sign)
            else:
                self.stage = Stage.REJECTED
                self._decide(
                    DecisionKind.ORGANIZATION_REJECTED, now, message="Organization check failed."
                )
        elif review is Review.ADDITION:
            if approve:
                self.domains += self.pending_domains
                self.records += tuple(
                    challenge_record(self.reference, d) for d in self.pending_domains
                )
                self.pending_domains = ()
                self.stage = Stage.DOMAIN
                self._settle()
                self._decide(DecisionKind.ADDITION_APPROVED, now, records=self.records)
            else:
                self.pending_domains = ()
                self._resume(now)
                self._decide(DecisionKind.ADDITION_REJECTED, now)
        elif review is Review.WITHDRAWAL:
            if approve:
                self.stage = Stage.CANCELLED
                self._settle()
                self._decide(DecisionKind.WITHDRAWAL_APPROVED, now)
            else:
                self._resume(now)
                self._decide(DecisionKind.WITHDRAWAL_REJECTED, now)
        elif review is Review.REVOCATION:
            self._settle()
            if approve:
                self.stage = Stage.REVOKED
                self._decide(DecisionKind.REVOCATION_APPROVED, now)
            else:
                self._decide(DecisionKind.REVOCATION_REJECTED, now)
        elif review is Review.DELETION:
            if approve:
                self.stage = Stage.DELETED
                self._settle()
                self._decide(DecisionKind.DELETION_APPROVED, now)
            else:
                self._resume(now)
                self._decide(DecisionKind.DELETION_REJECTED, now)
        else:
            return False
        return True

    def copy(self) -> SimOrder:
        return replace(self, new_decisions=[])
