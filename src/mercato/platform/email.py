"""Outgoing email: a ``file`` backend (``.eml`` files in ``<data dir>/outbox``, the default) and an ``smtp``
backend (aiosmtplib, ``MERCATO_SMTP_URL=smtp://user:pass@host:587?starttls=true``, ``smtps://`` for implicit TLS).

Requests never send mail themselves: they enqueue an ``email.send`` job in their transaction (see
:func:`queue_email`), and the job runner sends it with retries.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.platform import clock, jobs

if TYPE_CHECKING:
    from mercato.platform.context import Services


class EmailBackend(Protocol):
    """Sends one message; raises on failure so the job is retried."""

    async def send(self, message: EmailMessage) -> None: ...


class FileBackend:
    """Writes each message to ``directory/<UTC timestamp>-<id>.eml``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{clock.now():%Y%m%dT%H%M%S%f}-{clock.new_id().hex[:12]}.eml"
        tmp = self.directory / (name + ".tmp")
        tmp.write_bytes(bytes(message))
        tmp.rename(self.directory / name)


class SmtpBackend:
    """Sends through an SMTP server described by a URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.hostname = parts.hostname or "localhost"
        self.use_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.use_tls else 587)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.start_tls = query.get("starttls", ["false"])[0].lower() in {"1", "true", "yes"}

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            timeout=30,
        )


def build_message(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    """Build a plain-text UTF-8 message with ``Date`` and ``Message-ID`` headers (RFC 5322)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(clock.now().timestamp(), usegmt=True)
    message["Message-ID"] = make_msgid(domain="mercato.local")
    message.set_content(text)
    return message


def queue_email(session: AsyncSession, *, to: str, subject: str, text: str) -> None:
    """Enqueue an email in the caller's transaction: it is sent only if that transaction commits."""
    jobs.enqueue(session, "email.send", {"to": to, "subject": subject, "text": text})


@jobs.handler("email.send")
async def send_queued_email(services: Services, payload: dict[str, Any]) -> None:
    """Job handler: send ``{to, subject, text}`` through the configured backend."""
    message = build_message(services.settings.email_from, payload["to"], payload["subject"], payload["text"])
    await services.email.send(message)
