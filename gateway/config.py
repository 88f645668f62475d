"""Gateway configuration: secrets (env or keyring, never a file) and settings (a JSON file).

Secrets are kept apart from settings so that nothing that serialises settings
can ever write a secret (DESIGN §5).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import platformdirs

from gateway.fees import FeeSchedule

APP_NAME = "ursus"
KEYRING_SERVICE = "ursus"

# Environment variable names, also the keyring usernames (DESIGN §5).
ENV_SECRET_KEY = "STRIPE_SECRET_KEY"  # noqa: S105 (a variable name)
ENV_WEBHOOK_SECRET = "STRIPE_WEBHOOK_SECRET"  # noqa: S105 (comma-separated: rotation)
ENV_ACCOUNT = "CONNECTED_ACCOUNT_ID"
ENV_API_KEY = "URSUS_API_KEY"  # comma-separated: rotation
SECRET_NAMES = (ENV_SECRET_KEY, ENV_WEBHOOK_SECRET, ENV_ACCOUNT, ENV_API_KEY)

SECRET_KEY_RE = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9_]{8,}$")
ACCOUNT_RE = re.compile(r"^acct_[A-Za-z0-9]{6,}$")
WEBHOOK_SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9_+/=]{8,}$")
MIN_API_KEY_LEN = 16


class Mode(enum.StrEnum):
    """What kind of money moves: the window shows this as a coloured band."""

    SANDBOX = "sandbox"  # the offline simulator
    TEST = "test"  # Stripe test mode
    LIVE = "live"  # real money


class FeeSourcePolicy(enum.StrEnum):
    ACTUAL = "actual"  # wait for the balance transaction, then fall back
    ESTIMATE = "estimate"  # always use the schedule


def _split_list(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def _mask(value: str) -> str:
    if not value:
        return ""
    return value[: min(8, len(value) // 3)] + "…"


@dataclass(frozen=True, slots=True)
class Secrets:
    """The four secrets; ``repr`` never shows them."""

    stripe_secret_key: str = ""
    webhook_secrets: tuple[str, ...] = ()
    connected_account_id: str = ""
    api_keys: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"Secrets(stripe_secret_key={_mask(self.stripe_secret_key)!r}, "
            f"webhook_secrets=<{len(self.webhook_secrets)}>, "
            f"connected_account_id={self.connected_account_id!r}, "
            f"api_keys=<{len(self.api_keys)}>)"
        )

    __str__ = __repr__

    @classmethod
    def from_mapping(cls, values: Mapping[str, str | None]) -> Secrets:
        """From env-var-named values (os.environ, or what the keyring holds)."""
        return cls(
            stripe_secret_key=(values.get(ENV_SECRET_KEY) or "").strip(),
            webhook_secrets=_split_list(values.get(ENV_WEBHOOK_SECRET)),
            connected_account_id=(values.get(ENV_ACCOUNT) or "").strip(),
            api_keys=_split_list(values.get(ENV_API_KEY)),
        )

    def to_mapping(self) -> dict[str, str]:
        return {
            ENV_SECRET_KEY: self.stripe_secret_key,
            ENV_WEBHOOK_SECRET: ",".join(self.webhook_secrets),
            ENV_ACCOUNT: self.connected_account_id,
            ENV_API_KEY: ",".join(self.api_keys),
        }

    @property
    def values(self) -> tuple[str, ...]:
        """Every secret string, for redaction and hygiene checks."""
        return tuple(
            v for v in (self.stripe_secret_key, *self.webhook_secrets, *self.api_keys) if v
        )

    @property
    def mode(self) -> Mode | None:
        """TEST or LIVE from the key prefix; None without a valid key."""
        match = SECRET_KEY_RE.match(self.stripe_secret_key)
        if not match:
            return None
        return Mode.LIVE if match.group(2) == "live" else Mode.TEST


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One missing or malformed setting, named the way the user sets it."""

    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


def secret_problems(secrets: Secrets) -> list[ConfigProblem]:
    """Everything missing or malformed; an empty list means usable."""
    problems: list[ConfigProblem] = []
    key = secrets.stripe_secret_key
    if not key:
        problems.append(ConfigProblem(ENV_SECRET_KEY, "missing"))
    elif not SECRET_KEY_RE.match(key):
        problems.append(
            ConfigProblem(
                ENV_SECRET_KEY,
                "malformed: expected sk_test_, sk_live_, rk_test_ or rk_live_ followed by the key",
            )
        )
    if not secrets.webhook_secrets:
        problems.append(ConfigProblem(ENV_WEBHOOK_SECRET, "missing"))
    for i, secret in enumerate(secrets.webhook_secrets, 1):
        if not WEBHOOK_SECRET_RE.match(secret):
            problems.append(
                ConfigProblem(ENV_WEBHOOK_SECRET, f"secret #{i} malformed: expected whsec_...")
            )
    if not secrets.connected_account_id:
        problems.append(ConfigProblem(ENV_ACCOUNT, "missing"))
    elif not ACCOUNT_RE.match(secrets.connected_account_id):
        problems.append(ConfigProblem(ENV_ACCOUNT, "malformed: expected acct_..."))
    if not secrets.api_keys:
        problems.append(ConfigProblem(ENV_API_KEY, "missing"))
    for i, api_key in enumerate(secrets.api_keys, 1):
        if len(api_key) < MIN_API_KEY_LEN:
            problems.append(
                ConfigProblem(
                    ENV_API_KEY, f"key #{i} too short: use at least {MIN_API_KEY_LEN} characters"
                )
            )
    return problems


def _default_trusted() -> tuple[str, ...]:
    return ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class Settings:
    """Non-secret settings, stored as JSON in the config dir."""

    host: str = "127.0.0.1"
    port: int = 4242
    platform_name: str = "URSUS platform"
    connected_name: str = "Vendor"
    stripe_api_base: str = ""  # empty: api.stripe.com
    database_url: str = ""  # empty: SQLite in the data dir
    public_url: str = ""  # the tunnel's public base URL, when known
    fee_schedule: FeeSchedule = field(default_factory=FeeSchedule)
    fee_source: FeeSourcePolicy = FeeSourcePolicy.ACTUAL
    # How long to wait for the actual fee before falling back to the estimate.
    fee_wait_seconds: int = 900
    # Peers whose X-Forwarded-For / CF-Connecting-IP are believed (the tunnel).
    trusted_proxies: tuple[str, ...] = field(default_factory=_default_trusted)
    # Seed policy: the platform absorbs refunds (merchant of record).
    reverse_transfer_on_refund: bool = False
    webhook_body_limit: int = 512 * 1024

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        schedule = self.fee_schedule
        data["fee_schedule"] = {
            "stripe_percent": str(schedule.stripe_percent),
            "fixed_fee": schedule.fixed_fee,
            "platform_percent": str(schedule.platform_percent),
            "fixed_fee_by_currency": dict(schedule.fixed_fee_by_currency),
        }
        data["fee_source"] = str(self.fee_source)
        data["trusted_proxies"] = list(self.trusted_proxies)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Settings:
        """Build from parsed JSON; unknown keys are ignored, bad values raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in names}
        try:
            if "fee_schedule" in kwargs:
                raw = kwargs["fee_schedule"] or {}
                default = FeeSchedule()
                kwargs["fee_schedule"] = FeeSchedule(
                    stripe_percent=Decimal(str(raw.get("stripe_percent", default.stripe_percent))),
                    fixed_fee=int(raw.get("fixed_fee", default.fixed_fee)),
                    platform_percent=Decimal(
                        str(raw.get("platform_percent", default.platform_percent))
                    ),
                    fixed_fee_by_currency={
                        str(k).lower(): int(v)
                        for k, v in (raw.get("fixed_fee_by_currency") or {}).items()
                    },
                )
            if "fee_source" in kwargs:
                kwargs["fee_source"] = FeeSourcePolicy(kwargs["fee_source"])
            if "trusted_proxies" in kwargs:
                kwargs["trusted_proxies"] = tuple(str(p) for p in kwargs["trusted_proxies"])
            for name in ("port", "fee_wait_seconds", "webhook_body_limit"):
                if name in kwargs:
                    kwargs[name] = int(kwargs[name])
        except (InvalidOperation, TypeError, AttributeError) as exc:
            raise ValueError(f"invalid settings: {exc}") from exc
        settings = cls(**kwargs)
        problems = settings_problems(settings)
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        return settings


def settings_problems(settings: Settings) -> list[ConfigProblem]:
    problems = []
    if not 0 <= settings.port <= 65535:
        problems.append(ConfigProblem("port", "must be between 0 and 65535"))
    schedule = settings.fee_schedule
    if not Decimal(0) <= schedule.stripe_percent < Decimal(100):
        problems.append(ConfigProblem("stripe_percent", "must be between 0 and 100"))
    if not Decimal(0) <= schedule.platform_percent < Decimal(100):
        problems.append(ConfigProblem("platform_percent", "must be between 0 and 100"))
    if schedule.fixed_fee < 0:
        problems.append(ConfigProblem("fixed_fee", "must not be negative"))
    if settings.fee_wait_seconds < 0:
        problems.append(ConfigProblem("fee_wait_seconds", "must not be negative"))
    return problems


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("URSUS_DATA_DIR"):
        return Path(env["URSUS_DATA_DIR"])
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_log_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("URSUS_LOG_DIR"):
        return Path(env["URSUS_LOG_DIR"])
    return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("URSUS_CONFIG_DIR"):
        return Path(env["URSUS_CONFIG_DIR"]) / "settings.json"
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "settings.json"


def load_settings(path: Path) -> Settings:
    """Settings from ``path``; defaults when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return Settings.from_json(data)


def save_settings(path: Path, settings: Settings) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(settings.to_json(), handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Everything a running gateway needs."""

    secrets: Secrets
    settings: Settings = field(default_factory=Settings)
    data_dir: Path = field(default_factory=default_data_dir)
    log_dir: Path | None = None  # None: default_log_dir()
    sandbox: bool = False

    @property
    def mode(self) -> Mode | None:
        return Mode.SANDBOX if self.sandbox else self.secrets.mode

    @property
    def database_url(self) -> str:
        if self.settings.database_url:
            return self.settings.database_url
        return f"sqlite:///{self.data_dir / 'ursus.sqlite3'}"

    @property
    def logs_dir(self) -> Path:
        return self.log_dir if self.log_dir is not None else default_log_dir()

    def problems(self) -> list[ConfigProblem]:
        return secret_problems(self.secrets) + settings_problems(self.settings)

    def for_sandbox(self) -> GatewayConfig:
        """The same settings in sandbox mode, with a ledger of its own.

        Sandbox sales must never land in the real ledger, so the sandbox keeps its
        SQLite file in ``<data_dir>/sandbox`` whatever database_url says.
        """
        if self.sandbox:
            return self
        return dataclasses.replace(
            self,
            data_dir=self.data_dir / "sandbox",
            settings=dataclasses.replace(self.settings, database_url=""),
            sandbox=True,
        )

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        data_dir: Path | None = None,
        settings: Settings | None = None,
        log_dir: Path | None = None,
    ) -> GatewayConfig:
        """Headless configuration: secrets and a few overrides from the environment."""
        env = os.environ if env is None else env
        settings = settings or Settings()
        overrides: dict[str, Any] = {}
        for var, name in (
            ("PLATFORM_NAME", "platform_name"),
            ("CONNECTED_NAME", "connected_name"),
            ("URSUS_STRIPE_API_BASE", "stripe_api_base"),
            ("URSUS_DATABASE_URL", "database_url"),
            ("URSUS_PUBLIC_URL", "public_url"),
        ):
            if env.get(var):
                overrides[name] = env[var]
        if overrides:
            settings = dataclasses.replace(settings, **overrides)
        return cls(
            secrets=Secrets.from_mapping(env),
            settings=settings,
            data_dir=data_dir or default_data_dir(env),
            log_dir=log_dir,
        )
