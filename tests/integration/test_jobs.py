"""The durable job queue (outbox) and email delivery, against the session's real database.

The ``services`` fixture does not run jobs by itself (``run_jobs=False``): each test calls ``run_due()`` and
moves a fixed clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import email
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import delete, select

from mercato.platform import jobs
from mercato.platform.context import Services
from mercato.platform.email import queue_email
from mercato.platform.jobs import LEASE, Job, JobRunner, backoff_seconds
from tests.conftest import Backend
from tests.integration.conftest import FixedClock, free_port


class Recorder:
    """A job handler registered under a unique name; it records every payload and fails the first
    ``failures`` times it runs."""

    def __init__(self, failures: int = 0) -> None:
        self.name = f"test.{uuid.uuid4().hex[:16]}"
        self.failures = failures
        self.calls: list[dict[str, Any]] = []
        jobs.handler(self.name)(self)

    async def __call__(self, services: Services, payload: dict[str, Any]) -> None:
        self.calls.append(payload)
        if len(self.calls) <= self.failures:
            raise RuntimeError(f"boom {len(self.calls)}")


async def _empty_queue(services: Services) -> None:
    async with services.db.session(write=True) as session:
        await session.execute(delete(Job))
    shutil.rmtree(services.settings.data_dir / "outbox", ignore_errors=True)


@pytest.fixture
async def queue(services: Services) -> AsyncIterator[Services]:
    """The session's services with an empty job table and outbox (before and after the test)."""
    await _empty_queue(services)
    yield services
    await _empty_queue(services)


async def job_rows(services: Services) -> list[Job]:
    async with services.db.session(write=False) as session:
        return list((await session.execute(select(Job).order_by(Job.created_at))).scalars())


async def enqueue(services: Services, name: str, payload: dict[str, Any], **kwargs: Any) -> None:
    async with services.db.session(write=True) as session:
        jobs.enqueue(session, name, payload, **kwargs)


def test_backoff_doubles_from_two_seconds_up_to_an_hour() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4, 11, 12, 13, 50)] == [2, 4, 8, 16, 2048, 3600, 3600, 3600]


async def test_job_enqueued_in_a_rolled_back_transaction_never_runs(queue: Services, fixed_clock: FixedClock) -> None:
    job = Recorder()

    async def failing_change() -> None:
        async with queue.db.session(write=True) as session:
            jobs.enqueue(session, job.name, {"order": 1})
            await session.flush()  # the row really is written inside the transaction
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError, match="the change failed"):
        await failing_change()

    assert await queue.jobs.run_due() == 0
    fixed_clock.advance(days=1)
    assert await queue.jobs.run_due() == 0
    assert job.calls == []
    assert await job_rows(queue) == []


async def test_committed_job_runs_once_and_its_row_is_deleted(queue: Services, fixed_clock: FixedClock) -> None:
    job = Recorder()
    await enqueue(queue, job.name, {"order": 7, "note": "é"})
    [row] = await job_rows(queue)
    assert (row.name, row.status, row.attempts, row.run_at) == (job.name, "queued", 0, fixed_clock.now())

    assert await queue.jobs.run_due() == 1

    assert job.calls == [{"order": 7, "note": "é"}]
    assert await job_rows(queue) == []
    fixed_clock.advance(hours=1)
    assert await queue.jobs.run_due() == 0
    assert len(job.calls) == 1


async def test_job_scheduled_for_later_waits_until_it_is_due(queue: Services, fixed_clock: FixedClock) -> None:
    job = Recorder()
    await enqueue(queue, job.name, {}, run_at=fixed_clock.now() + timedelta(minutes=10))

    fixed_clock.advance(minutes=9, seconds=59)
    assert await queue.jobs.run_due() == 0
    assert job.calls == []
    fixed_clock.advance(seconds=1)
    assert await queue.jobs.run_due() == 1
    assert job.calls == [{}]


async def test_failing_job_is_retried_with_backoff(queue: Services, fixed_clock: FixedClock) -> None:
    job = Recorder(failures=2)
    start = fixed_clock.now()
    await enqueue(queue, job.name, {"n": 1})

    assert await queue.jobs.run_due() == 1
    [row] = await job_rows(queue)
    assert (row.status, row.attempts, row.locked_until) == ("queued", 1, None)
    assert row.run_at == start + timedelta(seconds=2)
    assert row.last_error == "RuntimeError: boom 1"

    fixed_clock.advance(seconds=1)  # not due yet
    assert await queue.jobs.run_due() == 0
    assert len(job.calls) == 1

    fixed_clock.set(start + timedelta(seconds=2))
    assert await queue.jobs.run_due() == 1
    [row] = await job_rows(queue)
    assert (row.status, row.attempts, row.locked_until) == ("queued", 2, None)
    assert row.run_at == start + timedelta(seconds=2 + 4)
    assert row.last_error == "RuntimeError: boom 2"

    fixed_clock.set(start + timedelta(seconds=6))
    assert await queue.jobs.run_due() == 1
    assert job.calls == [{"n": 1}] * 3
    assert await job_rows(queue) == []


async def test_job_is_dead_after_max_attempts_and_never_runs_again(queue: Services, fixed_clock: FixedClock) -> None:
    max_attempts = queue.settings.job_max_attempts
    job = Recorder(failures=10**6)
    await enqueue(queue, job.name, {"n": 1})
    delays = []

    for attempt in range(1, max_attempts + 1):
        assert await queue.jobs.run_due() == 1
        [row] = await job_rows(queue)
        assert row.attempts == attempt
        if attempt < max_attempts:
            assert row.status == "queued"
            delays.append((row.run_at - fixed_clock.now()).total_seconds())
            fixed_clock.set(row.run_at)

    assert delays == [float(min(2**n, 3600)) for n in range(1, max_attempts)]  # doubling, capped at 1 h
    [row] = await job_rows(queue)
    assert (row.status, row.attempts, row.locked_until) == ("dead", max_attempts, None)
    assert row.last_error == f"RuntimeError: boom {max_attempts}"
    assert queue.metrics.registry.get_sample_value("mercato_jobs_dead") == 1
    assert await queue.jobs.pending() == 0

    fixed_clock.advance(days=30)
    assert await queue.jobs.run_due() == 0
    assert len(job.calls) == max_attempts
    assert [r.status for r in await job_rows(queue)] == ["dead"]


async def test_job_without_a_handler_is_kept_with_the_reason(queue: Services, fixed_clock: FixedClock) -> None:
    name = f"test.unregistered.{uuid.uuid4().hex[:8]}"
    await enqueue(queue, name, {})

    assert await queue.jobs.run_due() == 1

    [row] = await job_rows(queue)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.last_error == f"no handler registered for job {name!r}"


async def test_job_left_running_by_a_dead_runner_is_claimed_after_its_lease(
    queue: Services, fixed_clock: FixedClock
) -> None:
    job = Recorder()
    claimed_at = fixed_clock.now()
    async with queue.db.session(write=True) as session:
        session.add(
            Job(
                name=job.name,
                payload={"n": 1},
                status="running",
                attempts=1,
                run_at=claimed_at,
                locked_until=claimed_at + LEASE,
            )
        )

    fixed_clock.set(claimed_at + LEASE - timedelta(seconds=1))  # another runner may still be working on it
    assert await queue.jobs.run_due() == 0
    assert job.calls == []

    fixed_clock.set(claimed_at + LEASE + timedelta(seconds=1))
    assert await queue.jobs.run_due() == 1
    assert job.calls == [{"n": 1}]
    assert await job_rows(queue) == []


class Holder:
    """A job handler that records each run and, for the runs numbered in ``hold``, waits for its
    ``release[n]`` event after setting ``started[n]`` (a job still running while the test moves the clock)."""

    def __init__(self, hold: tuple[int, ...] = (1,), *, fail: bool = False) -> None:
        self.name = f"test.{uuid.uuid4().hex[:16]}"
        self.hold = hold
        self.fail = fail
        self.calls = 0
        self.started = {n: asyncio.Event() for n in hold}
        self.release = {n: asyncio.Event() for n in hold}
        jobs.handler(self.name)(self)

    async def __call__(self, services: Services, payload: dict[str, Any]) -> None:
        self.calls += 1
        run = self.calls
        if run in self.hold:
            self.started[run].set()
            await self.release[run].wait()
        if self.fail and run == 1:
            raise RuntimeError("first run failed")


class Log:
    """Stands in for the runner's logger: keeps the event names logged at warning level or above."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def _keep(self, event: str, **_: Any) -> None:
        self.events.append(event)

    warning = error = exception = _keep


def other_runner(services: Services) -> JobRunner:
    """A second runner on the same database, as another ``mercato worker`` process would be."""
    return JobRunner(services, poll_interval=1, max_attempts=services.settings.job_max_attempts)


async def test_a_job_that_outlives_its_lease_keeps_it_while_it_runs(
    queue: Services, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat extends the lease (every third of it) while the handler runs: another runner does not claim
    the job again, however long the handler takes, and it runs once."""
    monkeypatch.setattr(jobs, "LEASE", timedelta(seconds=0.3))  # heartbeat every 0.1 s of real time
    monkeypatch.setattr(jobs, "log", log := Log())
    job = Holder()
    await enqueue(queue, job.name, {})
    first = asyncio.create_task(queue.jobs.run_due())
    await asyncio.wait_for(job.started[1].wait(), 5)

    fixed_clock.advance(seconds=10)  # far past the lease taken at the claim
    extended = fixed_clock.now() + timedelta(seconds=0.3)
    for _ in range(50):  # the next heartbeat (0.1 s; up to 5 s on a busy machine)
        [row] = await job_rows(queue)
        if row.locked_until == extended:
            break
        await asyncio.sleep(0.1)
    assert (row.status, row.locked_until) == ("running", extended)
    assert await other_runner(queue).run_due() == 0

    job.release[1].set()
    assert await asyncio.wait_for(first, 5) == 1
    assert job.calls == 1
    assert await job_rows(queue) == []
    assert log.events == []  # every heartbeat and the delete matched this run's claim


@pytest.mark.parametrize("first_fails", [False, True], ids=["first-succeeds", "first-fails"])
async def test_a_run_that_lost_its_claim_leaves_the_job_to_its_new_runner(
    queue: Services, fixed_clock: FixedClock, monkeypatch: pytest.MonkeyPatch, first_fails: bool
) -> None:
    """A runner stalled past its lease (no heartbeat got through) lost the job to another runner: when the first
    run ends, its success does not delete the row and its failure does not requeue it; the second run's end does."""
    monkeypatch.setattr(jobs, "log", log := Log())
    job = Holder(hold=(1, 2), fail=first_fails)
    await enqueue(queue, job.name, {})
    first = asyncio.create_task(queue.jobs.run_due())
    await asyncio.wait_for(job.started[1].wait(), 5)
    fixed_clock.advance(seconds=LEASE.total_seconds() + 1)  # the lease ran out; the heartbeat (100 s) never ran
    second = asyncio.create_task(other_runner(queue).run_due())
    await asyncio.wait_for(job.started[2].wait(), 5)
    [claimed] = await job_rows(queue)
    assert (claimed.status, claimed.attempts) == ("running", 2)

    job.release[1].set()
    assert await asyncio.wait_for(first, 5) == 1
    assert log.events == (["job_failed", "job_claim_lost"] if first_fails else ["job_claim_lost"])

    [row] = await job_rows(queue)  # the second runner's claim, untouched
    assert (row.status, row.attempts, row.locked_until, row.last_error) == (
        "running",
        2,
        claimed.locked_until,
        None,
    )
    job.release[2].set()
    assert await asyncio.wait_for(second, 5) == 1
    assert job.calls == 2
    assert await job_rows(queue) == []
    assert log.events.count("job_claim_lost") == 1  # the second run's delete matched its claim


# --- email ------------------------------------------------------------------------------------------------


def outbox_messages(services: Services) -> list[EmailMessage]:
    outbox = services.settings.data_dir / "outbox"
    files = sorted(outbox.iterdir()) if outbox.exists() else []
    assert [f.suffix for f in files] == [".eml"] * len(files), files  # no half-written .tmp files left
    messages = []
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        assert isinstance(message, EmailMessage)
        messages.append(message)
    return messages


async def test_queued_email_is_written_to_the_outbox_as_eml(queue: Services, fixed_clock: FixedClock) -> None:
    async with queue.db.session(write=True) as session:
        queue_email(session, to="ada@example.com", subject="Заказ №42 отправлен", text="Hello Ada,\nit shipped.\n")

    async def failing_change() -> None:
        async with queue.db.session(write=True) as session:
            queue_email(session, to="bob@example.com", subject="never", text="rolled back")
            raise RuntimeError("rollback")

    with pytest.raises(RuntimeError, match="rollback"):
        await failing_change()
    assert outbox_messages(queue) == []  # nothing is sent inside the request

    assert await queue.jobs.run_due() == 1

    [message] = outbox_messages(queue)
    assert message["To"] == "ada@example.com"
    assert message["From"] == queue.settings.email_from
    assert message["Subject"] == "Заказ №42 отправлен"
    assert parsedate_to_datetime(message["Date"]) == fixed_clock.now()
    assert re.fullmatch(r"<[^<>@\s]+@mercato\.local>", message["Message-ID"])
    assert message.get_content() == "Hello Ada,\nit shipped.\n"
    assert await job_rows(queue) == []


class SmtpSink:
    """An aiosmtpd handler that keeps every envelope it receives."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd's hook name
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def smtp_server(smtp_port: int) -> Iterator[SmtpSink]:
    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
async def smtp_services(queue: Services, migrated: Backend, smtp_port: int) -> AsyncIterator[Services]:
    """Services of the same database whose email backend is SMTP on ``smtp_port``."""
    settings = migrated.settings(email_backend="smtp", smtp_url=f"smtp://127.0.0.1:{smtp_port}")
    services = Services.build(settings, cache_prefix=migrated.prefix)
    try:
        yield services
    finally:
        await services.close()


async def test_smtp_backend_delivers_to_an_smtp_server(
    smtp_services: Services, smtp_server: SmtpSink, fixed_clock: FixedClock
) -> None:
    async with smtp_services.db.session(write=True) as session:
        queue_email(session, to="ada@example.com", subject="Your receipt", text="Thanks for your order.\n")

    assert await smtp_services.jobs.run_due() == 1

    [envelope] = smtp_server.envelopes
    assert envelope.mail_from == "no-reply@mercato.local"
    assert envelope.rcpt_tos == ["ada@example.com"]
    message = email.message_from_bytes(envelope.original_content, policy=default_policy)
    assert isinstance(message, EmailMessage)
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Your receipt"
    assert parsedate_to_datetime(message["Date"]) == fixed_clock.now()
    assert message.get_content().replace("\r\n", "\n") == "Thanks for your order.\n"
    assert await job_rows(smtp_services) == []
    assert outbox_messages(smtp_services) == []


async def test_email_is_retried_while_the_smtp_server_is_down(
    smtp_services: Services, smtp_port: int, fixed_clock: FixedClock
) -> None:
    async with smtp_services.db.session(write=True) as session:
        queue_email(session, to="ada@example.com", subject="Your receipt", text="Thanks.\n")

    assert await smtp_services.jobs.run_due() == 1  # nothing listens on the port yet
    [row] = await job_rows(smtp_services)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.last_error

    sink = SmtpSink()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        fixed_clock.set(row.run_at)
        assert await smtp_services.jobs.run_due() == 1
    finally:
        controller.stop()
    assert [e.rcpt_tos for e in sink.envelopes] == [["ada@example.com"]]
    assert await job_rows(smtp_services) == []
