"""Pure identity rules: password policy, countries and postal codes. No I/O.

Password policy (API.md §2, NIST SP 800-63B §5.1.1.2): 8 to 128 characters, not equal to (or containing) the
email's local part, not in the list of the 30,000 most common passwords shipped with ``zxcvbn``.
"""

from __future__ import annotations

import re
from functools import cache

import pycountry

MIN_PASSWORD = 8
MAX_PASSWORD = 128

# Postal code formats by ISO 3166-1 alpha-2 country (Universal Postal Union addressing guides); ASCII digits
# only (without re.ASCII, \d also matches other scripts' digits such as "١٢٣٤٥").
POSTAL_CODE_PATTERNS: dict[str, re.Pattern[str]] = {
    "US": re.compile(r"^\d{5}(-\d{4})?$", re.ASCII),
    "GB": re.compile(r"^(GIR ?0AA|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2})$", re.ASCII),
    "DE": re.compile(r"^\d{5}$", re.ASCII),
    "FR": re.compile(r"^\d{5}$", re.ASCII),
    "CA": re.compile(r"^[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d$", re.ASCII),
    "NL": re.compile(r"^\d{4} ?[A-Z]{2}$", re.ASCII),
    "IT": re.compile(r"^\d{5}$", re.ASCII),
    "ES": re.compile(r"^\d{5}$", re.ASCII),
    "AU": re.compile(r"^\d{4}$", re.ASCII),
    "JP": re.compile(r"^\d{3}-?\d{4}$", re.ASCII),
    "BR": re.compile(r"^\d{5}-?\d{3}$", re.ASCII),
    "IN": re.compile(r"^\d{6}$", re.ASCII),
}


@cache
def _common_passwords() -> frozenset[str]:
    # imported on first use: zxcvbn's word lists take ~12 MB, which a server that never sees a password spares
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"])


def password_problem(password: str, email: str | None = None) -> str | None:
    """Return why ``password`` is not acceptable, or ``None`` when it is."""
    if len(password) < MIN_PASSWORD:
        return f"Password must be at least {MIN_PASSWORD} characters."
    if len(password) > MAX_PASSWORD:
        return f"Password must be at most {MAX_PASSWORD} characters."
    lowered = password.lower()
    if email:
        local = email.split("@", 1)[0].lower()
        if lowered == email.lower() or (len(local) >= 4 and local in lowered and len(lowered) - len(local) < 4):
            return "Password must not be your email address."
    if lowered in _common_passwords():
        return "Password is too common; choose one that is harder to guess."
    return None


def normalize_country(code: str) -> str | None:
    """Return the ISO 3166-1 alpha-2 code in upper case, or ``None`` if ``code`` is not one."""
    code = code.strip().upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        return None
    return code


def normalize_postal_code(country: str, postal_code: str) -> str | None:
    """Return ``postal_code`` upper-cased and trimmed if it fits ``country``'s format (any non-empty code for
    countries without a known rule), or ``None`` when it does not fit."""
    value = " ".join(postal_code.strip().upper().split())
    if not value:
        return None
    pattern = POSTAL_CODE_PATTERNS.get(country)
    if pattern is not None and not pattern.match(value):
        return None
    return value
