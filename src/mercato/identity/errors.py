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


class OidcSignInFailed(Unauthorized):
    """An OpenID Connect callback that cannot be trusted: missing or mismatched ``state`` or state cookie, the
    provider refused or the code exchange failed, or the ID token is invalid (signature, ``alg`` other than
    RS256, ``iss``, ``aud``, ``exp``, ``nonce``). OpenID Connect Core 1.0 §3.1.3.7."""

    title = "OpenID Connect sign-in failed"


class OidcEmailNotVerified(Conflict):
    """An account already uses the provider's email, but the provider does not assert that the email is
    verified, so the identity is not linked to that account (API.md §2)."""

    title = "Email not verified by the provider"
