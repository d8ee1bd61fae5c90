"""Registration with a registrar (SIPp, digest-challenged), then a call through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probe.results.document import validate_result
from probe.sim import probe_config
from probe.sim.hotline import HotlineBehaviour, SippHotline, SippRegistrar


def call_with_registrar(tmp_path: Path, password: str) -> tuple[dict, int, int]:
    with SippRegistrar("probe", "right-secret") as registrar, \
            SippHotline(HotlineBehaviour(pdd_ms=100, ring_ms=100)) as hotline:
        config = probe_config.write_config(
            tmp_path, probe_id="p-reg",
            sip={"registrar": registrar.registrar_uri, "username": "probe",
                 "password": password, "register_timeout_s": 5},
            targets=[probe_config.sip_target("support", hotline.uri, hold_s=0.5)])
        proc = subprocess.run([sys.executable, "-m", "probe", "call", "support", "-c",
                               str(config), "--json"], capture_output=True, text=True,
                              timeout=60)
        assert proc.stdout, proc.stderr[-2000:]
        doc = json.loads(proc.stdout)
        validate_result(doc)
        return doc, registrar.wait(10), hotline.wait(10)


@pytest.mark.slow
def test_registers_with_digest_then_calls_and_unregisters(tmp_path: Path) -> None:
    doc, registrar_rc, hotline_rc = call_with_registrar(tmp_path, "right-secret")
    # SIPp's registrar scenario passes only if the probe answered the challenge correctly,
    # was accepted, and removed its binding when it stopped.
    assert (registrar_rc, hotline_rc) == (0, 0)
    assert doc["sip"]["registration"] == {"code": 200, "reason": "OK"}
    assert doc["outcome"] == "answered"
    assert doc["diagnosis"]["verdict"] == "ok"


@pytest.mark.slow
def test_refused_registration_is_reported_as_the_probes_configuration(tmp_path: Path) -> None:
    doc, registrar_rc, _ = call_with_registrar(tmp_path, "wrong-secret")
    assert registrar_rc == 0
    assert doc["sip"]["registration"]["code"] == 403
    causes = {c["code"]: c for c in doc["diagnosis"]["causes"]}
    assert causes["sip.not_registered"]["actor"] == "admin"
    assert causes["sip.not_registered"]["scope"] == "probe"
