"""Translated messages: gettext catalogs under ``probe/locale/<lang>/LC_MESSAGES/probe.po``.

The English texts in the code are the msgids; ``en`` and ``ru`` catalogs ship with the package
(``[probe] language`` chooses).  The compiled ``.mo`` files are committed next to the ``.po``
files; ``python -m probe.diagnosis.i18n`` rebuilds them (a test checks they are current), with
the small compiler below so no gettext tools are needed on the build machine.
"""

from __future__ import annotations

import ast
import gettext
import struct
import sys
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path

DOMAIN = "probe"
LANGUAGES = ("en", "ru")
LOCALE_DIR = Path(str(resources.files("probe") / "locale"))


@cache
def translator(language: str = "en") -> Callable[[str], str]:
    """The gettext function for ``language``; unknown languages fall back to English."""
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language], fallback=True).gettext


def parse_po(text: str) -> dict[str, str]:
    """msgid -> msgstr of a .po file (plain entries; the header is the empty msgid)."""
    entries: dict[str, str] = {}
    msgid: list[str] | None = None
    msgstr: list[str] | None = None
    current: list[str] | None = None

    def flush() -> None:
        if msgid is not None and msgstr is not None:
            entries["".join(msgid)] = "".join(msgstr)

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("msgid "):
            flush()
            msgid, msgstr = [ast.literal_eval(line[6:])], None
            current = msgid
        elif line.startswith("msgstr "):
            msgstr = [ast.literal_eval(line[7:])]
            current = msgstr
        elif line.startswith('"') and current is not None:
            current.append(ast.literal_eval(line))
    flush()
    return entries


def compile_mo(entries: dict[str, str]) -> bytes:
    """GNU .mo bytes for ``entries`` (untranslated entries are left out, as msgfmt does)."""
    items = sorted((k, v) for k, v in entries.items() if v)
    ids = [k.encode() for k, _ in items]
    strs = [v.encode() for _, v in items]
    n = len(items)
    header = 7 * 4
    ids_table, strs_table = header, header + 8 * n
    data = header + 16 * n
    offsets, blob = [], b""
    for chunk in (*ids, *strs):
        offsets.append((len(chunk), data + len(blob)))
        blob += chunk + b"\0"
    out = struct.pack("<7I", 0x950412DE, 0, n, ids_table, strs_table, 0, data)
    for length, offset in offsets:
        out += struct.pack("<2I", length, offset)
    return out + blob


def catalog_paths(language: str) -> tuple[Path, Path]:
    folder = LOCALE_DIR / language / "LC_MESSAGES"
    return folder / f"{DOMAIN}.po", folder / f"{DOMAIN}.mo"


def rebuild() -> list[Path]:
    written = []
    for language in LANGUAGES:
        po, mo = catalog_paths(language)
        mo.write_bytes(compile_mo(parse_po(po.read_text(encoding="utf-8"))))
        written.append(mo)
    return written


if __name__ == "__main__":
    for path in rebuild():
        print(path)
    sys.exit(0)
