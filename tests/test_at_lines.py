"""probe.at framing and routing: unit cases and hypothesis properties (pure, no port)."""

from __future__ import annotations

import itertools
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from probe.at.lines import DleEvent, Framer, Line, StreamEnd, dle_escape
from probe.at.router import Pending, Router, registration_response
from probe.at.urc import Urc, UrcTable


def texts(items: list) -> list[str]:
    return [i.text for i in items if isinstance(i, Line)]


def test_cr_lf_cr_cr_lf_and_bare_cr_all_end_lines() -> None:
    f = Framer()
    assert texts(list(f.feed(b"ATE0\r\r\nOK\r\n\r\r\n+CRING: VOICE\r\r\nX\r", 5))) == [
        "ATE0", "OK", "+CRING: VOICE", "X"]


def test_line_stamp_is_the_chunk_that_carried_its_terminator() -> None:
    f = Framer()
    assert list(f.feed(b"+CSQ: 2", 1)) == []
    [line] = list(f.feed(b"0,99\r\n", 2))
    assert line == Line("+CSQ: 20,99", 2)


def test_dle_events_outside_lines_when_shielding_on() -> None:
    f = Framer(dle=True)
    items = list(f.feed(b"\x10d\x10r\r\nOK\x10", 1)) + list(f.feed(b"b\r\n", 2))
    assert [i for i in items if isinstance(i, DleEvent)] == [
        DleEvent("d", 1), DleEvent("r", 1), DleEvent("b", 2)]
    assert texts(items) == ["OK"]


def test_sample_stream_unescapes_and_ends_on_dle_etx() -> None:
    f = Framer(dle=True)
    got = bytearray()
    f.start_stream(got.extend)
    samples = bytes(range(256))
    data = dle_escape(samples) + b"\x10s" + b"\x10\x03\r\nOK\r\n"
    items: list = []
    for i in range(0, len(data), 7):  # split anywhere
        items += list(f.feed(data[i:i + 7], i))
    assert bytes(got) == samples
    assert [type(i) for i in items] == [DleEvent, StreamEnd, Line]
    assert items[0].code == "s" and texts(items) == ["OK"]


def test_overlong_garbage_is_cut_not_buffered_forever() -> None:
    f = Framer(max_line=64)
    items = list(f.feed(b"\xff" * 1000, 1))
    assert len(items) == 15 and all(isinstance(i, Line) for i in items)


def test_registration_response_vs_urc_forms() -> None:
    assert registration_response('+CREG: 2,1,"00C3","0000A1B2",7')
    assert registration_response("+CREG: 0,5")
    assert not registration_response("+CREG: 2")
    assert not registration_response('+CREG: 1,"00C3","0000A1B2"')
    assert not registration_response('+CEREG: 1,"00C3","0000A1B2",7')


# --------------------------------------------------------------------------- properties

URCS = ["RING", "NO CARRIER", "+CREG: 2", '+CREG: 1,"00C3","0000A1B2"', "MO RING",
        '+CLCC: 1,0,3,0,0,"+33123",145', "VOICE CALL: BEGIN", "^CONF:1", "+CPIN: READY",
        "^CEND:1,12,104,16", "SMS Ready"]
TABLE = UrcTable.with_extra({"mo_ring": r"MO RING", "conf": r"\^CONF: ?(?P<id>\d+)",
                             "cend": r"\^CEND: ?(?P<id>\d+),(?P<dur>\d+),(?P<s>\d+),(?P<c>\d+)",
                             "voice_call": r"VOICE CALL: ?(?P<what>BEGIN|END).*"})


def _route(data: bytes, cuts: list[int], pending: Pending | None,
           dle: bool = False) -> tuple[list[Urc], Pending | None]:
    urcs: list[Urc] = []
    router = Router(TABLE, urcs.append, dle=dle)
    router.pending = pending
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        router.feed(data[a:b], a)
    return urcs, pending


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=20), st.booleans())
def test_random_bytes_never_crash_the_router(data: bytes, cuts: list[int], dle: bool) -> None:
    _route(data, cuts, Pending("AT+CSQ"), dle)
    _route(data, cuts, None, dle)


response_lines = st.lists(st.sampled_from(["+CREG: 2,1", '+CREG: 0,5,"00C3","A1B2",7']),
                          min_size=1, max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    body=response_lines,
    urcs=st.lists(st.sampled_from(URCS), max_size=6),
    positions=st.lists(st.integers(0, 10), max_size=6),
    cuts=st.lists(st.integers(0, 400), max_size=30),
    echo=st.booleans(),
    framing=st.sampled_from([b"\r\n", b"\r\r\n"]),
)
def test_urcs_interleaved_anywhere_never_answer_a_command(
        body: list[str], urcs: list[str], positions: list[int], cuts: list[int], echo: bool,
        framing: bytes) -> None:
    lines = list(body)
    for urc, pos in zip(urcs, positions + [0] * len(urcs), strict=False):
        lines.insert(pos % (len(lines) + 1), urc)
    wire = (b"AT+CREG?\r" if echo else b"") + b"".join(
        framing + line.encode() + framing for line in lines) + framing + b"OK" + framing
    pending = Pending("AT+CREG?")
    got_urcs, _ = _route(wire, cuts, pending)
    assert pending.final is not None and pending.final.text == "OK"
    assert [line.text for line in pending.lines] == body  # exactly the response, in order
    assert [u.text for u in got_urcs] == [t for t in lines if t in URCS]  # in order, all


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*URCS, "OK", "ERROR"]), max_size=8),
       st.lists(st.integers(0, 300), max_size=20))
def test_call_progress_words_end_only_call_commands(lines: list[str], cuts: list[int]) -> None:
    wire = b"".join(b"\r\n" + line.encode() + b"\r\n" for line in lines)
    pending = Pending("AT+CLCC")
    _urcs, _ = _route(wire, cuts, pending)
    finals = [t for t in lines if t in ("OK", "ERROR")]
    if finals:
        assert pending.final is not None and pending.final.text == finals[0]
    assert "NO CARRIER" not in [line.text for line in pending.lines]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable, max_size=60), st.lists(st.integers(0, 80)))
def test_split_points_do_not_change_lines(text: str, cuts: list[int]) -> None:
    data = text.encode()
    whole = texts(list(Framer().feed(data + b"\r\n", 0)))
    f = Framer()
    pieces: list = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in itertools.pairwise(points):
        pieces += list(f.feed(data[a:b], 0))
    pieces += list(f.feed(b"\r\n", 0))
    assert texts(pieces) == whole
