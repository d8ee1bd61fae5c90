"""Secrets in the configuration: a value that never shows itself, and where it came from.

Every secret in the TOML file (today: ``mqtt.password`` and ``sip.password``) may be given in
exactly one of three ways::

    password      = "s3cret"                  # inline (fine for a lab, not for a branch)
    password_file = "/etc/hotline-probe/sip"  # a file; one trailing newline is stripped;
                                              # a relative path is relative to the config file
    password_env  = "PROBE_SIP_PASSWORD"      # an environment variable (systemd EnvironmentFile=)

:func:`resolve_secret` turns those keys into a :class:`Secret` or into problems; a problem names
the key and the file or variable, never the secret value itself.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Problem = tuple[str, str]


@dataclass(frozen=True, init=False, repr=False, eq=False)
class Secret:
    """A secret string.  ``repr()`` and ``str()`` never show it; :meth:`reveal` does.

    ``source`` says where it came from and is safe to log: ``"inline"``, ``"file:/etc/x"`` or
    ``"env:SIP_PASSWORD"``.  The value is deliberately not a dataclass field, so
    ``dataclasses.asdict(config)`` (say, for a JSON dump) carries only the source.

    >>> s = Secret("hunter2", source="env:PROBE_SIP_PASSWORD")
    >>> s, str(s), f"{s}", s.source, s.reveal()
    (Secret('***'), "Secret('***')", "Secret('***')", 'env:PROBE_SIP_PASSWORD', 'hunter2')
    """

    source: str

    def __init__(self, value: str, source: str = "inline") -> None:
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "source", source)

    def reveal(self) -> str:
        """The secret itself: hand it to the library that needs it, never to a log."""
        value: str = self.__dict__["_value"]
        return value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return (self.reveal(), self.source) == (other.reveal(), other.source)

    def __hash__(self) -> int:
        return hash((self.reveal(), self.source))


def describe_type(value: Any) -> str:
    """What kind of TOML value this is, without showing it: ``"an integer"``, ``"a table"``..."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, _dt.date | _dt.time):
        return "a date/time"
    return type(value).__name__


def secret_keys(name: str = "password") -> tuple[str, str, str]:
    """The three keys that may carry the secret ``name``: inline, ``_file`` and ``_env``."""
    return (name, f"{name}_file", f"{name}_env")


def resolve_secret(
    table: Mapping[str, Any],
    prefix: str,
    name: str = "password",
    *,
    base_dir: Path,
    environ: Mapping[str, str],
) -> tuple[Secret | None, list[Problem]]:
    """Read the secret ``name`` from ``table`` (the section at key path ``prefix``).

    Returns ``(secret, [])``, ``(None, [])`` when none of the three keys is set, or
    ``(None, problems)``.  Problems never contain the secret value.
    """
    inline_key, file_key, env_key = keys = secret_keys(name)
    given = [k for k in keys if k in table]
    if not given:
        return None, []
    if len(given) > 1:
        return None, [
            (
                f"{prefix}.{name}",
                f"set at most one of {', '.join(keys)} (got {' and '.join(given)})",
            )
        ]
    key = given[0]
    value = table[key]
    where = f"{prefix}.{key}"
    if not isinstance(value, str) or not value.strip():
        # describe_type: never echo what may be the password itself.
        return None, [(where, f"must be a non-empty string, got {describe_type(value)}")]

    if key == inline_key:
        return Secret(value, source="inline"), []
    if key == env_key:
        return _from_env(value, where, environ)
    assert key == file_key
    return _from_file(value, where, base_dir)


def _from_env(
    variable: str, where: str, environ: Mapping[str, str]
) -> tuple[Secret | None, list[Problem]]:
    if variable not in environ:
        return None, [(where, f"environment variable {variable} is not set")]
    if not environ[variable]:
        return None, [(where, f"environment variable {variable} is empty")]
    return Secret(environ[variable], source=f"env:{variable}"), []


def _from_file(name: str, where: str, base_dir: Path) -> tuple[Secret | None, list[Problem]]:
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None, [(where, f"file {str(path)!r} is not UTF-8 text")]
    except OSError as exc:
        return None, [(where, f"cannot read file {str(path)!r}: {exc.strerror or exc}")]
    if text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text:
        return None, [(where, f"file {str(path)!r} is empty")]
    return Secret(text, source=f"file:{path}"), []


def private_file_problems(files: Mapping[str, Path]) -> list[Problem]:
    """Problems for secret files (``key -> path``) that others than owner and group may read
    or write: like ssh with a private key, the probe refuses them, naming the file and the fix.

    Only the "others" bits count: a deployment may let the probe's group read its secrets.
    """
    problems: list[Problem] = []
    for key, path in files.items():
        try:
            mode = path.stat().st_mode & 0o777
        except OSError:
            continue  # unreadable or missing: reported where the file is read
        if mode & 0o006:
            problems.append((key, f"{str(path)!r} is accessible by others (mode {mode:04o}): "
                                  f"a secret must not be; run: chmod o-rwx {path}"))
    return problems


def secret_file(secret: Secret | None) -> Path | None:
    """The file a secret was read from, if it came from one."""
    if secret is None or not secret.source.startswith("file:"):
        return None
    return Path(secret.source.removeprefix("file:"))
