"""argon2id password hashing with OWASP's parameters (Password Storage Cheat Sheet: m=19 MiB, t=2, p=1).

Hashing takes tens of milliseconds of CPU, so both functions run in a worker thread and callers keep them
outside any write transaction (ARCHITECTURE.md). :func:`configure` applies ``MERCATO_PASSWORD_HASH_*`` (the test
suite lowers them for speed; production refuses anything below OWASP's minimum). Verification always uses the
parameters stored in the hash itself.
"""

from __future__ import annotations

from anyio import to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2
_hasher = PasswordHasher(time_cost=OWASP_TIME_COST, memory_cost=OWASP_MEMORY_KIB, parallelism=1)
# A valid hash of a random password, verified when no account matches so that a wrong email costs as much time
# as a wrong password (no user enumeration by timing).
_DUMMY = _hasher.hash("mercato-dummy-password-for-timing")


def configure(*, memory_kib: int, time_cost: int) -> None:
    """Hash new passwords with ``memory_kib`` KiB and ``time_cost`` passes (parallelism 1)."""
    global _hasher, _DUMMY
    if (_hasher.memory_cost, _hasher.time_cost) == (memory_kib, time_cost):
        return
    _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
    _DUMMY = _hasher.hash("mercato-dummy-password-for-timing")


async def hash_password(password: str) -> str:
    """Return the PHC-format argon2id hash of ``password``."""
    return await to_thread.run_sync(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``password_hash``; a ``None`` hash still costs one verification."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await to_thread.run_sync(check)
