"""``Settings.load()``: the generated secret key, production refusals, and list variables from the
environment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mercato.config import Settings, UnsafeSettings

SECRET = "s" * 40


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ``MERCATO_*`` variable from the outside (but the test payment gateway allowed in production, which the
    gateway tests take back), and no ``.env`` file except the ones a test writes."""
    for key in list(os.environ):
        if key.startswith("MERCATO_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MERCATO_ALLOW_TEST_GATEWAY", "true")  # checked by its own tests below
    monkeypatch.chdir(tmp_path)


def test_secret_is_generated_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "var"

    first = Settings.load(data_dir=data_dir)

    key_file = data_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.secret == key_file.read_text().strip()
    assert len(first.secret) >= 32
    assert sorted(p.name for p in data_dir.iterdir()) == ["secret_key"]  # no temporary file left behind
    second = Settings.load(data_dir=data_dir)
    assert second.secret == first.secret
    assert key_file.read_text().strip() == first.secret


def test_each_data_dir_gets_its_own_secret(tmp_path: Path) -> None:
    assert Settings.load(data_dir=tmp_path / "a").secret != Settings.load(data_dir=tmp_path / "b").secret


def test_secret_from_the_environment_wins_and_nothing_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MERCATO_SECRET_KEY", SECRET)
    monkeypatch.setenv("MERCATO_DATA_DIR", str(tmp_path / "var"))

    settings = Settings.load()

    assert settings.secret == SECRET
    assert not (tmp_path / "var" / "secret_key").exists()


def test_short_secret_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_SECRET_KEY", "too-short-but-still-a-secret")
    with pytest.raises(UnsafeSettings, match=r"MERCATO_SECRET_KEY: .*at least 32 characters") as refused:
        Settings.load()
    assert "too-short-but-still-a-secret" not in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__  # pydantic's text quotes it


def test_an_empty_secret_file_is_refused_not_used(tmp_path: Path) -> None:
    """A crash between creating the key file and writing it must not leave the app signing with ''."""
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("")

    with pytest.raises(UnsafeSettings, match="secret_key"):
        Settings.load(data_dir=data_dir)


def test_production_refuses_a_missing_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERCATO_ENV", "production")
    monkeypatch.setenv("MERCATO_DATA_DIR", str(tmp_path / "var"))

    with pytest.raises(UnsafeSettings) as refused:
        Settings.load()

    assert str(refused.value) == "MERCATO_SECRET_KEY must be set in production"
    assert not (tmp_path / "var" / "secret_key").exists()


def test_production_names_every_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MERCATO_ALLOW_TEST_GATEWAY")
    monkeypatch.setenv("MERCATO_ENV", "production")
    monkeypatch.setenv("MERCATO_DEBUG", "true")
    monkeypatch.setenv("MERCATO_CORS_ORIGINS", "https://shop.example,*")

    with pytest.raises(UnsafeSettings) as refused:
        Settings.load()

    message = str(refused.value)
    assert "MERCATO_SECRET_KEY must be set" in message
    assert "MERCATO_DEBUG must be off" in message
    assert "MERCATO_CORS_ORIGINS='*' cannot be combined with credentials" in message
    assert "MERCATO_PAYMENT_GATEWAY=test takes no real money" in message


def test_production_refuses_stripe_without_its_keys_and_accepts_it_with_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MERCATO_ENV", "production")
    monkeypatch.setenv("MERCATO_SECRET_KEY", "production-secret-0123456789abcdef-0123456789")
    monkeypatch.setenv("MERCATO_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MERCATO_PAYMENT_GATEWAY", "stripe")

    with pytest.raises(UnsafeSettings, match="MERCATO_STRIPE_API_KEY and MERCATO_STRIPE_WEBHOOK_SECRET"):
        Settings.load()

    monkeypatch.setenv("MERCATO_STRIPE_API_KEY", "sk_live_example")
    monkeypatch.setenv("MERCATO_STRIPE_WEBHOOK_SECRET", "whsec_example")
    assert Settings.load().payment_gateway == "stripe"


@pytest.mark.parametrize(
    ("variables", "problem"),
    [
        ({"MERCATO_DEBUG": "1"}, "MERCATO_DEBUG"),
        ({"MERCATO_CORS_ORIGINS": "*"}, "MERCATO_CORS_ORIGINS"),
    ],
)
def test_production_refuses_each_unsafe_setting_alone(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], problem: str
) -> None:
    monkeypatch.setenv("MERCATO_ENV", "production")
    monkeypatch.setenv("MERCATO_SECRET_KEY", SECRET)
    for key, value in variables.items():
        monkeypatch.setenv(key, value)

    with pytest.raises(UnsafeSettings) as refused:
        Settings.load()

    assert str(refused.value).startswith(problem)
    assert ";" not in str(refused.value)


def test_production_accepts_safe_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_ENV", "production")
    monkeypatch.setenv("MERCATO_SECRET_KEY", SECRET)
    monkeypatch.setenv("MERCATO_CORS_ORIGINS", "*")
    monkeypatch.setenv("MERCATO_CORS_ALLOW_CREDENTIALS", "false")

    settings = Settings.load()

    assert settings.env == "production"
    assert settings.secret == SECRET
    assert settings.cors_origins == ["*"]


def test_development_allows_what_production_refuses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERCATO_DEBUG", "true")
    monkeypatch.setenv("MERCATO_CORS_ORIGINS", "*")

    settings = Settings.load(data_dir=tmp_path / "var")

    assert settings.debug is True
    assert settings.cors_origins == ["*"]


def test_lists_are_comma_separated_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_SECRET_KEY", SECRET)
    monkeypatch.setenv("MERCATO_CORS_ORIGINS", " https://shop.example , https://admin.shop.example,, ")
    monkeypatch.setenv("MERCATO_TRUSTED_PROXIES", "10.0.0.1,192.168.0.0/16")

    settings = Settings.load()

    assert settings.cors_origins == ["https://shop.example", "https://admin.shop.example"]
    assert settings.trusted_proxies == ["10.0.0.1", "192.168.0.0/16"]


def test_empty_list_variables_mean_empty_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_SECRET_KEY", SECRET)
    monkeypatch.setenv("MERCATO_CORS_ORIGINS", "")
    monkeypatch.setenv("MERCATO_TRUSTED_PROXIES", " ")

    settings = Settings.load()

    assert settings.cors_origins == []
    assert settings.trusted_proxies == []


def test_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"MERCATO_SECRET_KEY={SECRET}\nMERCATO_CORS_ORIGINS=https://a.example,https://b.example\nMERCATO_CURRENCY=eur\n"
    )

    settings = Settings.load()

    assert settings.secret == SECRET
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.currency == "EUR"


@pytest.mark.parametrize("code", ["JPY", "krw", "KWD", "BHD", "XAU", "US1"])
def test_a_currency_without_exactly_two_minor_digits_is_refused(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """Money is stored in cents: a zero- or three-decimal currency would be charged 100 times (or a tenth) off."""
    monkeypatch.setenv("MERCATO_CURRENCY", code)
    with pytest.raises(UnsafeSettings, match=r"MERCATO_CURRENCY: .*(three letters|minor digits)"):
        Settings.load()


def test_a_two_decimal_currency_is_accepted_in_upper_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERCATO_CURRENCY", "eur")
    assert Settings.load().currency == "EUR"
