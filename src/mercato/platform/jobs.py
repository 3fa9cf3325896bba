"""Durable background jobs: a ``jobs`` table used as an outbox, and an in-process runner.

A job is inserted in the same transaction as the change that causes it (:func:`enqueue`), so it exists if and
only if that change committed. The runner claims due jobs one at a time, runs the handler registered for the job's
name, and deletes the row on success. On failure it retries with exponential backoff (2, 4, 8 ... seconds, capped
at one hour); after ``max_attempts`` failures the job is marked ``dead`` and logged at error level, never dropped.
A job whose runner died mid-run is claimed again once its lease expires: delivery is at least once, so handlers
must be idempotent.

Periodic work that needs no row per occurrence (deleting expired carts) registers with :func:`periodic`: every
runner calls it after draining the due jobs, at most once per its interval (kept in memory, per process; the work
must be idempotent, as two processes may run it at the same time).

A claim is a lease (``locked_until``, :data:`LEASE` ahead) and a token (``claim``, new at every claim). While the
handler runs, a heartbeat extends the lease every third of it, so a long job is not claimed by a second runner;
every write of the run (heartbeat, delete, requeue, dead) names the token, so a runner that lost the job anyway
(stalled past its lease) changes nothing of the run that took it over.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import JSON, Index, String, Text, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from mercato.db.base import Base, uuid_pk
from mercato.db.engine import after_commit
from mercato.platform import clock

if TYPE_CHECKING:
    from mercato.platform.context import Services

log = structlog.get_logger("mercato.jobs")
Handler = Callable[["Services", dict[str, Any]], Awaitable[None]]
Periodic = Callable[["Services"], Awaitable[None]]
_HANDLERS: dict[str, Handler] = {}
_PERIODIC: dict[str, tuple[timedelta, Periodic]] = {}
LEASE = timedelta(minutes=5)
MAX_BACKOFF_S = 3600


class Job(Base):
    """One unit of background work. ``status``: ``queued`` | ``running`` | ``dead``; done jobs are deleted."""

    __tablename__ = "jobs"
    #: the runner's claim: queued jobs due by now, oldest first (without it SQLite reads every queued job,
    #: including the thousands due in days — cart and reservation expiries — and sorts them)
    __table_args__ = (Index("ix_jobs_status_run_at", "status", "run_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    name: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(10), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    run_at: Mapped[datetime] = mapped_column(default=clock.now, index=True)
    locked_until: Mapped[datetime | None]
    #: the running claim's token: set when a runner claims the job, required by that run's every write
    claim: Mapped[uuid.UUID | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=clock.now)


def handler(name: str) -> Callable[[Handler], Handler]:
    """Register ``fn`` as the handler of jobs called ``name`` (one handler per name)."""

    def register(fn: Handler) -> Handler:
        if name in _HANDLERS:
            raise ValueError(f"job handler {name!r} registered twice")
        _HANDLERS[name] = fn
        return fn

    return register


def periodic(name: str, *, every: timedelta) -> Callable[[Periodic], Periodic]:
    """Register ``fn(services)`` to run in every job runner after its due jobs, at most once per ``every`` (by
    :func:`mercato.platform.clock.now`; the first time at the runner's first pass). A failure is logged and tried
    again an interval later."""

    def register(fn: Periodic) -> Periodic:
        if name in _PERIODIC:
            raise ValueError(f"periodic work {name!r} registered twice")
        _PERIODIC[name] = (every, fn)
        return fn

    return register


def enqueue(
    session: AsyncSession, name: str, payload: dict[str, Any], *, run_at: datetime | None = None, attempts: int = 0
) -> uuid.UUID:
    """Add a job to the caller's transaction; it runs after commit (immediately, or at ``run_at`` UTC). Returns
    the job's id (for :func:`cancel`). ``attempts`` counts tries of the same work already made elsewhere (a job
    that carries on after an earlier one ended): the runner's ``max_attempts`` then bounds them all together.

    Only a job due now wakes the runner after the commit: a later one (a cart's expiry in 30 days, an order's
    reservation expiry) is found by the runner's regular poll, and waking it would only run an empty claim (a
    write transaction) and the gauge count for nothing, once per cart or order written."""
    now = clock.now()
    job_id = clock.new_id()
    session.add(Job(id=job_id, name=name, payload=payload, run_at=run_at or now, attempts=attempts))
    services = session.info.get("services")
    if services is not None and (run_at is None or run_at <= now):
        after_commit(session, services.jobs.wake)
    return job_id


async def cancel(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Drop a job that has not started, in the caller's transaction — e.g. a safety net (a reconciliation due
    later) whose work the request finished itself. A job already running or done is left alone."""
    await session.execute(delete(Job).where(Job.id == job_id, Job.status == "queued"))


def backoff_seconds(attempts: int) -> int:
    """Delay before retry number ``attempts`` (1-based): 2^attempts seconds, at most one hour."""
    return int(min(2**attempts, MAX_BACKOFF_S))


class JobRunner:
    """Runs due jobs in this process. ``start()`` launches the polling loop; ``run_due()`` drains once (tests,
    ``mercato worker``)."""

    def __init__(self, services: Services, *, poll_interval: float, max_attempts: int) -> None:
        self.services = services
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: when each :func:`periodic` work is next due in this process (absent: at the next pass)
        self._periodic_due: dict[str, datetime] = {}

    async def wake(self) -> None:
        """Ask the loop to look for work now (called after a commit that enqueued a job)."""
        self._wake.set()

    def start(self) -> None:
        """Start the background loop on the running event loop."""
        self._task = asyncio.create_task(self._loop(), name="mercato-job-runner")

    async def stop(self) -> None:
        """Stop the loop; a job being run is left to lease expiry and retried later."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("job_runner_error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)

    async def run_due(self, *, limit: int = 1000) -> int:
        """Run up to ``limit`` due jobs one after another, then the due :func:`periodic` work; returns how many
        jobs were attempted."""
        done = 0
        while done < limit:
            job = await self._claim()
            if job is None:
                break
            await self._run(job)
            done += 1
        await self._run_periodic()
        await self._update_gauges()
        return done

    async def _run_periodic(self) -> None:
        """Run the :func:`periodic` work that is due (a failure is logged; it runs again an interval later)."""
        for name, (every, fn) in _PERIODIC.items():
            now = clock.now()
            due = self._periodic_due.get(name, now)
            if now < due and due - now <= every:  # (due more than an interval ahead: the clock was set back)
                continue
            self._periodic_due[name] = now + every
            try:
                await fn(self.services)
            except Exception:
                log.exception("periodic_failed", work=name)

    async def _claim(self) -> Job | None:
        db = self.services.db
        now = clock.now()
        async with db.session(write=True) as session:
            query = (
                select(Job.id)
                .where(
                    ((Job.status == "queued") & (Job.run_at <= now))
                    | ((Job.status == "running") & (Job.locked_until < now))
                )
                .order_by(Job.run_at)
                .limit(1)
            )
            if not db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            job_id = (await session.execute(query)).scalar_one_or_none()
            if job_id is None:
                return None
            await session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(status="running", locked_until=now + LEASE, attempts=Job.attempts + 1, claim=clock.new_id())
            )
            job = await session.get(Job, job_id, populate_existing=True)
            assert job is not None
            return job

    async def _run(self, job: Job) -> None:
        fn = _HANDLERS.get(job.name)
        error: str | None = None
        if fn is None:
            error = f"no handler registered for job {job.name!r}"
        else:
            heartbeat = asyncio.create_task(self._heartbeat(job), name=f"mercato-job-heartbeat-{job.id}")
            try:
                await fn(self.services, job.payload)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("job_failed", job_id=str(job.id), job=job.name, attempt=job.attempts, error=error)
            finally:
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeat
        ours = (Job.id == job.id) & (Job.claim == job.claim)
        async with self.services.db.session(write=True) as session:
            if error is None:
                result = await session.execute(delete(Job).where(ours))
            elif job.attempts >= self.max_attempts:
                result = await session.execute(
                    update(Job).where(ours).values(status="dead", last_error=error, locked_until=None, claim=None)
                )
                if _rowcount(result):
                    log.error("job_dead", job_id=str(job.id), job=job.name, attempts=job.attempts, error=error)
            else:
                retry_at = clock.now() + timedelta(seconds=backoff_seconds(job.attempts))
                result = await session.execute(
                    update(Job)
                    .where(ours)
                    .values(status="queued", run_at=retry_at, last_error=error, locked_until=None, claim=None)
                )
        if not _rowcount(result):
            log.warning("job_claim_lost", job_id=str(job.id), job=job.name, attempt=job.attempts, error=error)

    async def _heartbeat(self, job: Job) -> None:
        """Extend ``job``'s lease to :data:`LEASE` from now every third of it (real seconds) while its handler
        runs, as long as this run still holds the claim; stops (logged) once another runner has taken it. A
        failed write is logged and tried again at the next beat."""
        while True:
            await asyncio.sleep(LEASE.total_seconds() / 3)
            try:
                async with self.services.db.session(write=True) as session:
                    result = await session.execute(
                        update(Job)
                        .where(Job.id == job.id, Job.claim == job.claim, Job.status == "running")
                        .values(locked_until=clock.now() + LEASE)
                    )
            except Exception:
                log.exception("job_heartbeat_failed", job_id=str(job.id), job=job.name)
                continue
            if not _rowcount(result):
                log.warning("job_claim_lost", job_id=str(job.id), job=job.name, attempt=job.attempts)
                return

    async def _update_gauges(self) -> None:
        async with self.services.db.session(write=False) as session:
            rows = (await session.execute(select(Job.status, func.count()).group_by(Job.status))).all()
        counts = dict(rows)
        self.services.metrics.jobs_pending.set(counts.get("queued", 0) + counts.get("running", 0))
        self.services.metrics.jobs_dead.set(counts.get("dead", 0))

    async def pending(self) -> int:
        """Jobs queued or running now (``/api/v1/status``)."""
        async with self.services.db.session(write=False) as session:
            count = await session.scalar(select(func.count()).select_from(Job).where(Job.status != "dead"))
        return int(count or 0)


def _rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE matched (``Result`` does not declare ``rowcount``; its cursor result has it)."""
    return int(getattr(result, "rowcount", 0) or 0)
