"""Property-based: random sequences of user actions, CA decisions, CA outages and worker rounds
over the real service, simulated CA and a real SQLite file.

Whatever the sequence: every status change is a row of the transition table, each event
starts where the previous one ended, a refused or failed action changes nothing, and no
withdrawal is lost: each one submitted is stored, is PENDING exactly while its certificate
waits on it, and keeps its result once the CA has decided.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from domain import lifecycle
from domain.commands import Application
from domain.results import (
    CaAlreadyApproved,
    CaUnreachable,
    CertificateChanged,
    WithdrawalSubmitted,
)
from domain.sandbox import SandboxDecision
from domain.statuses import (
    CertificateStatus,
    CertificateType,
    DomainType,
    EventKind,
    ValidationMethod,
)
from server.migrate import upgrade
from server.persistence.mapping import certificates, events, withdrawals
from server.seed import drive_to
from tests.server.conftest import Stack, build_stack

S = CertificateStatus
MAX_EXAMPLES = 30
SEEDED = [
    S.PENDING_DOMAIN_VERIFICATION,
    S.PENDING_ORGANIZATION_VERIFICATION,
    S.CA_VERIFYING_DOMAIN_ADDITION,
    S.CA_VERIFYING_WITHDRAWAL,
    S.ISSUED,
    S.REJECTED,
    S.CA_VERIFYING_REVOCATION,
    S.CA_VERIFYING_DELETION,
]
STEPS = 40


class Lifecycle(RuleBasedStateMachine):
    """One fresh database per example; `template` is a migrated SQLite file to copy."""

    template: Path
    workdir: Path
    examples = 0
    happened: set[EventKind]

    certificates = Bundle("certificates")

    def __init__(self) -> None:
        super().__init__()
        type(self).examples += 1
        database = self.workdir / f"example-{type(self).examples}.db"
        shutil.copy(self.template, database)
        self.database = database
        self.runner = asyncio.Runner()
        self.stack: Stack = self.run(build_stack(f"sqlite+aiosqlite:///{database}"))
        self.count = 0
        # Every withdrawal the service said it submitted, and its result once decided.
        self.submitted: dict[str, str] = {}  # withdrawal -> certificate
        self.results: dict[str, str] = {}  # withdrawal -> SUCCEEDED | FAILED
        self.keys: dict[str, tuple[str, str]] = {}  # key -> (certificate, withdrawal)
        self.reachable = True
        self.steps = 0

    def run(self, work: Any) -> Any:
        return self.runner.run(work)

    def teardown(self) -> None:
        self.run(self.stack.db.dispose())
        self.runner.close()
        self.database.unlink(missing_ok=True)

    # ---- a head start: one certificate already where the interesting transitions begin

    @initialize(target=certificates, status=st.sampled_from(SEEDED))
    def seeded(self, status: CertificateStatus) -> str:
        stack = self.stack
        certificate = self.run(
            drive_to(
                stack.service,
                stack.sandbox,
                stack.tenant,
                status,
                name="seed",
                domain="seed.example.com",
            )
        )
        return str(certificate)

    # ---- user actions

    @rule(
        target=certificates,
        type=st.sampled_from(CertificateType),
        domain_type=st.sampled_from(DomainType),
    )
    def create(self, type: CertificateType, domain_type: DomainType) -> str:
        self.count += 1
        result = self.run(
            self.stack.service.create_certificate(
                self.stack.tenant,
                name=f"fuzz-{self.count}",
                type=type,
                domain_type=domain_type,
                brand="DigiCert",
                domain_quota=3 if domain_type is DomainType.MULTIPLE else 1,
                validity_years=1,
            )
        )
        assert isinstance(result, CertificateChanged)
        return str(result.certificate.id)

    @rule(
        target=certificates,
        type=st.sampled_from(CertificateType),
        domain_type=st.sampled_from(DomainType),
        then=st.sampled_from([None, None, *SandboxDecision]),
    )
    def create_and_apply(
        self, type: CertificateType, domain_type: DomainType, then: SandboxDecision | None
    ) -> str:
        """The usual start of a story in one step, so that runs reach the CA's reviews; with
        `then`, the application is withdrawn at once and the CA answers."""
        certificate = self.create(type, domain_type)
        self.apply(certificate, 1)
        if then is not None:
            self.withdraw(certificate, None, then)
        return certificate

    @rule(certificate=certificates, extra=st.integers(0, 2))
    def apply(self, certificate: str, extra: int) -> None:
        loaded = self.load(certificate)
        base = f"c{certificate[:8]}-{loaded.version}.example.com"
        domain = f"*.{base}" if loaded.domain_type is DomainType.WILDCARD else base
        more = (
            [f"m{i}.{base}" for i in range(extra)]
            if loaded.domain_type is DomainType.MULTIPLE
            else []
        )
        organized = loaded.type is not CertificateType.DV
        application = Application(
            domain=domain,
            additional_domains=more,
            method=ValidationMethod.DNS,
            organization_name="Acme" if organized else None,
            organization_country="DE" if organized else None,
        )
        self.act(certificate, self.stack.service.apply(self.stack.tenant, certificate, application))

    @rule(certificate=certificates)
    def verify_domain(self, certificate: str) -> None:
        self.act(certificate, self.stack.service.verify_domain(self.stack.tenant, certificate))

    @rule(certificate=certificates, n=st.integers(1, 2))
    def add_domains(self, certificate: str, n: int) -> None:
        version = self.load(certificate).version
        domains = [f"a{i}-{version}.c{certificate[:8]}.example.com" for i in range(n)]
        self.act(
            certificate, self.stack.service.add_domains(self.stack.tenant, certificate, domains)
        )

    @rule(
        certificate=certificates,
        key=st.sampled_from([None, "k1", "k2", "k3"]),
        answer=st.sampled_from([None, *SandboxDecision]),
    )
    def withdraw(self, certificate: str, key: str | None, answer: SandboxDecision | None) -> None:
        """A withdrawal; with an `answer`, the CA decides on it at once (as often it will)."""
        result = self.act(
            certificate, self.stack.service.withdraw(self.stack.tenant, certificate, key)
        )
        if answer is not None and isinstance(result, WithdrawalSubmitted):
            self.ca_decides(certificate, answer, learnt=True)
        if isinstance(result, WithdrawalSubmitted | CaAlreadyApproved):
            withdrawal = str(result.withdrawal.id)
            if key is not None and key in self.keys:
                # A replay answers with the first withdrawal, for the same certificate only.
                assert self.keys[key] == (certificate, withdrawal)
            elif key is not None and isinstance(result, WithdrawalSubmitted):
                self.keys[key] = (certificate, withdrawal)
            self.submitted[withdrawal] = certificate
        elif key is not None and key in self.keys and self.keys[key][0] != certificate:
            assert type(result).__name__ == "InvalidInput", result

    @rule(certificate=certificates)
    def revoke(self, certificate: str) -> None:
        self.act(certificate, self.stack.service.revoke(self.stack.tenant, certificate, "fuzz"))

    @rule(certificate=certificates)
    def delete(self, certificate: str) -> None:
        self.act(certificate, self.stack.service.delete(self.stack.tenant, certificate))

    # ---- the CA and the worker

    @rule(
        certificate=certificates,
        decision=st.sampled_from(SandboxDecision),
        learnt=st.sampled_from([True, True, False]),
    )
    def ca_decides(self, certificate: str, decision: SandboxDecision, learnt: bool) -> None:
        """The CA decides; mostly the worker learns of it at once, sometimes only later."""
        order = self.load(certificate).ca_order_id
        if order is not None:
            self.run(self.stack.ca.decide(order, decision))
            if learnt:
                self.worker_round()

    # Mostly reachable: an unreachable CA refuses everything, which explores little.
    @rule(flag=st.sampled_from([True, True, True, True, False]))
    def ca_reachable(self, flag: bool) -> None:
        self.run(self.stack.ca.set_reachable(flag))
        self.reachable = flag

    @rule()
    def worker_round(self) -> None:
        try:
            self.run(self.stack.worker.run_once())
        except Exception as error:
            # Only the CA being away may stop a round; the worker then backs off.
            assert not self.reachable, error
            assert type(error).__name__ == "CaUnavailable"

    # ---- checks

    def load(self, certificate: str) -> Any:
        return self.run(self.stack.load(certificate))

    def act(self, certificate: str, work: Any) -> Any:
        before = self.load(certificate)
        result = self.run(work)
        after = self.load(certificate)
        replay = (
            isinstance(result, WithdrawalSubmitted) and str(result.withdrawal.id) in self.submitted
        )
        if isinstance(result, CertificateChanged | WithdrawalSubmitted | CaAlreadyApproved) and (
            not replay
        ):
            assert after.version > before.version
        else:
            # Refused, replayed, or the CA could not be reached: nothing changed at all.
            assert (after.version, after.status) == (before.version, before.status), result
            if isinstance(result, CaUnreachable):
                assert not self.reachable
        return result

    @invariant()
    def the_history_follows_the_table(self) -> None:
        rows, history, withdrawn = self.run(self.read_everything())
        for certificate_id, (status, version, last_withdrawal) in rows.items():
            trail = history[certificate_id]
            assert [e["version"] for e in trail] == list(range(1, len(trail) + 1))
            assert trail[0]["kind"] == EventKind.CREATED and trail[0]["from_status"] is None
            previous = None
            for event in trail:
                source = S(event["from_status"]) if event["from_status"] else None
                target = S(event["to_status"])
                assert source == previous, trail
                assert lifecycle.is_allowed(EventKind(event["kind"]), source, target), event
                previous = target
            assert previous == S(status) and version == len(trail)
            type(self).happened.update(EventKind(e["kind"]) for e in trail)
            # The certificate's own withdrawals: one PENDING at most, exactly while it waits.
            own = withdrawn.get(certificate_id, {})
            pending = [w for w, s in own.items() if s == "PENDING"]
            if S(status) is S.CA_VERIFYING_WITHDRAWAL:
                assert pending == [last_withdrawal]
            else:
                assert pending == []

    @invariant()
    def no_withdrawal_result_is_lost(self) -> None:
        _, _, withdrawn = self.run(self.read_everything())
        stored = {w: s for own in withdrawn.values() for w, s in own.items()}
        for withdrawal, certificate in self.submitted.items():
            assert withdrawal in withdrawn.get(certificate, {}), "a submitted withdrawal vanished"
            status = stored[withdrawal]
            if withdrawal in self.results:
                assert status == self.results[withdrawal], "a decided withdrawal changed result"
            elif status != "PENDING":
                self.results[withdrawal] = status

    async def read_everything(
        self,
    ) -> tuple[
        dict[str, tuple[str, int, str | None]], dict[str, list[Any]], dict[str, dict[str, str]]
    ]:
        async with self.stack.engine.connect() as connection:
            rows = {
                row.id: (row.status, row.version, row.last_withdrawal_id)
                for row in await connection.execute(
                    select(
                        certificates.c.id,
                        certificates.c.status,
                        certificates.c.version,
                        certificates.c.last_withdrawal_id,
                    )
                )
            }
            history: dict[str, list[Any]] = {}
            for event in await connection.execute(
                select(events).order_by(events.c.certificate_id, events.c.version)
            ):
                history.setdefault(event.certificate_id, []).append(event._mapping)
            withdrawn: dict[str, dict[str, str]] = {}
            for withdrawal in await connection.execute(select(withdrawals)):
                withdrawn.setdefault(withdrawal.certificate_id, {})[withdrawal.id] = (
                    withdrawal.status
                )
        return rows, history, withdrawn


def test_random_lifecycles_never_leave_the_table_nor_lose_a_withdrawal(tmp_path: Path) -> None:
    template = tmp_path / "template.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{template}"))
    machine = type(
        "FuzzedLifecycle",
        (Lifecycle,),
        {"template": template, "workdir": tmp_path, "happened": set()},
    )
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
            # The same examples every run: the coverage check below cannot fail by luck.
            derandomize=True,
            # No shrinking: with a database per example it takes minutes. A failure still
            # prints its whole sequence of steps, and `@seed` from the report replays it.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
        ),
    )
    assert machine.examples >= MAX_EXAMPLES
    # The runs did what matters: withdrawals submitted and decided both ways, issues, deletions.
    assert {
        EventKind.WITHDRAWAL_REQUESTED,
        EventKind.WITHDRAWAL_SUCCEEDED,
        EventKind.WITHDRAWAL_FAILED,
        EventKind.DELETED,
    } <= machine.happened, machine.happened
