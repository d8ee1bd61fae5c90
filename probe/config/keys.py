"""Each configuration key declared once, on the dataclass field that holds its value.

A field of a config dataclass (probe/config/model.py) is a TOML key when it is made with
:func:`key`: the field gives the key's name, its Python type and its default; the :class:`Kind`
passed to :func:`key` gives the TOML type and range, the reason a bad value gets, and the key's
JSON Schema; ``doc`` is its description.  The reader (``model._Table.read``) and the schema
(:func:`table_schema`, ``probe config-schema``) both walk these declarations, so the two cannot
drift apart.  Rules across keys (a band above another, a key required by a channel) stay code in
model.py: the schema does not carry them.

Not pydantic: its errors would have to be translated back into today's reasons one error type
at a time (units, "got <value as written in TOML>", did-you-mean), most keys need a custom check
anyway, the public types must stay plain dataclasses (``dataclasses.replace``/``asdict``), and a
Pi would load pydantic-core on every start for what a few hundred lines do.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, dataclass_transform

from probe.config.secrets import describe_type, secret_keys

JSON = dict[str, Any]


class Bad(Exception):
    """A value failed its check; the argument is the reason."""


@dataclass(frozen=True)
class Ctx:
    """What a check may need beyond the value: where relative paths start, the environment
    secrets are read from, and which variant of a table it reads (``"gsm"`` / ``"analog"``)."""

    base_dir: Path
    environ: Mapping[str, str]
    variant: str | None = None


def show(value: Any) -> str:
    """A value as the reader wrote it in TOML, shortened."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    return describe_type(value)


# --------------------------------------------------------------------------- kinds of value


class Kind:
    """A key's TOML type and range: :meth:`check` returns the value to keep or raises
    :class:`Bad` with the reason; :meth:`schema` is the same rule as JSON Schema."""

    def check(self, value: Any, ctx: Ctx) -> Any:
        raise NotImplementedError

    def schema(self, variant: str | None) -> JSON:
        raise NotImplementedError


@dataclass(frozen=True)
class Int(Kind):
    low: int
    high: int
    unit: str = ""

    def check(self, value: Any, ctx: Ctx) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or \
                not self.low <= value <= self.high:
            suffix = f" ({self.unit})" if self.unit else ""
            raise Bad(f"must be an integer from {self.low} to {self.high}{suffix}, "
                      f"got {show(value)}")
        return value

    def schema(self, variant: str | None) -> JSON:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}


@dataclass(frozen=True)
class Number(Kind):
    low: float
    high: float
    unit: str
    exclusive_low: bool = False

    def check(self, value: Any, ctx: Ctx) -> float:
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value)
              and (self.low < value if self.exclusive_low else self.low <= value)
              and value <= self.high)
        if not ok:
            span = (f"greater than {self.low} and at most {self.high}" if self.exclusive_low
                    else f"from {self.low} to {self.high}")
            raise Bad(f"must be a number {span} ({self.unit}), got {show(value)}")
        return float(value)

    def schema(self, variant: str | None) -> JSON:
        low = "exclusiveMinimum" if self.exclusive_low else "minimum"
        return {"type": "number", low: self.low, "maximum": self.high}


@dataclass(frozen=True)
class Bool(Kind):
    def check(self, value: Any, ctx: Ctx) -> bool:
        if not isinstance(value, bool):
            raise Bad(f"must be true or false, got {show(value)}")
        return value

    def schema(self, variant: str | None) -> JSON:
        return {"type": "boolean"}


@dataclass(frozen=True)
class Text(Kind):
    """A non-empty string."""

    def check(self, value: Any, ctx: Ctx) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Bad(f"must be a non-empty string, got {show(value)}")
        return value

    def schema(self, variant: str | None) -> JSON:
        return {"type": "string", "pattern": r"\S"}


@dataclass(frozen=True)
class Choice(Kind):
    choices: tuple[str, ...]

    def check(self, value: Any, ctx: Ctx) -> str:
        if value not in self.choices:
            allowed = ", ".join(f'"{c}"' for c in self.choices)
            raise Bad(f"must be one of {allowed}, got {show(value)}")
        return str(value)

    def schema(self, variant: str | None) -> JSON:
        return {"enum": list(self.choices)}


@dataclass(frozen=True)
class Matching(Kind):
    pattern: re.Pattern[str]
    rule: str  # the reason, before ", got ..."

    def check(self, value: Any, ctx: Ctx) -> str:
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise Bad(f"{self.rule}, got {show(value)}")
        return value

    def schema(self, variant: str | None) -> JSON:
        return {"type": "string", "pattern": f"^(?:{self.pattern.pattern})$"}


@dataclass(frozen=True)
class FilePath(Kind):
    """A path; relative to the configuration file's directory, ``~`` expanded.  ``readable``:
    it must be a file this user can read; ``socket``: it must fit a Unix socket address."""

    readable: bool = False
    socket: bool = False

    def check(self, value: Any, ctx: Ctx) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise Bad(f"must be a non-empty path string, got {show(value)}")
        try:
            path = Path(value).expanduser()
        except RuntimeError as exc:  # "~nobody/x": no such user
            raise Bad(f"cannot expand {value!r}: {exc}") from None
        path = path if path.is_absolute() else ctx.base_dir / path
        if self.readable and not path.is_file():
            raise Bad(f"no such file: {path}")
        if self.readable and not os.access(path, os.R_OK):
            raise Bad(f"not readable by this user: {path}")
        if self.socket and len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise Bad(f"a Unix socket path holds at most {MAX_SOCKET_PATH} bytes, got "
                      f"{len(os.fsencode(path))}: {str(path)!r}")
        return path

    def schema(self, variant: str | None) -> JSON:
        return {"type": "string", "pattern": r"\S"}


#: sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class Checked(Kind):
    """A rule written as a function (``value -> kept value``, :class:`Bad` otherwise), with the
    part of it JSON Schema can say."""

    function: Callable[[Any], Any]
    json_schema: JSON

    def check(self, value: Any, ctx: Ctx) -> Any:
        return self.function(value)

    def schema(self, variant: str | None) -> JSON:
        return dict(self.json_schema)


@dataclass(frozen=True)
class SecretKind(Kind):
    """A :class:`~probe.config.secrets.Secret`: one of ``<key>``, ``<key>_file``, ``<key>_env``
    (read by ``resolve_secret``, never shown)."""

    def schema(self, variant: str | None) -> JSON:
        return {"type": "string", "pattern": r"\S"}


@dataclass(frozen=True)
class Table(Kind):
    """A sub-table (``array``: an array of tables), read by its section's own function."""

    of: type
    array: bool = False

    def schema(self, variant: str | None) -> JSON:
        table = table_schema(self.of)
        return {"type": "array", "minItems": 1, "items": table} if self.array else table


@dataclass(frozen=True)
class Variants(Kind):
    """A table of tables, one per variant, each of the same class (``[modems.gsm]``...)."""

    of: type
    variants: tuple[str, ...]

    def schema(self, variant: str | None) -> JSON:
        return {"type": "object", "additionalProperties": False,
                "properties": {v: table_schema(self.of, v) for v in self.variants}}


@dataclass(frozen=True)
class OwnReader(Kind):
    """A key its section reads itself (e.g. ``channels``, whose items each get a key path)."""

    json_schema: JSON

    def schema(self, variant: str | None) -> JSON:
        return dict(self.json_schema)


# --------------------------------------------------------------------------- declaring keys


@dataclass(frozen=True)
class Key:
    kind: Kind
    doc: str
    optional: bool = False  # absent = None, though the dataclass field has no default
    only: tuple[str, ...] = ()  # a key of these variants only (``[modems.gsm]``, not analog)
    switch: str | None = None  # a boolean key before this one: false sets this one to None
    switch_doc: str = ""


_NO_DEFAULT: Any = dataclasses.MISSING


def key(kind: Kind, doc: str, *, default: Any = _NO_DEFAULT, optional: bool = False,
        only: Sequence[str] = (), switch: str | None = None, switch_doc: str = "",
        default_factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field that is a TOML key: ``default`` as in :func:`dataclasses.field`."""
    meta = {"key": Key(kind, doc, optional, tuple(only), switch, switch_doc)}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field, key))
def table(cls: type[_T]) -> type[_T]:
    """A frozen dataclass whose fields may be :func:`key` (type checkers and linters read
    ``key(default=...)`` as they read ``field(default=...)``)."""
    return dataclass(frozen=True)(cls)


#: Keys of dataclasses declared elsewhere (their fields carry no metadata), by class.
_DECLARED: dict[type, dict[str, Key]] = {}


def declare(cls: type, keys: dict[str, Key]) -> None:
    """Declare the keys of a dataclass that lives outside the configuration (the diagnosis
    thresholds): names and defaults stay on its fields, kinds and docs are given here."""
    names = [f.name for f in dataclasses.fields(cls)]
    assert list(keys) == names, f"{cls.__name__}: declare every field, in order"
    _DECLARED[cls] = keys


def keys_of(cls: type, variant: str | None = None) -> list[tuple[dataclasses.Field[Any], Key]]:
    """The TOML keys of a config dataclass, in the order of its fields."""
    declared = _DECLARED.get(cls, {})
    out = []
    for f in dataclasses.fields(cls):
        k = declared.get(f.name) or f.metadata.get("key")
        if k is not None and (not k.only or variant in k.only):
            out.append((f, k))
    return out


def toml_names(f: dataclasses.Field[Any], k: Key) -> list[str]:
    """The TOML key names a field takes (a secret has three, a switch comes first)."""
    if isinstance(k.kind, SecretKind):
        return list(secret_keys(f.name))
    return [k.switch, f.name] if k.switch else [f.name]


def default_of(f: dataclasses.Field[Any], k: Key) -> Any:
    """The value an absent key takes, :data:`dataclasses.MISSING` when the key is required."""
    if k.optional:
        return None
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


# --------------------------------------------------------------------------- JSON Schema


def _as_json(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_as_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def table_schema(cls: type, variant: str | None = None) -> JSON:
    """The JSON Schema of one table: its keys, their types, ranges, defaults and docs; no
    other key."""
    properties: JSON = {}
    required: list[str] = []
    for f, k in keys_of(cls, variant):
        if k.switch:
            properties[k.switch] = {"type": "boolean", "default": True,
                                    "description": k.switch_doc}
        if isinstance(k.kind, SecretKind):
            inline, from_file, from_env = secret_keys(f.name)
            properties[inline] = {**k.kind.schema(variant), "description": k.doc}
            properties[from_file] = {**k.kind.schema(variant),
                                     "description": f"{inline}, read from this file"}
            properties[from_env] = {**k.kind.schema(variant),
                                    "description": f"{inline}, read from this environment "
                                                   "variable"}
            continue
        prop = {**k.kind.schema(variant), "description": k.doc}
        default = default_of(f, k)
        if default is dataclasses.MISSING:
            required.append(f.name)
        elif default is not None and not isinstance(k.kind, Table | Variants):
            prop["default"] = _as_json(default)
        properties[f.name] = prop
    schema: JSON = {"type": "object", "additionalProperties": False, "properties": properties}
    if cls.__doc__ and not cls.__doc__.startswith(f"{cls.__name__}("):
        schema = {"description": cls.__doc__.strip().splitlines()[0], **schema}
    if required:
        schema["required"] = required
    return schema
