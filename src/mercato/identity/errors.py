"""Identity's problem types."""

from mercato.errors import Conflict, Unauthorized


class InvalidCredentials(Unauthorized):
    """Wrong email or password: one message for both, so accounts cannot be enumerated."""

    code = "unauthorized"
    title = "Invalid email or password"


class InvalidToken(Unauthorized):
    """An access, refresh or emailed token that is unknown, expired, used, tampered with or revoked."""

    title = "Invalid or expired token"


class EmailTaken(Conflict):
    """An account with this email already exists (compared case-insensitively)."""

    title = "Email already registered"
