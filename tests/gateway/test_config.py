"""Configuration: secrets never shown, problems listed, settings JSON saved atomically."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from gateway import config as config_module
from gateway.config import (
    ENV_ACCOUNT,
    ENV_API_KEY,
    ENV_SECRET_KEY,
    ENV_WEBHOOK_SECRET,
    FeeSourcePolicy,
    GatewayConfig,
    Mode,
    Secrets,
    Settings,
    load_settings,
    save_settings,
    secret_problems,
)
from gateway.fees import FeeSchedule

SECRET_KEY = "sk_test_51AbCdEfGhIjKlMnOpQrStUvWx"
WEBHOOK_SECRETS = ("whsec_test0123456789abcdef", "whsec_testfedcba9876543210")
API_KEYS = ("api-key-0123456789abcdef", "api-key-fedcba9876543210")
ACCOUNT = "acct_test1234567"

ENV = {
    ENV_SECRET_KEY: SECRET_KEY,
    ENV_WEBHOOK_SECRET: ",".join(WEBHOOK_SECRETS),
    ENV_ACCOUNT: ACCOUNT,
    ENV_API_KEY: " , ".join(API_KEYS),
}


def good_secrets() -> Secrets:
    return Secrets.from_mapping(ENV)


def test_from_mapping_splits_rotated_secrets_and_strips_blanks() -> None:
    secrets = good_secrets()
    assert secrets.stripe_secret_key == SECRET_KEY
    assert secrets.webhook_secrets == WEBHOOK_SECRETS
    assert secrets.api_keys == API_KEYS
    assert secrets.connected_account_id == ACCOUNT
    assert Secrets.from_mapping(secrets.to_mapping()) == secrets


def test_repr_and_str_never_show_a_secret() -> None:
    secrets = good_secrets()
    for text in (repr(secrets), str(secrets), f"{secrets}", repr([secrets])):
        for value in secrets.values:
            assert value not in text
        # Not even the distinctive part of the key after its public prefix.
        assert SECRET_KEY[len("sk_test_") :] not in text
        assert "<2>" in text  # counts of rotated secrets, nothing more


def test_values_lists_every_secret_for_redaction() -> None:
    assert set(good_secrets().values) == {SECRET_KEY, *WEBHOOK_SECRETS, *API_KEYS}


def test_mode_follows_the_key_prefix() -> None:
    assert good_secrets().mode is Mode.TEST
    live = Secrets(stripe_secret_key="rk_live_fake_0123456789")
    assert live.mode is Mode.LIVE
    assert Secrets(stripe_secret_key="nonsense").mode is None


def test_good_secrets_have_no_problems() -> None:
    assert secret_problems(good_secrets()) == []


def test_every_missing_secret_is_listed_by_its_variable_name() -> None:
    names = [p.name for p in secret_problems(Secrets())]
    assert names == [ENV_SECRET_KEY, ENV_WEBHOOK_SECRET, ENV_ACCOUNT, ENV_API_KEY]


def test_malformed_secrets_are_described_without_echoing_them() -> None:
    bad = Secrets(
        stripe_secret_key="pk_test_notasecretkey1234",
        webhook_secrets=("whsec_ok0123456789", "nope-not-a-webhook-secret"),
        connected_account_id="acc_wrong",
        api_keys=("tiny-key-9",),
    )
    problems = secret_problems(bad)
    text = "; ".join(str(p) for p in problems)
    assert {p.name for p in problems} == {
        ENV_SECRET_KEY,
        ENV_WEBHOOK_SECRET,
        ENV_ACCOUNT,
        ENV_API_KEY,
    }
    assert "secret #2" in text
    assert "at least 16" in text
    for value in ("pk_test_notasecretkey1234", "nope-not-a-webhook-secret", "tiny-key-9"):
        assert value not in text


def custom_settings() -> Settings:
    return Settings(
        host="0.0.0.0",  # noqa: S104 - a value under test, nothing binds
        port=8443,
        platform_name="Bear Goods",
        connected_name="Honey Co",
        database_url="postgresql://ursus@db/ursus",
        public_url="https://pay.example.com",
        fee_schedule=FeeSchedule(
            stripe_percent=Decimal("1.4"),
            fixed_fee=25,
            platform_percent=Decimal("2.5"),
            fixed_fee_by_currency={"jpy": 0},
        ),
        fee_source=FeeSourcePolicy.ESTIMATE,
        fee_wait_seconds=60,
        trusted_proxies=("10.0.0.1",),
        reverse_transfer_on_refund=True,
        webhook_body_limit=65536,
    )


def test_settings_survive_a_json_round_trip() -> None:
    settings = custom_settings()
    text = json.dumps(settings.to_json())
    assert Settings.from_json(json.loads(text)) == settings


def test_settings_json_holds_no_secret_field() -> None:
    keys = {k.lower() for k in Settings().to_json()}
    assert not {k for k in keys if "secret" in k or "api_key" in k or "password" in k}


def test_unknown_settings_keys_are_ignored() -> None:
    assert Settings.from_json({"port": 5000, "from_the_future": True}).port == 5000


@pytest.mark.parametrize(
    "data",
    [
        {"port": 70000},
        {"port": "eighty"},
        {"fee_source": "guess"},
        {"fee_schedule": {"stripe_percent": "lots"}},
        {"fee_schedule": {"platform_percent": "150"}},
        {"fee_wait_seconds": -1},
    ],
)
def test_bad_settings_values_raise_value_error(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Settings.from_json(data)


def test_save_then_load(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "settings.json"
    save_settings(path, custom_settings())
    assert load_settings(path) == custom_settings()
    assert json.loads(path.read_text(encoding="utf-8"))["port"] == 8443
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]  # no temp file left


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "settings.json"
    save_settings(path, Settings(port=1111))
    before = path.read_bytes()

    def boom(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(config_module.json, "dump", boom)
    with pytest.raises(OSError, match="disk full"):
        save_settings(path, Settings(port=2222))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_a_missing_file_loads_the_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "nope.json") == Settings()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"a string"'])
def test_a_broken_file_raises_value_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "settings.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"settings\.json"):
        load_settings(path)


def test_headless_config_from_the_environment(tmp_path: Path) -> None:
    env = {**ENV, "URSUS_DATABASE_URL": "sqlite:////srv/ursus.sqlite3", "PLATFORM_NAME": "Bears"}
    config = GatewayConfig.from_env(env, data_dir=tmp_path)
    assert config.secrets == good_secrets()
    assert config.database_url == "sqlite:////srv/ursus.sqlite3"
    assert config.settings.platform_name == "Bears"
    assert config.mode is Mode.TEST
    assert config.problems() == []


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    config = GatewayConfig(secrets=good_secrets(), data_dir=tmp_path)
    assert config.database_url == f"sqlite:///{tmp_path / 'ursus.sqlite3'}"


def test_sandbox_mode_and_combined_problems(tmp_path: Path) -> None:
    config = GatewayConfig(
        secrets=Secrets(), settings=Settings(port=-1), data_dir=tmp_path, sandbox=True
    )
    assert config.mode is Mode.SANDBOX
    names = {p.name for p in config.problems()}
    assert {ENV_SECRET_KEY, "port"} <= names


def test_data_dirs_follow_the_environment(tmp_path: Path) -> None:
    env = {
        "URSUS_DATA_DIR": str(tmp_path / "d"),
        "URSUS_LOG_DIR": str(tmp_path / "l"),
        "URSUS_CONFIG_DIR": str(tmp_path / "c"),
    }
    assert config_module.default_data_dir(env) == tmp_path / "d"
    assert config_module.default_log_dir(env) == tmp_path / "l"
    assert config_module.default_config_path(env) == tmp_path / "c" / "settings.json"
