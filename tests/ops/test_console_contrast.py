"""The console's colours meet WCAG 2.1 AA.  ``console.css`` keeps every colour in a custom
property of ``:root`` and declares, in ``@contrast`` lines of its opening comment, which
foreground goes on which background and the ratio it needs (4.5:1 for text, 3:1 for large text
and for the marks that carry meaning: the vote boxes, their letters, control edges, the focus
ring).  Rules that set a text colour and a background together are checked as well, and every
colour the stylesheet gives to text must be in some checked pair, so a new colour cannot slip
past.  The arithmetic is WCAG 2.1's relative luminance and contrast ratio."""

from __future__ import annotations

import re
from importlib import resources

import pytest

CSS = (resources.files("probe.ops.console") / "static" / "console.css").read_text()
ROOT = re.search(r":root\s*\{(.*?)\}", CSS, re.S)
assert ROOT is not None
COLOURS = dict(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{3,6})\s*;", ROOT.group(1)))
# Text in SVG is coloured with fill: these selectors name text, not shapes.
SVG_TEXT = re.compile(r"\btext\b|\.tick\b|\.label\b|\.actor\b|\.at\b|\.empty\b|\.lane-label\b")


def luminance(hex_colour: str) -> float:
    """WCAG 2.1 relative luminance of an sRGB colour."""
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)

    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(int(h[i:i + 2], 16)) for i in (0, 2, 4))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def ratio(a: str, b: str) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def declared_pairs() -> list[tuple[str, str, float]]:
    pairs = []
    for need, fgs, bgs in re.findall(r"@contrast\s+([\d.]+):\s*(.+?)\s+on\s+(.+?);", CSS):
        pairs += [(fg, bg, float(need)) for fg in fgs.split() for bg in bgs.split()]
    return pairs


def rules() -> list[tuple[str, dict[str, str]]]:
    """(selector, declarations) of every rule but :root, comments dropped, @media opened."""
    text = re.sub(r"/\*.*?\*/", "", CSS, flags=re.S)
    text = text[text.index("}", text.index(":root")) + 1:]
    out = []
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", text):
        decls = {}
        for decl in body.split(";"):
            if ":" in decl:
                name, value = decl.split(":", 1)
                decls[name.strip()] = value.strip()
        out.append((re.sub(r"^@media[^{]*\{", "", selector.strip()).strip(), decls))
    return out


def var_names(value: str) -> list[str]:
    return re.findall(r"var\((--[\w-]+)\)", value)


def rule_pairs() -> list[tuple[str, str, float, str]]:
    """Rules that set the text colour and the background together: normal text, 4.5:1."""
    out = []
    for selector, decls in rules():
        fg = var_names(decls.get("color", ""))
        bg = var_names(decls.get("background", "") + decls.get("background-color", ""))
        out += [(fg[0], b, 4.5, selector) for b in bg if fg]
    return out


def test_the_arithmetic_is_wcag_s() -> None:
    assert ratio("#000", "#fff") == pytest.approx(21.0)
    assert ratio("#fff", "#fff") == pytest.approx(1.0)
    assert ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic near miss
    assert luminance("#808080") == pytest.approx(0.2159, abs=1e-4)


def test_every_colour_is_a_custom_property_of_root() -> None:
    assert len(COLOURS) > 40
    outside = re.sub(r":root\s*\{.*?\}", "", re.sub(r"/\*.*?\*/", "", CSS, flags=re.S),
                     count=1, flags=re.S)
    literals = re.findall(r"#[0-9a-fA-F]{3,8}\b|\brgba?\(|\bhsla?\(", outside)
    assert not literals, literals
    named = re.findall(r"(?:color|background|fill|stroke|border[\w-]*|outline)\s*:[^;]*?"
                       r"\b(white|black|red|green|blue|gr[ae]y|yellow|orange|purple)\b",
                       re.sub(r"var\([^)]*\)", "", outside))
    assert not named, named
    used = {v for _, decls in rules() for value in decls.values() for v in var_names(value)}
    assert not used - set(COLOURS), sorted(used - set(COLOURS))
    assert "opacity" not in ROOT.group(0)


def test_every_declared_and_every_paired_colour_meets_aa() -> None:
    pairs = [(fg, bg, need, "@contrast") for fg, bg, need in declared_pairs()] + rule_pairs()
    assert len(pairs) > 100
    unknown = sorted({n for fg, bg, _, _ in pairs for n in (fg, bg) if n not in COLOURS})
    assert not unknown, unknown
    report = [f"{fg} {COLOURS[fg]} on {bg} {COLOURS[bg]}: {ratio(COLOURS[fg], COLOURS[bg]):.2f}"
              f" (needs {need}; {where})" for fg, bg, need, where in pairs]
    failing = [line for line, (fg, bg, need, _) in zip(report, pairs, strict=True)
               if ratio(COLOURS[fg], COLOURS[bg]) < need]
    print("\n".join(report))
    assert not failing, failing


def test_every_text_colour_is_checked_somewhere() -> None:
    """A colour given to text (``color``, or ``fill`` of SVG text) is the foreground of a
    checked pair: declared, or set together with its background in one rule."""
    checked = {fg for fg, _, _ in declared_pairs()} | {fg for fg, *_ in rule_pairs()}
    text_colours = set()
    for selector, decls in rules():
        text_colours |= set(var_names(decls.get("color", "")))
        if SVG_TEXT.search(selector):
            text_colours |= set(var_names(decls.get("fill", "")))
    assert not text_colours - checked, sorted(text_colours - checked)


def test_the_vote_boxes_stand_out_and_no_opacity_fades_them() -> None:
    """The grid's boxes: every vote colour at 3:1 against the page, the card, a quiet row
    and the empty box next to it; their letters at 3:1 on the box (both stripes of a local
    box); nothing dims a whole row of boxes (opacity would undo the arithmetic above)."""
    surfaces = ("--bg", "--card", "--row-quiet", "--empty")
    for vote in ("--ok", "--degraded", "--fail", "--local", "--local-2", "--empty-edge"):
        for surface in surfaces:
            assert ratio(COLOURS[vote], COLOURS[surface]) >= 3, (vote, surface)
    for letter, box in (("--on-vote", "--ok"), ("--on-vote", "--fail"),
                        ("--on-degraded", "--degraded"), ("--on-local", "--local"),
                        ("--on-local", "--local-2")):
        assert ratio(COLOURS[letter], COLOURS[box]) >= 3, (letter, box)
    for selector, decls in rules():
        if "opacity" in decls and re.search(r"\.box|\.boxes|\.seg|\.vote-|\bbody\b|\bmain\b",
                                            selector):
            pytest.fail(f"{selector} fades by opacity: {decls['opacity']}")
