"""The board's files agree with each other: pin map, overlay, HAT EEPROM, config.txt, defaults.

Everything is read from the real files; the overlay is really compiled with ``dtc -@`` and
really applied with ``fdtoverlay`` to a miniature of the Pi's base device tree.  Each checker
returns a list of problems, and is also run on a tampered copy to prove it catches a mismatch.
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from probe.board import line as line_mod
from probe.board.pins import DEFAULT_PINS, SYSTEM_PINS, PinMap, load_pinmap, pin_conflicts
from probe.config.model import IndicatorConfig, LineConfig

ROOT = Path(__file__).resolve().parent.parent
PINMAP = ROOT / "hardware" / "pinmap.toml"
OVERLAY = ROOT / "firmware" / "probe-board-overlay.dts"
EEPROM = ROOT / "firmware" / "eeprom_settings.txt"
CONFIG_TXT = ROOT / "firmware" / "config.txt"
HW_README = ROOT / "hardware" / "README.md"
BOM = ROOT / "hardware" / "bom.csv"

needs_dtc = pytest.mark.skipif(shutil.which("dtc") is None or shutil.which("fdtoverlay") is None,
                               reason="dtc/fdtoverlay missing: install device-tree-compiler")

# A miniature of the Raspberry Pi base tree (bcm270x.dtsi): the labels our overlay targets,
# with the stock state before config.txt runs (spi0 disabled, spidev@0 and @1 present,
# two chip selects).
BASE_DTS = """\
/dts-v1/;
/ {
    compatible = "raspberrypi,4-model-b", "brcm,bcm2711";
    #address-cells = <1>;
    #size-cells = <1>;
    soc {
        #address-cells = <1>;
        #size-cells = <1>;
        gpio: gpio@7e200000 {
            compatible = "brcm,bcm2711-gpio";
            reg = <0x7e200000 0xb4>;
            gpio-controller;
            #gpio-cells = <2>;
            spi0_pins: spi0_pins { brcm,pins = <9 10 11>; brcm,function = <4>; };
            spi0_cs_pins: spi0_cs_pins { brcm,pins = <8 7>; brcm,function = <1>; };
        };
        spi0: spi@7e204000 {
            compatible = "brcm,bcm2835-spi";
            reg = <0x7e204000 0x200>;
            #address-cells = <1>;
            #size-cells = <0>;
            pinctrl-names = "default";
            pinctrl-0 = <&spi0_pins &spi0_cs_pins>;
            cs-gpios = <&gpio 8 1>, <&gpio 7 1>;
            status = "disabled";
            spidev0: spidev@0 {
                compatible = "spidev"; reg = <0>; spi-max-frequency = <125000000>;
            };
            spidev1: spidev@1 {
                compatible = "spidev"; reg = <1>; spi-max-frequency = <125000000>;
            };
        };
    };
};
"""

PULL_CODE = {"none": 0, "down": 1, "up": 2}
FUNCTION_CODE = {"input": 0, "output": 1}


def run(*cmd: str | Path) -> str:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, f"{cmd}: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def pinmap() -> PinMap:
    return load_pinmap(PINMAP)


@pytest.fixture(scope="module")
def dtbo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dtc") is None:
        pytest.skip("dtc missing: install device-tree-compiler")
    out = tmp_path_factory.mktemp("dt") / "probe-board.dtbo"
    done = subprocess.run(["dtc", "-@", "-I", "dts", "-O", "dtb", "-o", str(out), str(OVERLAY)],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", f"dtc warnings: {done.stderr}"
    return out


# --------------------------------------------------------------------------- the pin map


def test_pinmap_loads_and_has_every_signal_the_issue_names(pinmap: PinMap) -> None:
    names = set(pinmap.by_name())
    assert {"spi0_sclk", "spi0_mosi", "spi0_miso", "spi0_ce0", "led_red", "led_green",
            "led_blue", "buzzer", "silence_button", "modem_pwrkey", "modem_reset",
            "modem_status", "uart0_txd", "uart0_rxd", "id_sd", "id_sc"} <= names


def test_pinmap_header_numbers_match_gpiozero_board_table(pinmap: PinMap) -> None:
    info = MockFactory(revision="c03111").board_info  # a Pi 4 B: the 40-pin J8 header
    for spec in pinmap.pins:
        [(header, pin)] = list(info.find_pin(f"GPIO{spec.gpio}"))
        assert (header.name, pin.number) == ("J8", spec.header), spec.name
    for gpio in pinmap.reserved:
        assert list(info.find_pin(f"GPIO{gpio}"))


def test_no_pin_twice_and_gpio_pins_avoid_spi_uart_and_id_pins(pinmap: PinMap) -> None:
    assert pin_conflicts({p.name: p.gpio for p in pinmap.gpio_pins()}) == []
    # the system pins the software refuses are exactly the board's peripheral pins + CE1
    peripheral = {p.gpio for p in pinmap.pins if p.function in ("alt0", "id_eeprom")}
    assert set(SYSTEM_PINS) == peripheral | {7}
    assert {0, 1, 8, 9, 10, 11, 14, 15} <= peripheral  # ID EEPROM, SPI0, UART0


def test_pinmap_loader_rejects_a_pin_used_twice(tmp_path: Path) -> None:
    text = PINMAP.read_text().replace("gpio = 18\n", "gpio = 22\n")  # buzzer onto led_red
    bad = tmp_path / "pinmap.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match="GPIO22 is listed more than once"):
        load_pinmap(bad)


def test_pin_conflicts_names_every_problem() -> None:
    found = pin_conflicts({"led": 22, "buzzer": 22, "button": 9, "x": 40, "unused": None})
    assert found == [
        "GPIO22 is used by both led and buzzer",
        "button: GPIO9 is reserved (SPI0 MISO: the MCP3008 on spidev0.0)",
        "x: GPIO40 is not on the 40-pin header (0-27)",
    ]


# --------------------------------------------------------------------------- defaults in code


def default_config_problems(pinmap: PinMap, ind: IndicatorConfig) -> list[str]:
    pins = {p.name: p.gpio for p in pinmap.gpio_pins()}
    expected = {"red_pin": pins["led_red"], "green_pin": pins["led_green"],
                "blue_pin": pins["led_blue"], "led_pin": pins["led_green"],
                "buzzer_pin": pins["buzzer"], "button_pin": pins["silence_button"]}
    return [f"IndicatorConfig.{k} = {getattr(ind, k)}, pin map says {v}"
            for k, v in expected.items() if getattr(ind, k) != v]


def test_default_configuration_matches_the_pinmap(pinmap: PinMap) -> None:
    assert {p.name: p.gpio for p in pinmap.gpio_pins()} == DEFAULT_PINS
    assert default_config_problems(pinmap, IndicatorConfig()) == []
    # the single-LED variant's LED sits at the green position
    assert IndicatorConfig().led_pin == IndicatorConfig().green_pin
    ind = IndicatorConfig()
    used = {"red": ind.red_pin, "green": ind.green_pin, "blue": ind.blue_pin,
            "buzzer": ind.buzzer_pin, "button": ind.button_pin,
            **{k: v for k, v in DEFAULT_PINS.items() if k.startswith("modem_")}}
    assert pin_conflicts(used) == []


def test_default_config_check_catches_a_drifted_default(pinmap: PinMap) -> None:
    drifted = IndicatorConfig(buzzer_pin=12)
    assert default_config_problems(pinmap, drifted) == [
        "IndicatorConfig.buzzer_pin = 12, pin map says 18"]


def test_line_defaults_are_the_nominal_front_end() -> None:
    cfg = LineConfig()
    assert cfg.zero_code == line_mod.NOMINAL_ZERO_CODE == 511.5
    assert cfg.volts_per_count == pytest.approx(line_mod.NOMINAL_VOLTS_PER_COUNT, abs=1e-6)
    assert line_mod.REFERENCE_CODE == 512


def test_hardware_readme_numbers_are_the_code_constants() -> None:
    text = HW_README.read_text()
    g = line_mod.FRONTEND_GAIN
    assert f"{g:.7f}" in text  # 0.0060521
    assert f"{line_mod.NOMINAL_VOLTS_PER_COUNT:.5f} V" in text  # 0.48408 V
    assert "79.8 Hz" in text and "60.4 kΩ" in text and "2 \u00d7 4.99 MΩ" in text
    # every row of the worked-numbers table: line volts -> ADC volts -> code
    minus = "\u2212"  # the README writes negative volts with a real minus sign
    rows = re.findall(rf"\| (?:\w[\w -]* )?([+{minus}-]?\d+) V \| (\d\.\d{{4}}) V \| (\d+) \|",
                      text)
    assert len(rows) >= 6
    for volts, v_adc, code in rows:
        v = float(volts.replace(minus, "-"))
        expected = line_mod.ADC_MID_V + g * v
        assert f"{expected:.4f}" == v_adc, volts
        assert int(1024 * expected / line_mod.ADC_VREF_V) == int(code), volts


def test_bom_is_well_formed_and_has_the_designed_parts() -> None:
    with BOM.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(len(r) == 7 and None not in r for r in rows)
    refs = [ref for r in rows for ref in r["ref"].split()]
    assert len(refs) == len(set(refs)), "a reference designator appears twice"
    assert all(int(r["qty"]) == len(r["ref"].split()) for r in rows)
    parts = " ".join(r["example_part"] for r in rows)
    for part in ("MCP3008", "ISO7741", "NXE1S0505MC", "REF3030", "MCP6002", "P3100SC",
                 "TRF600-150", "CAT24C32", "2N7002"):
        assert part in parts, part


# --------------------------------------------------------------------------- the overlay


def fdtget(blob: Path, node: str, prop: str, kind: str = "i") -> list[str]:
    return run("fdtget", "-t", kind, blob, node, prop).split()


def overlay_pin_problems(dtbo: Path, pinmap: PinMap) -> list[str]:
    node = "/fragment@4/__overlay__/probe_board_pins"
    pins = [int(x) for x in fdtget(dtbo, node, "brcm,pins")]
    functions = [int(x) for x in fdtget(dtbo, node, "brcm,function")]
    pulls = [int(x) for x in fdtget(dtbo, node, "brcm,pull")]
    problems = []
    want = {p.gpio: p for p in pinmap.gpio_pins()}
    if sorted(pins) != sorted(want):
        problems.append(f"overlay pins {sorted(pins)} != pin map GPIO pins {sorted(want)}")
    for gpio, function, pull in zip(pins, functions, pulls, strict=True):
        spec = want.get(gpio)
        if spec is None:
            continue
        if function != FUNCTION_CODE[spec.function]:
            problems.append(f"GPIO{gpio}: overlay function {function}, pin map {spec.function}")
        if pull != PULL_CODE[spec.pull or "none"]:
            problems.append(f"GPIO{gpio}: overlay pull {pull}, pin map {spec.pull}")
    cs = [int(x) for x in fdtget(dtbo, "/fragment@0/__overlay__", "brcm,pins")]
    if cs != [pinmap.by_name()["spi0_ce0"].gpio]:
        problems.append(f"overlay chip selects {cs}")
    return problems


@needs_dtc
def test_overlay_compiles_with_dtc_and_matches_the_pinmap(dtbo: Path, pinmap: PinMap) -> None:
    assert overlay_pin_problems(dtbo, pinmap) == []
    fixups = run("fdtget", "-p", dtbo, "/__fixups__").split()
    assert sorted(fixups) == ["gpio", "spi0", "spi0_cs_pins", "spidev0", "spidev1"]
    assert fdtget(dtbo, "/", "compatible", "s") == ["brcm,bcm2835"]


@needs_dtc
def test_overlay_pin_check_catches_a_tampered_overlay(tmp_path: Path, pinmap: PinMap) -> None:
    dts = OVERLAY.read_text().replace("<5 6 18 22 23 24 26 27>", "<5 6 17 22 23 24 26 27>")
    dts = dts.replace("<0 0  0  0  0  0  1  2>", "<0 0  0  0  0  0  2  2>")
    src, out = tmp_path / "bad.dts", tmp_path / "bad.dtbo"
    src.write_text(dts)
    run("dtc", "-@", "-q", "-I", "dts", "-O", "dtb", "-o", out, src)
    found = overlay_pin_problems(out, pinmap)
    assert any("overlay pins" in p for p in found)
    assert "GPIO26: overlay pull 2, pin map down" in found


@needs_dtc
def test_overlay_applied_to_the_base_tree_keeps_spidev0_and_binds_no_mcp3008(
        tmp_path: Path, dtbo: Path) -> None:
    base_dts, base, merged = tmp_path / "base.dts", tmp_path / "base.dtb", tmp_path / "m.dtb"
    base_dts.write_text(BASE_DTS)
    run("dtc", "-@", "-q", "-I", "dts", "-O", "dtb", "-o", base, base_dts)
    run("fdtoverlay", "-i", base, "-o", merged, dtbo)

    spi = "/soc/spi@7e204000"
    assert fdtget(merged, spi, "status", "s") == ["okay"]
    assert fdtget(merged, f"{spi}/spidev@0", "status", "s") == ["okay"]
    assert fdtget(merged, f"{spi}/spidev@0", "compatible", "s") == ["spidev"]
    assert fdtget(merged, f"{spi}/spidev@1", "status", "s") == ["disabled"]
    assert fdtget(merged, f"{spi}/spidev@0", "spi-max-frequency") == ["1000000"]
    # one chip select left: <&gpio 8 1>
    gpio_phandle = fdtget(merged, "/soc/gpio@7e200000", "phandle")[0]
    assert fdtget(merged, spi, "cs-gpios") == [gpio_phandle, "8", "1"]
    assert fdtget(merged, "/soc/gpio@7e200000/spi0_cs_pins", "brcm,pins") == ["8"]
    # spidev0.0 carries the board's pin group
    group = fdtget(merged, f"{spi}/spidev@0", "pinctrl-0")[0]
    assert fdtget(merged, "/soc/gpio@7e200000/probe_board_pins", "phandle") == [group]
    # nothing anywhere binds the kernel's mcp320x driver
    tree = run("dtc", "-q", "-I", "dtb", "-O", "dts", merged)
    assert "mcp3" not in tree.lower()


@needs_dtc
def test_overlay_documents_wiring_build_and_check() -> None:
    head = OVERLAY.read_text().split("*/", 1)[0]
    assert "dtc -@ -I dts -O dtb -o probe-board.dtbo probe-board-overlay.dts" in head
    assert "/dev/spidev0.0" in head and "vclog" in head and "Wiring" in head


# --------------------------------------------------------------------------- HAT EEPROM


def eeprom_gpio_table(text: str) -> dict[int, tuple[str, str]]:
    table: dict[int, tuple[str, str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split()
        if line and line[0] == "setgpio":
            gpio, function, pull = int(line[1]), line[2], line[3]
            assert gpio not in table, f"setgpio {gpio} twice"
            table[gpio] = (function, pull)
    return table


def eeprom_problems(text: str, pinmap: PinMap) -> list[str]:
    table = eeprom_gpio_table(text)
    problems = []
    want: dict[int, tuple[str, str]] = {}
    for p in pinmap.pins:
        if p.function == "id_eeprom":
            continue
        if p.function == "alt0":
            want[p.gpio] = ("ALT0", "DEFAULT")
        else:
            want[p.gpio] = (p.function.upper(), (p.pull or "none").upper())
    for gpio in sorted(set(table) | set(want)):
        if table.get(gpio) != want.get(gpio):
            problems.append(f"GPIO{gpio}: EEPROM {table.get(gpio)}, pin map {want.get(gpio)}")
    return problems


def test_eeprom_settings_gpio_table_matches_the_pinmap(pinmap: PinMap) -> None:
    text = EEPROM.read_text()
    assert eeprom_problems(text, pinmap) == []
    table = eeprom_gpio_table(text)
    assert not set(table) & {0, 1}, "GPIO0/1 belong to the ID EEPROM and cannot be set"
    assert not set(table) & set(pinmap.reserved)
    assert re.search(r'^product "hotline-probe line board"$', text, re.M)
    assert re.search(rf"^product_ver 0x000{ord(pinmap.revision) - ord('A') + 1}$", text, re.M)


def test_eeprom_check_catches_a_wrong_pull(pinmap: PinMap) -> None:
    text = EEPROM.read_text().replace("setgpio  27    INPUT     UP",
                                      "setgpio  27    INPUT     DOWN")
    assert eeprom_problems(text, pinmap) == [
        "GPIO27: EEPROM ('INPUT', 'DOWN'), pin map ('INPUT', 'UP')"]


# --------------------------------------------------------------------------- config.txt


def config_txt_problems(text: str, pinmap: PinMap) -> list[str]:
    lines = [raw.split("#", 1)[0].strip() for raw in text.splitlines()]
    lines = [x for x in lines if x]
    problems = [f"missing {need!r}" for need in
                ("dtparam=spi=on", "dtoverlay=probe-board", "enable_uart=1",
                 "dtoverlay=disable-bt", "dtparam=watchdog=on") if need not in lines]
    if any(x.startswith("dtoverlay=mcp3") for x in lines):
        problems.append("dtoverlay=mcp3008 binds the kernel driver and removes spidev0.0")
    states: dict[int, str] = {}
    for x in lines:
        m = re.fullmatch(r"gpio=([\d,-]+)=(.+)", x)
        if not m:
            continue
        for part in m[1].split(","):
            low, _, high = part.partition("-")
            for gpio in range(int(low), int(high or low) + 1):
                states[gpio] = m[2]
    want = {}
    for p in pinmap.gpio_pins():
        if p.function == "output":
            want[p.gpio] = "op,dl" if p.initial == "low" else "op,dh"
        else:
            want[p.gpio] = {"up": "ip,pu", "down": "ip,pd", "none": "ip,pn"}[p.pull or "none"]
    for gpio in sorted(set(states) | set(want)):
        if states.get(gpio) != want.get(gpio):
            problems.append(f"GPIO{gpio}: config.txt {states.get(gpio)}, pin map "
                            f"{want.get(gpio)}")
    return problems


def test_config_txt_matches_the_pinmap(pinmap: PinMap) -> None:
    assert config_txt_problems(CONFIG_TXT.read_text(), pinmap) == []


def test_config_txt_check_catches_the_mcp3008_overlay_and_a_missing_pin(pinmap: PinMap) -> None:
    text = CONFIG_TXT.read_text().replace("gpio=27=ip,pu", "dtoverlay=mcp3008")
    found = config_txt_problems(text, pinmap)
    assert "dtoverlay=mcp3008 binds the kernel driver and removes spidev0.0" in found
    assert "GPIO27: config.txt None, pin map ip,pu" in found
