"""The application's long-lived services, built once per app and reachable from any database session.

Every session handed out by :class:`~mercato.db.Database` carries ``session.info["services"]``, so services that
need the cache, the job queue or the settings take only the session (:func:`services_of`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.config import Settings
from mercato.db.engine import Database
from mercato.platform.cache import Caches
from mercato.platform.email import EmailBackend, FileBackend, SmtpBackend
from mercato.platform.jobs import JobRunner
from mercato.platform.metrics import Metrics

if TYPE_CHECKING:
    from mercato.web.ratelimit import RateLimiter


@dataclass
class Services:
    """Settings plus the process-wide collaborators (database, cache, jobs, email, metrics, rate limiter)."""

    settings: Settings
    db: Database
    cache: Caches
    metrics: Metrics
    email: EmailBackend
    jobs: JobRunner = field(init=False)
    limiter: RateLimiter = field(init=False)

    @classmethod
    def build(cls, settings: Settings, *, cache_prefix: str = "mercato:") -> Services:
        """Create every collaborator from ``settings`` (no I/O happens yet)."""
        import mercato.handlers  # noqa: F401 - registers every domain's job handlers
        from mercato.web.ratelimit import RateLimiter

        metrics = Metrics()
        db = Database(settings.database_url, pool_size=settings.db_pool_size, sqlite_readers=settings.sqlite_readers)
        email: EmailBackend = (
            SmtpBackend(settings.smtp_url)
            if settings.uses_smtp and settings.smtp_url
            else FileBackend(settings.data_dir / "outbox")
        )
        services = cls(settings, db, Caches(settings.redis_url, metrics=metrics, prefix=cache_prefix), metrics, email)
        services.jobs = JobRunner(
            services, poll_interval=settings.job_poll_interval, max_attempts=settings.job_max_attempts
        )
        services.limiter = RateLimiter(settings, prefix=cache_prefix)
        db.sessionmaker.configure(info={"services": services})
        db.write_sessionmaker.configure(info={"services": services})
        return services

    async def close(self) -> None:
        """Release connections (database pool, Redis)."""
        await self.jobs.stop()
        await self.cache.close()
        await self.limiter.close()
        await self.db.dispose()


def services_of(session: AsyncSession) -> Services:
    """The :class:`Services` of the app that opened ``session``."""
    services: Services = session.info["services"]
    return services
