"""Settings read from ``MERCATO_*`` environment variables (and a ``.env`` file).

Every variable is listed in README.md's configuration table. ``Settings.load()`` also fills in the secret
key: when ``MERCATO_SECRET_KEY`` is not given, a random key is generated once into
``<data dir>/secret_key`` (file mode 0600) and reused on every later start.
"""

from __future__ import annotations

import os
import re
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url


class Environment(StrEnum):
    """Where the process runs; ``production`` turns on the start-up safety checks."""

    development = "development"
    production = "production"
    test = "test"


class UnsafeSettings(Exception):
    """Raised by :meth:`Settings.load` listing every invalid or unsafe setting found (never their values)."""


#: ISO 4217 codes whose minor unit is not 2 digits (0, 3, 4, or none: "N.A." → "no"), refused as
#: ``MERCATO_CURRENCY`` (source: the ISO 4217 list one, "Minor unit" column).
NOT_TWO_MINOR_DIGITS: dict[str, str] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        "0",
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], "3"),
    **dict.fromkeys(["CLF", "UYW"], "4"),
    **dict.fromkeys(["XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"], "no"),
}


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All runtime configuration. Durations are in seconds, sizes in bytes."""

    model_config = SettingsConfigDict(env_prefix="MERCATO_", env_file=".env", extra="ignore")

    env: Environment = Environment.development
    debug: bool = False
    database_url: str = "sqlite+aiosqlite:///./var/mercato.db"
    redis_url: str | None = None
    secret_key: SecretStr | None = None
    data_dir: Path = Path("./var")
    public_url: str = "http://127.0.0.1:8000"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = True
    smtp_url: str | None = None
    email_backend: str | None = Field(default=None, pattern="^(file|smtp)$")
    email_from: str = "Mercato <no-reply@mercato.local>"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    currency: str = Field(default="USD", min_length=3, max_length=3)
    reservation_ttl: int = Field(default=1800, ge=60)
    max_body_bytes: int = 8 * 1024 * 1024
    db_pool_size: int = Field(default=10, ge=1)
    sqlite_readers: int = Field(default=4, ge=1, le=64)
    catalog_cache_ttl: int = Field(default=60, ge=0)

    access_token_ttl: int = Field(default=900, ge=60)
    refresh_token_ttl: int = Field(default=30 * 24 * 3600, ge=3600)
    session_cache_ttl: int = Field(default=5, ge=0, le=5)
    password_hash_memory_kib: int = Field(default=19 * 1024, ge=1024)
    password_hash_time_cost: int = Field(default=2, ge=1)

    rate_limits: bool = True
    rate_limit_login_account: str = "5/15 minutes"
    rate_limit_login_ip: str = "100/15 minutes"
    rate_limit_register: str = "60/minute"
    rate_limit_password_reset: str = "60/minute"  # noqa: S105 - a rate, not a password
    rate_limit_default: str = "1200/minute"
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    run_jobs: bool = True
    job_poll_interval: float = Field(default=1.0, gt=0)
    job_max_attempts: int = Field(default=15, ge=1)  # backoff 2 s doubling to 1 h: about 4 h of retries

    oidc_providers: dict[str, dict[str, str]] = Field(default_factory=dict)

    # payments: the gateway new payments go through (test = the built-in one; stripe needs the `stripe` extra)
    payment_gateway: str = Field(default="test", pattern="^(test|stripe)$")
    allow_test_gateway: bool = False  # production refuses the test gateway unless this says it is a drill
    gateway_timeout: float = Field(default=10.0, gt=0)
    test_gateway_delay: float = Field(default=0.0, ge=0)
    test_gateway_hold: float = Field(default=0.0, ge=0)
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None

    # media storage: unset = the local directory <data dir>/media served at /media; s3://bucket[/prefix] = S3
    # (credentials come from boto3's standard chain: AWS_* variables, ~/.aws, instance roles; never from here)
    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_public_url: str | None = None
    s3_region: str | None = None

    @field_validator("cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("secret_key")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("MERCATO_SECRET_KEY must be at least 32 characters (RFC 7518 §3.2: 256-bit keys)")
        return value

    @field_validator("storage_url", "s3_endpoint_url", "s3_public_url", "s3_region", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_storage_url(value)
        return value

    @field_validator("s3_endpoint_url", "s3_public_url")
    @classmethod
    def _http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
            name = f"MERCATO_{(info.field_name or '').upper()}"
            raise ValueError(f"{name} must be an http:// or https:// URL without query or fragment, got {value!r}")
        return value.strip().rstrip("/")

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        """``MERCATO_CURRENCY`` in upper case, refused unless it can be a currency with exactly 2 minor digits.

        Money is stored in cents (``db.base.Money``, two decimals) and the Stripe gateway sends amounts × 100,
        so a currency with another number of minor digits would be charged wrongly (JPY 1999 for ¥19.99).

        Raises:
            ValueError: not three letters, or a code ISO 4217 gives 0, 3 or 4 minor digits or none at all
                (:data:`NOT_TWO_MINOR_DIGITS`).
        """
        code = value.upper()
        if not re.fullmatch("[A-Z]{3}", code):
            raise ValueError(f"MERCATO_CURRENCY must be an ISO 4217 code of three letters, got {value!r}")
        if code in NOT_TWO_MINOR_DIGITS:
            raise ValueError(
                f"MERCATO_CURRENCY {code} has {NOT_TWO_MINOR_DIGITS[code]} minor digits in ISO 4217; Mercato stores "
                "money with exactly 2 (cents), so only such currencies are supported (e.g. USD, EUR, GBP)"
            )
        return code

    @property
    def storage_s3(self) -> tuple[str, str] | None:
        """``(bucket, prefix)`` when ``MERCATO_STORAGE_URL`` is an ``s3://`` URL (prefix ``""`` or without
        slashes at either end); ``None`` for the local media directory."""
        return parse_storage_url(self.storage_url) if self.storage_url is not None else None

    @property
    def is_sqlite(self) -> bool:
        """True when the database URL points at SQLite."""
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database file of the URL; None for another database or an in-memory one."""
        database = make_url(self.database_url).database if self.is_sqlite else None
        return Path(database) if database and database != ":memory:" else None

    @property
    def uses_smtp(self) -> bool:
        """SMTP when ``MERCATO_SMTP_URL`` is set (unless ``MERCATO_EMAIL_BACKEND=file``); files otherwise."""
        return bool(self.smtp_url) and self.email_backend != "file"

    @property
    def tls(self) -> bool:
        """True when the server terminates TLS itself (cookies get ``Secure``, HSTS is sent)."""
        return self.tls_cert is not None and self.tls_key is not None

    @property
    def secret(self) -> str:
        """The secret key's value; :meth:`load` guarantees it is set."""
        assert self.secret_key is not None, "Settings.load() fills in the secret key"
        return self.secret_key.get_secret_value()

    def check_production(self) -> None:
        """Refuse unsafe production settings.

        Raises:
            UnsafeSettings: naming each problem (missing secret, debug on, wildcard CORS with credentials, the
                test payment gateway, Stripe without its keys).
        """
        if self.env is not Environment.production:
            return
        problems = []
        if self.secret_key is None:
            problems.append("MERCATO_SECRET_KEY must be set in production")
        if self.debug:
            problems.append("MERCATO_DEBUG must be off in production")
        if self.password_hash_memory_kib < 19 * 1024 or self.password_hash_time_cost < 2:
            problems.append("MERCATO_PASSWORD_HASH_* must be at least OWASP's m=19456 KiB, t=2 in production")
        if "*" in self.cors_origins and self.cors_allow_credentials:
            problems.append("MERCATO_CORS_ORIGINS='*' cannot be combined with credentials in production")
        if self.payment_gateway == "test" and not self.allow_test_gateway:
            problems.append(
                "MERCATO_PAYMENT_GATEWAY=test takes no real money (anyone can pay with tok_visa): set "
                "MERCATO_PAYMENT_GATEWAY=stripe in production, or MERCATO_ALLOW_TEST_GATEWAY=true for a drill"
            )
        if self.payment_gateway == "stripe" and (self.stripe_api_key is None or self.stripe_webhook_secret is None):
            problems.append("MERCATO_STRIPE_API_KEY and MERCATO_STRIPE_WEBHOOK_SECRET must be set for Stripe")
        if problems:
            raise UnsafeSettings("; ".join(problems))

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Read the environment, apply ``overrides``, check production rules and ensure a secret key.

        Raises:
            UnsafeSettings: a value is invalid (named without its value: it may be a secret, and this message
                reaches the terminal and the logs), or see :meth:`check_production`.
        """
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            problems = [
                f"MERCATO_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
                for error in exc.errors(include_input=False, include_url=False)
            ]
            raise UnsafeSettings("; ".join(problems)) from None  # not chained: pydantic's text shows the input
        settings.check_production()
        if settings.secret_key is None:
            settings.secret_key = SecretStr(_stored_secret(settings.data_dir))
        return settings


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9][A-Za-z0-9_.\-]*)*$")


def parse_storage_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/optional/prefix`` into ``(bucket, prefix)``; the prefix has no slash at either end
    (``""`` when absent).

    Args:
        url: the value of ``MERCATO_STORAGE_URL``.

    Returns:
        The bucket name and the key prefix.

    Raises:
        ValueError: another scheme, a missing or invalid bucket name (S3 rules: 3-63 lowercase letters,
            digits, dots, hyphens), a prefix with odd characters or ``..``, or a query/fragment. The message
            names ``MERCATO_STORAGE_URL``.
    """
    expected = "s3://bucket or s3://bucket/prefix (leave it unset for the local media directory)"
    parts = urlsplit(url.strip())
    if parts.scheme != "s3":
        raise ValueError(f"MERCATO_STORAGE_URL must be {expected}; unsupported scheme in {url!r}")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not _BUCKET.match(bucket) or parts.query or parts.fragment or "@" in url:
        raise ValueError(f"MERCATO_STORAGE_URL must be {expected}; invalid bucket in {url!r}")
    if prefix and (not _PREFIX.match(prefix) or ".." in prefix.split("/")):
        raise ValueError(f"MERCATO_STORAGE_URL must be {expected}; invalid prefix in {url!r}")
    return bucket, prefix


def _stored_secret(data_dir: Path) -> str:
    """Return the secret in ``data_dir/secret_key``, creating it (mode 0600) on first use.

    The key is written to a temporary file and hard-linked into place, so the file is never seen (by a
    concurrent start, or after a crash) without its full content; a file holding less than a usable key is
    refused rather than used as an empty or short signing key.

    Raises:
        UnsafeSettings: the file exists but holds fewer than 32 characters.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret_key"
    if not path.exists():
        tmp = data_dir / f".secret_key.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    key = path.read_text().strip()
    if len(key) < 32:
        raise UnsafeSettings(
            f"{path} holds no usable secret key (fewer than 32 characters); delete it to have a new one "
            "generated, or set MERCATO_SECRET_KEY"
        )
    return key
