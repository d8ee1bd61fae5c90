"""probe.at over a real pseudo-terminal (the emulator), plus its pure parsers and profiles."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from probe.at import parse
from probe.at.causes import parse_ceer
from probe.at.errors import AtError, CmeError, CommandFailed, ModemGone, ModemTimeout
from probe.at.port import AtPort, fields, open_url
from probe.at.profiles import GENERIC, PROFILES, V253, identify
from probe.errors import ProbeError
from probe.sim.modem import IDENTITIES, ModemEmulator, scenario


@pytest.fixture
def sim7600() -> Iterator[tuple[ModemEmulator, AtPort]]:
    with ModemEmulator("sim7600", scenario("answered", boot_ms=0)) as modem:
        at = AtPort(open_url(modem.url)).start()
        yield modem, at
        at.close()


def test_echo_on_then_off(sim7600: tuple[ModemEmulator, AtPort]) -> None:
    modem, at = sim7600
    assert modem.echo  # factory default: echo on
    assert at.command("AT+CSQ").text == ["+CSQ: 21,99"]  # the echo is not a response line
    at.command("ATE0")
    assert at.command("AT+CSQ").text == ["+CSQ: 21,99"]
    at.command("ATZ")  # turns echo back on: still fine
    assert at.command("AT+CGMM").text == ["SIMCOM_SIM7600E-H"]


def test_urc_inside_a_response_goes_to_the_urc_queue(sim7600: tuple[ModemEmulator, AtPort]
                                                     ) -> None:
    _, at = sim7600
    response = at.command("AT+CREG?")
    assert response.text == ['+CREG: 2,1,"00C3","0000A1B2",7']
    urc = at.urcs.get(timeout=1)
    assert (urc.name, urc.fields["stat"]) == ("creg", "1")


def test_typed_errors_are_probe_errors_and_builtins(sim7600: tuple[ModemEmulator, AtPort]
                                                    ) -> None:
    _, at = sim7600
    with pytest.raises(CommandFailed) as info:
        at.command("AT+NOSUCH")
    assert info.value.final == "ERROR" and isinstance(info.value, ProbeError | RuntimeError)
    assert at.command("AT+NOSUCH", check=False).final == "ERROR"
    with pytest.raises(CmeError) as cme:
        at.command("AT+VTS=1")  # no call: +CME ERROR: 3
    assert cme.value.code == 3


def test_timeout_and_unplug() -> None:
    with ModemEmulator("sim800", scenario("unresponsive")) as modem:
        at = AtPort(open_url(modem.url)).start()
        with pytest.raises(ModemTimeout) as info:
            at.command("AT", 0.2)
        assert isinstance(info.value, TimeoutError)
        modem.unplug()
        assert at.urcs.get(timeout=2).name == "gone"
        with pytest.raises(ModemGone) as gone:
            at.command("AT", 0.2)
        assert isinstance(gone.value, ConnectionError | AtError)
        at.close()
    with pytest.raises(ModemGone):
        open_url(modem.url)  # the by-id symlink is gone with the device


def test_commands_queue_in_order_from_many_threads(sim7600: tuple[ModemEmulator, AtPort]
                                                   ) -> None:
    import threading

    _, at = sim7600
    results: queue.Queue[tuple[str, list[str]]] = queue.Queue()

    def worker(cmd: str) -> None:
        for _ in range(5):
            results.put((cmd, at.command(cmd).text))

    threads = [threading.Thread(target=worker, args=(c,)) for c in ("AT+CSQ", "AT+CGMM",
                                                                     "AT+CGMI")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = {"AT+CSQ": ["+CSQ: 21,99"], "AT+CGMM": ["SIMCOM_SIM7600E-H"],
                "AT+CGMI": ["SIMCOM INCORPORATED"]}
    got = [results.get_nowait() for _ in range(15)]
    assert all(text == expected[cmd] for cmd, text in got)


# --------------------------------------------------------------------------- pure parts


def test_csq_and_cesq_to_dbm() -> None:
    assert [parse.csq_dbm(f"{r},99") for r in (0, 1, 2, 30, 31, 99)] == [
        -113, -111, -109, -53, -51, None]
    assert parse.cesq("99,99,255,255,20,50") == (-91.0, -10.0)
    assert parse.cesq("99,99,255,255,255,255") == (None, None)


def test_registration_operator_and_masking() -> None:
    assert parse.registration('2,5,"00C3","A1B2",7') == 5
    assert parse.cops('0,0,"Orange F",7') == ("Orange F", "E-UTRAN")
    assert parse.cops("0") == (None, None)
    assert parse.mask_identity("358240051111110") == "35824005******0"
    assert parse.mask_identity("1234") == "****"
    assert fields('1,0,"a,b",129') == [1, 0, "a,b", 129]


@pytest.mark.parametrize(("lines", "expected"), [
    (["+CEER: 17"], (17, "User busy")),
    (["+CEER: Normal call clearing"], (16, "Normal call clearing")),
    (['+CEER: "CC INFO","User busy"'], (17, "User busy")),
    (["+CEER: No cause information available"], (None, "No cause information available")),
    ([], (None, None)),
])
def test_ceer_shapes(lines: list[str], expected: tuple[int | None, str | None]) -> None:
    assert parse_ceer(lines) == expected


@pytest.mark.parametrize("family", sorted(IDENTITIES))
def test_auto_identification_picks_each_profile(family: str) -> None:
    ident = IDENTITIES[family]
    text = f"{ident.manufacturer} {ident.model} {ident.ati}"
    channel = PROFILES[family].channel
    assert identify(text, channel).name == family


def test_unknown_modems_fall_back() -> None:
    assert identify("ACME Wireless X1000") is GENERIC
    assert identify("", "analog") is V253
