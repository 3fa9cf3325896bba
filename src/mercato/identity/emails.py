"""Texts of the account emails (verification, password reset, invitation, password changed, email change)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from mercato.platform.context import services_of
from mercato.platform.email import queue_email


def _link(session: AsyncSession, path: str, token: str) -> str:
    return f"{services_of(session).settings.public_url.rstrip('/')}{path}?token={token}"


def verification(session: AsyncSession, to: str, token: str) -> None:
    """Queue the 'confirm your email' message with its single-use token."""
    queue_email(
        session,
        to=to,
        subject="Confirm your email address",
        text=(
            "Welcome to the shop!\n\nConfirm your email address by opening this link:\n"
            f"{_link(session, '/verify-email', token)}\n\n"
            f"Or send this token to POST /api/v1/auth/verify-email:\n{token}\n"
        ),
    )


def password_reset(session: AsyncSession, to: str, token: str) -> None:
    """Queue a reset link valid for one hour."""
    queue_email(
        session,
        to=to,
        subject="Reset your password",
        text=(
            "Someone asked to reset the password of your account. If it was you, open this link within an hour:\n"
            f"{_link(session, '/reset-password', token)}\n\nToken for POST /api/v1/auth/reset-password:\n{token}\n\n"
            "If it was not you, ignore this message; your password is unchanged.\n"
        ),
    )


def invitation(session: AsyncSession, to: str, role: str, token: str) -> None:
    """Queue a staff invitation with a set-password token."""
    queue_email(
        session,
        to=to,
        subject="You have been invited to the shop's staff",
        text=(
            f"You have been given a {role} account. Choose your password with this link (valid 72 hours):\n"
            f"{_link(session, '/reset-password', token)}\n\nToken for POST /api/v1/auth/reset-password:\n{token}\n"
        ),
    )


def password_changed(session: AsyncSession, to: str) -> None:
    """Queue the notice that the password was changed."""
    queue_email(
        session,
        to=to,
        subject="Your password was changed",
        text=(
            "The password of your account was just changed and your other sessions were signed out.\n"
            "If you did not do this, reset your password at once.\n"
        ),
    )


def email_change(session: AsyncSession, to: str, token: str) -> None:
    """Queue the confirmation sent to a new address."""
    queue_email(
        session,
        to=to,
        subject="Confirm your new email address",
        text=(
            "Confirm that this is the new email address of your account:\n"
            f"{_link(session, '/verify-email', token)}\n\nToken for POST /api/v1/auth/verify-email:\n{token}\n"
        ),
    )
