"""``hotline_probe_toml``: render a mapping as a TOML document (the probe's configuration).

Keys whose value is ``None`` are left out (TOML has no null): a section set to ``null`` in the
inventory is simply absent.  Scalars come before sub-tables, lists of mappings become arrays of
tables (``[[targets]]``), so any section the probe's configuration grows is rendered without
touching the template.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key):
    key = str(key)
    return key if BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _is_table(value):
    return isinstance(value, Mapping)


def _is_table_array(value):
    return (isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and value
            and all(isinstance(item, Mapping) for item in value))


def _value(value, where):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"{where}: {value} has no TOML form here")
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes.
        return json.dumps(value, ensure_ascii=False)
    if _is_table(value):
        items = ", ".join(f"{_key(k)} = {_value(v, f'{where}.{k}')}"
                          for k, v in value.items() if v is not None)
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v, f"{where}[]") for v in value) + "]"
    raise ValueError(f"{where}: cannot render {type(value).__name__} as TOML")


def _table(data, path, out):
    scalars = [(k, v) for k, v in data.items()
               if v is not None and not _is_table(v) and not _is_table_array(v)]
    tables = [(k, v) for k, v in data.items() if v is not None and _is_table(v)]
    arrays = [(k, v) for k, v in data.items() if v is not None and _is_table_array(v)]
    for key, value in scalars:
        out.append(f"{_key(key)} = {_value(value, '.'.join([*path, str(key)]))}")
    for key, value in tables:
        sub = [*path, _key(key)]
        has_scalars = any(v is not None and not _is_table(v) and not _is_table_array(v)
                          for v in value.values())
        if has_scalars or not value:
            out.extend(["", f"[{'.'.join(sub)}]"])
        _table(value, sub, out)
    for key, items in arrays:
        sub = [*path, _key(key)]
        for item in items:
            out.extend(["", f"[[{'.'.join(sub)}]]"])
            _table(item, sub, out)


def hotline_probe_toml(data):
    """The TOML text of ``data`` (a mapping), ending with a newline."""
    if not _is_table(data):
        raise ValueError("hotline_probe_toml needs a mapping")
    out = []
    _table(data, [], out)
    return "\n".join(out).lstrip("\n") + "\n"


class FilterModule:
    def filters(self):
        return {"hotline_probe_toml": hotline_probe_toml}
