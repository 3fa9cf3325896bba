"""Password hashing parameters and policy (pure, no database)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from mercato.config import Settings, UnsafeSettings
from mercato.identity import passwords, rules


async def test_default_settings_hash_with_owasp_argon2id(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    passwords.configure(memory_kib=settings.password_hash_memory_kib, time_cost=settings.password_hash_time_cost)
    try:
        hashed = await passwords.hash_password("correct-horse-battery-42")
        assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert await passwords.verify_password(hashed, "correct-horse-battery-42")
        assert not await passwords.verify_password(hashed, "correct-horse-battery-43")
        assert not await passwords.verify_password(None, "correct-horse-battery-42")
    finally:
        passwords.configure(memory_kib=1024, time_cost=1)


async def test_hashes_made_with_other_parameters_still_verify() -> None:
    old = PasswordHasher(time_cost=3, memory_cost=2048, parallelism=1).hash("legacy-password-77")
    assert await passwords.verify_password(old, "legacy-password-77")
    assert not await passwords.verify_password("not-a-hash", "legacy-password-77")


def test_production_refuses_weak_hash_parameters(tmp_path) -> None:
    settings = Settings(env="production", secret_key="s" * 40, data_dir=tmp_path, password_hash_memory_kib=1024)
    with pytest.raises(UnsafeSettings, match="OWASP"):
        settings.check_production()


@pytest.mark.parametrize(
    ("password", "email", "problem"),
    [
        ("short", None, "at least 8"),
        ("x" * 129, None, "at most 128"),
        ("password1", None, "too common"),
        ("ada.lovelace@example.com", "ada.lovelace@example.com", "email"),
        ("ada.lovelace1", "ada.lovelace@example.com", "email"),
        ("correct-horse-battery-42", "ada@example.com", None),
    ],
)
def test_password_policy(password: str, email: str | None, problem: str | None) -> None:
    found = rules.password_problem(password, email)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
