"""The ops service's configuration: one TOML file, each key declared once (a pydantic model).

Every key's name, type, range and default is written here and nowhere else; the error messages,
``probe ops schema-config`` (a JSON Schema for editors) and the defaults all come from the model.
:func:`load_ops_config` reports **every** problem at once as ``(key path, reason)`` through
:class:`~probe.errors.ConfigError` (the CLI prints them and exits 2)::

    ops.toml: mqtt.prot: unknown key (allowed: host, port, ...); did you mean "port"?
    ops.toml: correlation.rounds_required: must be at most rounds_window (3), got 5

The smallest file is empty: the service then runs on SQLite in ``state_dir`` and consumes a
broker on 127.0.0.1:1883.  The annotated reference is ``examples/ops.toml``.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path as _Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from probe.config.secrets import Secret, resolve_secret
from probe.diagnosis.i18n import LANGUAGES
from probe.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Seconds = Annotated[float, Field(gt=0, le=86400 * 7)]
# TOML gives arrays as lists and paths as strings: those two conversions are the only lax ones.
Path = Annotated[_Path, Field(strict=False)]


class _Section(BaseModel):
    """Strict (no "5" for 5), frozen, and no unknown keys: a typo never falls back to a default."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class OpsIdentity(_Section):
    instance: Name = Field(default_factory=lambda: _hostname_name(),
                           description="This instance's name in logs, metrics and locks.")
    state_dir: Path = Field(_Path("/var/lib/hotline-probe-ops"),
                            description="The SQLite database (when no [database] url) and "
                                        "the TLS key material live here.")
    language: Literal[LANGUAGES] = Field("en", description="Language of causes and remedies "  # type: ignore[valid-type]
                                                           "in notifications.")
    public_url: str | None = Field(None, description="Base URL of the console, for links in "
                                                      "notifications.")


class DatabaseConfig(_Section):
    url: str | None = Field(None, description="SQLAlchemy URL, e.g. "
                            "postgresql+psycopg://ops@db.example/ops; absent: SQLite in "
                            "state_dir.")
    pool_size: int = Field(5, ge=1, le=100)
    password: Secret | None = Field(None, exclude=True, description="(or password_file / "
                                    "password_env) for the database URL's user")
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid",
                              arbitrary_types_allowed=True)


class MqttTlsConfig(_Section):
    ca_file: Path
    cert_file: Path
    key_file: Path


class OpsMqttConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(None, max_length=64, description="Default: "
                                  "hotline-probe-ops-<instance>; must be unique per instance.")
    share_group: Name = Field("ops", description="Instances in one group share the results.")
    session_expiry_s: int = Field(86400, ge=60, le=7 * 86400, description="How long the broker "
                                  "keeps queued results for an instance that is away.")
    keepalive_s: int = Field(30, ge=5, le=3600)
    username: str | None = None
    password: Secret | None = Field(None, exclude=True)
    tls: MqttTlsConfig | None = None
    max_payload_bytes: int = Field(1_048_576, ge=1024, le=64 * 1_048_576,
                                   description="Larger results are quarantined unread.")
    max_recording_bytes: int = Field(2_097_152, ge=1024, le=64 * 1_048_576)
    batch_max: int = Field(200, ge=1, le=10000, description="Results committed per "
                           "transaction at most (then acknowledged).")
    batch_wait_ms: int = Field(20, ge=0, le=5000)
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid",
                              arbitrary_types_allowed=True)


class HttpConfig(_Section):
    listen: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    trusted_proxies: tuple[str, ...] = Field(
        (), strict=False,
        description="Addresses whose X-Forwarded-For / -Proto are believed (a reverse proxy).")
    login_attempts_per_minute: int = Field(10, ge=1, le=1000)
    session_hours: float = Field(12, gt=0, le=24 * 30)

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self


class Correlation(_Section):
    """How the sites' results of one target are combined (ThousandEyes' minimumSources /
    roundsViolatingRequired of roundsViolatingOutOf)."""

    round_s: Seconds = Field(300, description="Length of a round: results whose calls start "
                             "in the same round are judged together (the probes' interval).")
    min_sites: int = Field(2, ge=1, le=100000, description="Failing sites needed to call the "
                           "hotline down everywhere.")
    min_percent: float = Field(0, ge=0, le=100, description="...and at least this share of "
                               "the sites that reported.")
    rounds_required: int = Field(2, ge=1, le=100)
    rounds_window: int = Field(3, ge=1, le=100)
    recover_rounds: int = Field(2, ge=1, le=100, description="Good rounds in a row before an "
                                "incident resolves.")
    flap_changes: int = Field(4, ge=2, le=1000, description="Opens and resolves within "
                              "flap_window_rounds that mark an incident flapping.")
    flap_window_rounds: int = Field(12, ge=2, le=10000)

    @model_validator(mode="after")
    def _window(self) -> Correlation:
        if self.rounds_required > self.rounds_window:
            raise ValueError(f"rounds_required ({self.rounds_required}) must be at most "
                             f"rounds_window ({self.rounds_window})")
        return self


class TargetCorrelation(_Section):
    """Per-target overrides of [correlation]; absent keys take the [correlation] value."""

    name: Name
    round_s: Seconds | None = None
    min_sites: int | None = Field(None, ge=1, le=100000)
    min_percent: float | None = Field(None, ge=0, le=100)
    rounds_required: int | None = Field(None, ge=1, le=100)
    rounds_window: int | None = Field(None, ge=1, le=100)
    recover_rounds: int | None = Field(None, ge=1, le=100)
    flap_changes: int | None = Field(None, ge=2, le=1000)
    flap_window_rounds: int | None = Field(None, ge=2, le=10000)


class Presence(_Section):
    silent_factor: float = Field(2, ge=1, le=100, description="A probe is silent after this "
                                 "many of its longest round without a result.")
    sweep_s: Seconds = Field(15, description="How often presence, rounds and the notification "
                             "queue are looked at.")


class Receiver(_Section):
    name: Name
    kind: Literal["webhook", "email", "alertmanager"]
    url: str | None = Field(None, description="webhook: the URL; alertmanager: its base URL "
                            "(…/api/v2/alerts is appended).")
    format: Literal["json", "slack"] = Field("json", description="webhook: our JSON, or "
                                             "{\"text\": ...} for Slack/Mattermost.")
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str | None = None
    password: Secret | None = Field(None, exclude=True)
    mail_from: str | None = None
    mail_to: tuple[str, ...] = Field((), strict=False)
    events: tuple[Literal["open", "escalate", "update", "resolve"], ...] = Field(
        ("open", "escalate", "resolve"), strict=False)
    timeout_s: Seconds = 10
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid",
                              arbitrary_types_allowed=True)

    @model_validator(mode="after")
    def _needs(self) -> Receiver:
        if self.kind in ("webhook", "alertmanager") and not (
                self.url and re.match(r"^https?://[^\s/]+", self.url)):
            raise ValueError(f"a {self.kind} receiver needs url = \"http(s)://...\"")
        if self.kind == "email":
            missing = [k for k in ("smtp_host", "mail_from") if not getattr(self, k)]
            if not self.mail_to:
                missing.append("mail_to")
            if missing:
                raise ValueError(f"an email receiver needs {', '.join(missing)}")
        return self


class NotifyConfig(_Section):
    retry_first_s: Seconds = 5
    retry_max_s: Seconds = 600
    give_up_after_s: Seconds = Field(86400, description="A notification still failing after "
                                     "this is marked failed (and counted), not retried.")


class Retention(_Section):
    results_days: int = Field(90, ge=1, le=3650)
    recordings_days: int = Field(30, ge=1, le=3650)
    quarantine_days: int = Field(30, ge=1, le=3650)
    health_days: int = Field(30, ge=1, le=3650)


class OpsConfig(_Section):
    ops: OpsIdentity = Field(default_factory=OpsIdentity)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mqtt: OpsMqttConfig = Field(default_factory=OpsMqttConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    correlation: Correlation = Field(default_factory=Correlation)
    targets: tuple[TargetCorrelation, ...] = Field((), strict=False)
    presence: Presence = Field(default_factory=Presence)
    receivers: tuple[Receiver, ...] = Field((), strict=False)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    retention: Retention = Field(default_factory=Retention)

    @model_validator(mode="after")
    def _unique_names(self) -> OpsConfig:
        for what, items in (("targets", self.targets), ("receivers", self.receivers)):
            names = [i.name for i in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{what}: names must be unique, repeated: {', '.join(dup)}")
        for t in self.targets:
            merged = self.correlation_for(t.name)
            if merged.rounds_required > merged.rounds_window:
                raise ValueError(f"targets[{t.name}]: rounds_required must be at most "
                                 "rounds_window")
        return self

    # -- derived --------------------------------------------------------------------------------
    def correlation_for(self, target: str) -> Correlation:
        """[correlation] with the target's overrides applied."""
        base = self.correlation.model_dump()
        for t in self.targets:
            if t.name == target:
                base.update({k: v for k, v in t.model_dump(exclude={"name"}).items()
                             if v is not None})
        return Correlation.model_construct(**base)

    @property
    def longest_round_s(self) -> float:
        return max([self.correlation.round_s, *(t.round_s for t in self.targets if t.round_s)])

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.ops.state_dir / 'ops.sqlite3'}"

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"hotline-probe-ops-{self.ops.instance}"[:64]


def _hostname_name() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", os.uname().nodename)[:64].strip("-.")
    return name or "ops"


# --------------------------------------------------------------------------- loading

_SECRET_SECTIONS = ("database", "mqtt")


def load_ops_config(path: str | os.PathLike[str],
                    environ: Mapping[str, str] | None = None) -> OpsConfig:
    """Read and validate ``path``; :class:`ConfigError` with every problem otherwise."""
    source = str(path)
    try:
        text = _Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError([("", f"cannot read the file: {err.strerror}")], source) from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([("", f"not valid TOML: {err}")], source) from err
    return parse_ops_config(data, base_dir=_Path(path).parent, environ=environ, source=source)


def parse_ops_config(data: dict[str, Any], *, base_dir: _Path = _Path("."),
                     environ: Mapping[str, str] | None = None, source: str = "") -> OpsConfig:
    """Validate an already-parsed TOML document."""
    environ = os.environ if environ is None else environ
    problems: list[tuple[str, str]] = []
    data = _resolve_secrets(data, base_dir, environ, problems)
    try:
        config = OpsConfig.model_validate(data)
    except ValidationError as err:
        problems.extend(_problems(err, data))
        config = None
    if problems:
        raise ConfigError(problems, source)
    assert config is not None
    if not config.ops.state_dir.is_absolute():
        config = config.model_copy(update={"ops": config.ops.model_copy(
            update={"state_dir": (base_dir / config.ops.state_dir).resolve()})})
    return config


def _resolve_secrets(data: dict[str, Any], base_dir: _Path, environ: Mapping[str, str],
                     problems: list[tuple[str, str]]) -> dict[str, Any]:
    """password / password_file / password_env -> one ``password`` Secret, per section."""
    out = dict(data)

    def resolve(table: Any, path: str) -> Any:
        if not isinstance(table, dict):
            return table
        secret, found = resolve_secret(table, path, "password", base_dir=base_dir,
                                       environ=environ)
        problems.extend(found)
        table = {k: v for k, v in table.items()
                 if k not in ("password", "password_file", "password_env")}
        if secret is not None:
            table["password"] = secret
        return table

    for section in _SECRET_SECTIONS:
        if section in out:
            out[section] = resolve(out[section], section)
    if isinstance(out.get("receivers"), list):
        out["receivers"] = [resolve(r, f"receivers[{i}]")
                            for i, r in enumerate(out["receivers"])]
    return out


def _problems(err: ValidationError, data: dict[str, Any]) -> list[tuple[str, str]]:
    """pydantic's errors as (key path, reason) in the probe's words, with did-you-mean."""
    problems = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path = _path(loc)
        kind, msg = e["type"], e["msg"]
        got = e.get("input")
        if kind == "extra_forbidden":
            allowed = _allowed_at(loc[:-1])
            reason = f"unknown key (allowed: {', '.join(allowed)})"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                reason += f'; did you mean "{close[0]}"?'
        elif kind == "missing":
            reason = "missing (required)"
        elif kind == "value_error":
            reason = msg.removeprefix("Value error, ")
        else:
            reason = f"{_lower_first(msg).replace('a valid tuple', 'an array')}, got {_show(got)}"
        problems.append((path, reason))
    return problems


def _allowed_at(loc: list[Any]) -> list[str]:
    model: Any = OpsConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        model = _model_in(ann)
        if model is None:
            return []
    return [k for k in model.model_fields]


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _path(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if len(value) <= 60 else f'"{value[:56]}..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of ops.toml, for editors (taplo, VS Code Even Better TOML)."""
    return OpsConfig.model_json_schema()
