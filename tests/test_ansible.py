"""Fleet deployment (ansible/): lint, syntax, and the roles applied for real.

The probe, broker and ops roles run against three fresh Debian bookworm roots made with
debootstrap (``community.general.chroot``), through ``site.yml`` and the example inventory (the
setup of ``make demo``) with a small overlay inventory that points the hosts at the roots.  The
play runs twice; the second run must change nothing.  Then the deployed files are checked where
they landed: the probe's configuration with ``probe check-config`` and the ops service's with
``probe ops check-config`` inside their roots, the broker by starting mosquitto inside its root
and connecting with certificates the pki role issued.

Needs root (chroot, debootstrap).  Cached per machine (tests/ansible_support).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import ansible_support as support

ANSIBLE = support.ANSIBLE_DIR
VAULT_PASSWORD = ANSIBLE / "inventory/example/vault-password.txt"
PLAYBOOKS = sorted(p.name for p in ANSIBLE.glob("*.yml") if p.name != "requirements.yml")
TOPIC = "hotline-probe/v1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="applies the roles to a debootstrap root: needs root (chroot)"),
]


def ansible_env(collections: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(collections),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCAL_TEMP": str(support.CACHE / "tmp"),
        "ANSIBLE_HOME": str(support.CACHE / "home"),
        "PATH": f"{support.VENV_BIN}:{os.environ.get('PATH', '')}",
    }


@pytest.fixture(scope="module")
def collections() -> Path:
    return support.collections_path()


# --------------------------------------------------------------------------- static checks


def test_yamllint_is_clean() -> None:
    proc = subprocess.run([str(support.VENV_BIN / "yamllint"), "--strict", "."], cwd=ANSIBLE,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile_is_clean(collections: Path) -> None:
    proc = subprocess.run(
        [str(support.VENV_BIN / "ansible-lint"), "--offline", "--profile", "production",
         "--nocolor"],
        cwd=ANSIBLE, capture_output=True, text=True, env=ansible_env(collections))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_syntax(playbook: str, collections: Path) -> None:
    proc = subprocess.run(
        [str(support.VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory/example",
         "--vault-password-file", str(VAULT_PASSWORD), playbook],
        cwd=ANSIBLE, capture_output=True, text=True, env=ansible_env(collections))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_issue_playbook_exists() -> None:
    assert {"site.yml", "probes.yml", "broker.yml", "pjsua2-wheel.yml"} <= set(PLAYBOOKS)


# --------------------------------------------------------------------------- the deployment


@dataclass
class Deployment:
    probe_root: Path
    broker_root: Path
    ops_root: Path
    pki: Path
    broker_port: int
    recaps: list[dict[str, dict[str, int]]]
    logs: list[str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot_source(dest: Path) -> Path:
    """A copy of the package sources: both runs build the same wheel while others edit."""
    dest.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(support.REPO / name, dest / name)
    shutil.copytree(support.REPO / "probe", dest / "probe",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def recap(output: str) -> dict[str, dict[str, int]]:
    hosts = {}
    for match in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)",
                                                                    match.group(2))}
    return hosts


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory,
               collections: Path) -> Iterator[Deployment]:
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is missing: `make setup` installs it (APT_PACKAGES)")
    tmp = tmp_path_factory.mktemp("ansible")
    house = support.wheelhouse()
    probe_root = support.unpack_root(tmp / "probe-root")
    broker_root = support.unpack_root(tmp / "broker-root")
    ops_root = support.unpack_root(tmp / "ops-root")
    source = snapshot_source(tmp / "src")
    port = free_port()
    overlay = tmp / "ci.yml"
    overlay.write_text(f"""---
# tests/test_ansible.py: the example fleet's hosts are debootstrap roots on this machine.
all:
  children:
    probes:
      hosts:
        demo-probe:
          ansible_connection: community.general.chroot
          ansible_host: {probe_root}
          ansible_become: false
          ansible_python_interpreter: /usr/bin/python3
          probe_wheelhouse: {house}
    brokers:
      hosts:
        central-broker:
          ansible_connection: community.general.chroot
          ansible_host: {broker_root}
          ansible_become: false
          ansible_python_interpreter: /usr/bin/python3
          broker_port: {port}
          broker_ip_addresses: [127.0.0.1]
    ops:
      hosts:
        central-ops:
          ansible_connection: community.general.chroot
          ansible_host: {ops_root}
          ansible_become: false
          ansible_python_interpreter: /usr/bin/python3
          hotline_probe_ops_wheelhouse: {house}
""")
    pki = tmp / "pki"
    cmd = [str(support.VENV_BIN / "ansible-playbook"), "site.yml",
           "-i", "inventory/example", "-i", str(overlay),
           "--vault-password-file", str(VAULT_PASSWORD),
           "-e", f"pki_dir={pki}", "-e", f"probe_pki_dir={pki}", "-e", f"broker_pki_dir={pki}",
           "-e", f"hotline_build_dir={tmp / 'build'}", "-e", f"probe_source_dir={source}"]
    recaps, logs = [], []
    try:
        for _ in range(2):
            proc = subprocess.run(cmd, cwd=ANSIBLE, capture_output=True, text=True,
                                  env=ansible_env(collections))
            logs.append(proc.stdout + proc.stderr)
            (support.CACHE / f"last-run-{len(logs)}.log").write_text(logs[-1])
            assert proc.returncode == 0, logs[-1][-12000:]
            recaps.append(recap(proc.stdout))
        yield Deployment(probe_root, broker_root, ops_root, pki, port, recaps, logs)
    finally:
        for root in (probe_root, broker_root, ops_root):
            support.keep_apt_archives(root)
        shutil.rmtree(tmp, ignore_errors=True)


def changed_tasks(log: str, host: str) -> list[str]:
    """The names of the tasks that reported a change for ``host`` in an ansible-playbook log."""
    names, task = [], None
    for line in log.splitlines():
        if line.startswith("TASK ["):
            task = line[6:line.rindex("]")]
        elif line.startswith(f"changed: [{host}]") and task not in names:
            names.append(task)
    return names


def chroot(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), *args], capture_output=True, text=True)


def test_both_runs_succeed_and_the_second_changes_nothing(deployment: Deployment) -> None:
    first, second = deployment.recaps
    assert {"demo-probe", "central-broker", "central-ops", "localhost"} <= set(first)
    for host in ("demo-probe", "central-broker", "central-ops"):
        assert first[host]["changed"] > 0, host
    for host, counts in second.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, host
        assert counts["changed"] == 0, (
            f"{host} changed on the second run: {changed_tasks(deployment.logs[1], host)}")


# --------------------------------------------------------------------------- the probe


def test_rendered_probe_configuration_passes_check_config(deployment: Deployment) -> None:
    proc = chroot(deployment.probe_root, "/opt/hotline-probe/.venv/bin/probe", "check-config",
                  "-c", "/etc/hotline-probe/probe.toml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo-probe" in proc.stdout


def installed_versions(root: Path, venv: str) -> dict[str, str]:
    proc = chroot(root, f"{venv}/bin/python", "-m", "pip", "list", "--format=json")
    assert proc.returncode == 0, proc.stderr
    return {canonical(p["name"]): p["version"] for p in json.loads(proc.stdout)}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.parametrize(("host", "venv", "lock"), [
    ("probe_root", "/opt/hotline-probe/.venv", "probe.txt"),
    ("ops_root", "/opt/hotline-probe-ops/.venv", "ops.txt")])
def test_every_host_runs_the_pinned_versions(deployment: Deployment, host: str, venv: str,
                                             lock: str) -> None:
    """Fleet builds are reproducible: the roles install with requirements/*.txt as pip
    constraints, so each dependency is the version the lock names, on every host."""
    from packaging.requirements import Requirement

    installed = installed_versions(getattr(deployment, host), venv)
    pinned = [Requirement(line) for line in (support.REPO / "requirements" / lock).read_text()
              .splitlines() if line.strip() and not line.lstrip().startswith("#")]
    wanted = {canonical(r.name): r.specifier for r in pinned
              if r.marker is None or r.marker.evaluate({"python_full_version": "3.11.2"})}
    assert len(wanted) > 20
    wrong = {name: (installed.get(name), str(spec)) for name, spec in wanted.items()
             if installed.get(name) is None or not spec.contains(installed[name])}
    assert not wrong, f"{host}: not the pinned versions: {wrong}"


def test_probe_configuration_is_the_demo_setup(deployment: Deployment) -> None:
    from probe.demo.script import HOTLINES, MOBILE

    config = tomllib.loads(
        (deployment.probe_root / "etc/hotline-probe/probe.toml").read_text())
    assert config["probe"]["id"] == "demo-probe"
    assert [t["name"] for t in config["targets"]] == [*HOTLINES, MOBILE[0]]
    assert config["mqtt"]["port"] == deployment.broker_port
    assert config["mqtt"]["tls"] == {"ca_file": "/etc/hotline-probe/tls/ca.crt",
                                     "cert_file": "/etc/hotline-probe/tls/probe.crt",
                                     "key_file": "/etc/hotline-probe/tls/probe.key"}
    assert config["sip"]["password_file"] == "/etc/hotline-probe/secrets/sip.pw"
    assert config["modems"]["gsm"]["port"] == "/dev/hotline-probe/gsm-at"


def owner_and_mode(path: Path, root: Path) -> tuple[str, str, int]:
    st = path.stat()
    users = {line.split(":")[2]: line.split(":")[0]
             for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[2]: line.split(":")[0]
              for line in (root / "etc/group").read_text().splitlines()}
    return users[str(st.st_uid)], groups[str(st.st_gid)], st.st_mode & 0o7777


def test_probe_secrets_are_private(deployment: Deployment) -> None:
    root = deployment.probe_root
    for name in ("etc/hotline-probe/tls/probe.key", "etc/hotline-probe/secrets/sip.pw"):
        assert owner_and_mode(root / name, root) == ("hotline-probe", "hotline-probe", 0o600)
    assert (root / "etc/hotline-probe/secrets/sip.pw").read_text() == "demo-sip-password\n"
    assert owner_and_mode(root / "etc/hotline-probe/probe.toml", root) == (
        "root", "hotline-probe", 0o640)


def test_probe_user_is_in_the_hardware_groups(deployment: Deployment) -> None:
    groups = (deployment.probe_root / "etc/group").read_text()
    for group in ("dialout", "gpio", "spi", "audio"):
        members = re.search(rf"^{group}:[^:]*:\d+:(.*)$", groups, re.M)
        assert members and "hotline-probe" in members.group(1).split(","), group


def test_probe_unit_is_the_shipped_one_and_enabled(deployment: Deployment) -> None:
    root = deployment.probe_root
    unit = root / "etc/systemd/system/hotline-probe.service"
    assert unit.read_bytes() == (support.REPO / "deploy/systemd/hotline-probe.service").read_bytes()
    assert (root / "etc/systemd/system/multi-user.target.wants/hotline-probe.service").is_symlink()
    # No boot-time wait for NTP: with it blocked, time-sync.target would never be reached.
    wants = root / "etc/systemd/system/sysinit.target.wants/systemd-time-wait-sync.service"
    assert not wants.exists()
    assert (root / "etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service"
            ).is_symlink()
    proc = chroot(root, "systemd-analyze", "verify", "/etc/systemd/system/hotline-probe.service")
    assert "hotline-probe.service" not in proc.stderr, proc.stderr


def test_probe_udev_rule_names_the_modem_and_keeps_modemmanager_away(
        deployment: Deployment) -> None:
    rules = (deployment.probe_root / "etc/udev/rules.d/70-hotline-probe-modems.rules").read_text()
    assert ('ENV{ID_VENDOR_ID}=="1e0e", ENV{ID_MODEL_ID}=="9001", ENV{ID_MM_DEVICE_IGNORE}="1"'
            in rules)
    assert 'ENV{ID_USB_INTERFACE_NUM}=="02", SYMLINK+="hotline-probe/gsm-at"' in rules
    assert 'ENV{ID_USB_INTERFACE_NUM}=="04", SYMLINK+="hotline-probe/gsm-audio"' in rules


def test_probe_boot_configuration_and_overlay(deployment: Deployment,
                                              tmp_path: Path) -> None:
    boot = deployment.probe_root / "boot/firmware"
    fragment = (support.REPO / "firmware/config.txt").read_text().strip()
    assert fragment in (boot / "config.txt").read_text()
    dtbo = tmp_path / "probe-board.dtbo"
    subprocess.run(["dtc", "-@", "-q", "-I", "dts", "-O", "dtb", "-o", str(dtbo),
                    str(support.REPO / "firmware/probe-board-overlay.dts")], check=True)
    assert (boot / "overlays/probe-board.dtbo").read_bytes() == dtbo.read_bytes()


def test_probe_appliance_settings(deployment: Deployment) -> None:
    etc = deployment.probe_root / "etc/systemd"
    watchdog = (etc / "system.conf.d/hotline-probe-watchdog.conf").read_text()
    assert "RuntimeWatchdogSec=15" in watchdog
    journald = (etc / "journald.conf.d/hotline-probe.conf").read_text()
    assert "Storage=volatile" in journald and "RuntimeMaxUse=32M" in journald


# --------------------------------------------------------------------------- the ops service

OPS_CONFIG = "/etc/hotline-probe/ops.toml"


def test_rendered_ops_configuration_passes_check_config(deployment: Deployment) -> None:
    """With the secrets of ops.env in the environment, as the unit starts it."""
    proc = chroot(deployment.ops_root, "/bin/sh", "-c",
                  "set -a; . /etc/hotline-probe/ops.env; exec "
                  f"/opt/hotline-probe-ops/.venv/bin/probe ops check-config -c {OPS_CONFIG}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "central-ops" in proc.stdout


def test_ops_configuration_is_the_inventory(deployment: Deployment) -> None:
    config = tomllib.loads((deployment.ops_root / OPS_CONFIG.lstrip("/")).read_text())
    assert config["ops"]["instance"] == "central-ops"
    assert config["ops"]["state_dir"] == "/var/lib/hotline-probe-ops"
    assert config["database"] == {
        "url": "postgresql+psycopg://hotline-probe-ops@/hotline_probe_ops?host=/run/postgresql"}
    assert config["mqtt"]["host"] == "mqtt.hotline.example"
    assert config["mqtt"]["port"] == deployment.broker_port
    assert config["mqtt"]["client_id"] == "hotline-probe-ops"
    assert config["mqtt"]["tls"] == {"ca_file": "/etc/hotline-probe/ops-tls/ca.crt",
                                     "cert_file": "/etc/hotline-probe/ops-tls/ops.crt",
                                     "key_file": "/etc/hotline-probe/ops-tls/ops.key"}
    assert config["http"] == {"listen": "127.0.0.1", "port": 8080,
                              "trusted_proxies": ["127.0.0.1"]}
    assert config["correlation"] == {"round_s": 300, "min_sites": 1}
    assert [r["name"] for r in config["receivers"]] == ["oncall-chat", "hotline-team"]
    assert config["receivers"][1]["password_env"] == "HOTLINE_PROBE_OPS_SMTP_PASSWORD"


def test_ops_secrets_are_private(deployment: Deployment) -> None:
    root = deployment.ops_root
    env = root / "etc/hotline-probe/ops.env"
    assert owner_and_mode(env, root) == ("root", "root", 0o600)
    assert 'HOTLINE_PROBE_OPS_SMTP_PASSWORD="demo-smtp-password"' in env.read_text().splitlines()
    assert owner_and_mode(root / "etc/hotline-probe/ops-tls/ops.key", root) == (
        "hotline-probe-ops", "hotline-probe-ops", 0o600)
    assert owner_and_mode(root / OPS_CONFIG.lstrip("/"), root) == (
        "root", "hotline-probe-ops", 0o640)
    assert "demo-smtp-password" not in (root / OPS_CONFIG.lstrip("/")).read_text()


def test_ops_unit_is_the_shipped_one_and_enabled(deployment: Deployment) -> None:
    root = deployment.ops_root
    unit = root / "etc/systemd/system/hotline-probe-ops.service"
    assert unit.read_bytes() == (
        support.REPO / "deploy/systemd/hotline-probe-ops.service").read_bytes()
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "hotline-probe-ops.service").is_symlink()
    assert (root / "usr/lib/postgresql").is_dir()  # hotline_probe_ops_manage_postgresql
    proc = chroot(root, "systemd-analyze", "verify",
                  "/etc/systemd/system/hotline-probe-ops.service")
    assert "hotline-probe-ops.service" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- the broker


def significant(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_broker_files_are_the_shipped_ones(deployment: Deployment) -> None:
    """One source of truth: the role's templates render deploy/mosquitto/ (but the port)."""
    root = deployment.broker_root
    shipped_conf = significant((support.REPO / "deploy/mosquitto/hotline-probe.conf").read_text())
    rendered = significant((root / "etc/mosquitto/conf.d/hotline-probe.conf").read_text())
    assert rendered == [line.replace("listener 8883", f"listener {deployment.broker_port}")
                        for line in shipped_conf]
    assert significant((root / "etc/mosquitto/hotline-probe.acl").read_text()) == significant(
        (support.REPO / "deploy/mosquitto/hotline-probe.acl").read_text())
    assert owner_and_mode(root / "etc/mosquitto/certs/broker.key", root) == (
        "root", "mosquitto", 0o640)


@pytest.fixture(scope="module")
def broker(deployment: Deployment) -> Iterator[Deployment]:
    """mosquitto started inside the broker's root on its deployed configuration."""
    root = deployment.broker_root
    # What mosquitto.service's ExecStartPre does.
    (root / "run/mosquitto").mkdir(parents=True, exist_ok=True)
    chroot(root, "chown", "mosquitto:", "/run/mosquitto")
    proc = subprocess.Popen(["chroot", str(root), "/usr/sbin/mosquitto", "-c",
                             "/etc/mosquitto/mosquitto.conf"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                log = (root / "var/log/mosquitto/mosquitto.log").read_text(errors="replace")
                pytest.fail(f"mosquitto exited {proc.returncode}: {proc.stdout.read()}\n{log}")
            try:
                socket.create_connection(("127.0.0.1", deployment.broker_port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("mosquitto does not listen")
                time.sleep(0.05)
        yield deployment
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """A paho MQTT 5 client with a certificate from the pki role; records publish results."""

    def __init__(self, pki: Path, cn: str, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.mqtt = mqtt
        self.connected = threading.Event()
        self.acks: dict[int, int] = {}
        self.acked = threading.Condition()
        self.messages: list[tuple[str, bytes]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cn,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / f"certs/{cn}.crt"),
                            keyfile=str(pki / f"certs/{cn}.key"))
        self.client.on_connect = lambda c, u, f, rc, p: rc == 0 and self.connected.set()
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), f"{cn} could not connect"

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.acked:
            self.acks[mid] = reason_code.value
            self.acked.notify_all()

    def publish(self, topic: str) -> int:
        info = self.client.publish(topic, b"{}", qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, 10), "no PUBACK"
            return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_broker_accepts_pki_certificates_and_denies_cross_probe_publishing(
        broker: Deployment) -> None:
    ops = Client(broker.pki, "ops-dashboard", broker.broker_port)
    probe = Client(broker.pki, "demo-probe", broker.broker_port)
    try:
        ops.client.subscribe(f"{TOPIC}/#", qos=1)
        time.sleep(0.3)
        assert probe.publish(f"{TOPIC}/demo-probe/result") == 0
        assert probe.publish(f"{TOPIC}/branch-017/result") == 0x87  # another probe's tree
        assert probe.publish(f"{TOPIC}/demo-probe/cmd/reboot") == 0x87  # its own commands
        assert ops.publish(f"{TOPIC}/demo-probe/status") == 0x87  # ops only write commands
        assert ops.publish(f"{TOPIC}/demo-probe/cmd/reboot") == 0
        deadline = time.monotonic() + 5
        while len(ops.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(t for t, _ in ops.messages) == [f"{TOPIC}/demo-probe/cmd/reboot",
                                                      f"{TOPIC}/demo-probe/result"]
    finally:
        probe.close()
        ops.close()


def test_broker_gives_the_ops_service_results_and_recordings(broker: Deployment) -> None:
    """The ops service's certificate (CN hotline-probe-ops) and its shared subscription."""
    ops = Client(broker.pki, "hotline-probe-ops", broker.broker_port)
    probe = Client(broker.pki, "demo-probe", broker.broker_port)
    try:
        ops.client.subscribe(f"$share/ops/{TOPIC}/+/result", qos=1)
        ops.client.subscribe(f"$share/ops/{TOPIC}/+/recording", qos=1)
        time.sleep(0.3)
        assert probe.publish(f"{TOPIC}/demo-probe/result") == 0
        assert probe.publish(f"{TOPIC}/demo-probe/recording") == 0
        assert probe.publish(f"{TOPIC}/branch-017/recording") == 0x87
        assert ops.publish(f"{TOPIC}/demo-probe/result") == 0x87  # ops only write commands
        # Allowed; 0x10 "no matching subscribers": nobody listens to commands here.
        assert ops.publish(f"{TOPIC}/demo-probe/cmd/reboot") == 0x10
        deadline = time.monotonic() + 5
        while len(ops.messages) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(t for t, _ in ops.messages) == [f"{TOPIC}/demo-probe/recording",
                                                      f"{TOPIC}/demo-probe/result"]
    finally:
        probe.close()
        ops.close()
