"""Helpers for tests/test_ansible.py: the Ansible collections, a cached debootstrap root, a
wheelhouse for the probe's virtual environment.

Everything expensive is cached per machine under ``$HOTLINE_PROBE_CACHE`` (default
``~/.cache/hotline-probe/ansible``), outside the clone so that every fresh CI clone on the same
machine finds it warm, keyed by what produced it, so a warm run only unpacks a tarball and
copies files:

``collections/``         community.general, community.crypto, ansible.posix, unzipped from the
                          PyPI ``ansible`` wheel (Galaxy is not reachable from CI)
``bookworm-amd64.tar.zst`` ``debootstrap --variant=minbase`` root, mirror read from apt sources
``apt-archives/``        .deb files the roles installed last time (seeded into each fresh root)
``wheelhouse/``          the probe's dependencies and its ``ops`` extra's as wheels (the probe
                          and ops roles install offline from it)

``python -m tests.ansible_support collections`` prepares the collections alone (``make
ansible-lint`` uses it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
CACHE = Path(os.environ.get("HOTLINE_PROBE_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "hotline-probe" / "ansible")
VENV_BIN = Path(sys.executable).parent

# The Ansible community package whose wheel carries the collections we need (ansible-core 2.19).
ANSIBLE_PACKAGE = "ansible==12.3.0"
COLLECTIONS = ("community/general", "community/crypto", "ansible/posix")

SUITE = "bookworm"
DEBOOTSTRAP_INCLUDE = ("python3", "python3-apt", "systemd", "udev", "ca-certificates")


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``, raising with its output on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-8000:]}\n--- stderr\n{proc.stderr[-8000:]}"
        )
    return proc


# --------------------------------------------------------------------------- collections


def collections_path() -> Path:
    """A collections path holding the collections the playbooks use (cached)."""
    root = CACHE / "collections"
    marker = root / f".from-{ANSIBLE_PACKAGE}"
    if marker.exists():
        return root
    download = CACHE / "download"
    download.mkdir(parents=True, exist_ok=True)
    run([str(VENV_BIN / "pip"), "download", "-q", "--no-deps", ANSIBLE_PACKAGE,
         "-d", str(download)])
    version = ANSIBLE_PACKAGE.split("==")[1]
    wheel = download / f"ansible-{version}-py3-none-any.whl"
    shutil.rmtree(root, ignore_errors=True)
    target = root / "ansible_collections"
    target.mkdir(parents=True)
    prefixes = tuple(f"ansible_collections/{c}/" for c in COLLECTIONS)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith(prefixes):
                zf.extract(name, root)
    marker.touch()
    wheel.unlink()
    return root


# --------------------------------------------------------------------------- Debian mirror


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive URI this machine's apt uses (one-line and deb822 sources).

    Security and updates archives are skipped: debootstrap needs the main archive."""
    candidates: list[tuple[str, str]] = []  # (uri, suite)
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for file in files:
        if not file.is_file():
            continue
        for line in file.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            fields = re.sub(r"\[[^]]*\]", " ", line).split()
            if len(fields) >= 3 and fields[0] == "deb":
                candidates.append((fields[1], fields[2]))
    for file in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", file.read_text()):
            keys: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                keys[key.strip().lower()] = value.strip()
            if "deb" not in keys.get("types", "").split():
                continue
            if keys.get("enabled", "yes").lower() == "no":
                continue
            for uri in keys.get("uris", "").split():
                for suite in keys.get("suites", "").split():
                    candidates.append((uri, suite))
    for uri, suite in candidates:
        if "security" in uri or "security" in suite or "-" in suite:
            continue
        return uri.rstrip("/")
    raise RuntimeError(f"no Debian archive found in {apt_dir}/sources.list(.d)")


# --------------------------------------------------------------------------- the root


def rootfs_tarball() -> Path:
    """A zstd tarball of a minimal bookworm root made with debootstrap (cached)."""
    tarball = CACHE / f"{SUITE}-amd64.tar.zst"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    build = CACHE / "debootstrap.tmp"
    shutil.rmtree(build, ignore_errors=True)
    run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBOOTSTRAP_INCLUDE)}",
         SUITE, str(build), debian_mirror()])
    # Packages installed later must never start services on the host.
    policy = build / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# tests: never start services inside this root\nexit 101\n")
    policy.chmod(0o755)
    shutil.rmtree(build / "var/cache/apt/archives", ignore_errors=True)
    (build / "var/cache/apt/archives/partial").mkdir(parents=True)
    partial = tarball.with_suffix(".tmp")
    run(["tar", "--zstd", "-C", str(build), "-cf", str(partial), "."])
    partial.rename(tarball)
    shutil.rmtree(build)
    return tarball


def unpack_root(dest: Path) -> Path:
    """A fresh copy of the cached root at ``dest``, its apt cache seeded from earlier runs."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["tar", "--zstd", "-C", str(dest), "-xf", str(rootfs_tarball())])
    # The roles run apt inside the root: let it resolve names like the host does.
    shutil.copy2("/etc/resolv.conf", dest / "etc/resolv.conf")
    archives = CACHE / "apt-archives"
    if archives.is_dir():
        for deb in archives.glob("*.deb"):
            os.link(deb, dest / "var/cache/apt/archives" / deb.name) if _same_fs(
                deb, dest) else shutil.copy2(deb, dest / "var/cache/apt/archives" / deb.name)
    return dest


def keep_apt_archives(root: Path) -> None:
    """Keep the .deb files apt downloaded inside ``root`` for the next run."""
    archives = CACHE / "apt-archives"
    archives.mkdir(parents=True, exist_ok=True)
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        if not (archives / deb.name).exists():
            shutil.copy2(deb, archives / deb.name)


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


# --------------------------------------------------------------------------- wheels


def probe_wheel(dest: Path) -> Path:
    """Build the probe's wheel from this checkout into ``dest`` (as the playbook does)."""
    dest.mkdir(parents=True, exist_ok=True)
    run([str(VENV_BIN / "pip"), "wheel", "-q", "--no-deps", "-w", str(dest), str(REPO)],
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"})
    return next(dest.glob("hotline_probe-*.whl"))


def wheelhouse() -> Path:
    """The probe's dependencies and its ops extra's (and theirs) as wheels for this machine's
    CPython and arch.

    ``pip wheel`` rather than ``pip download``: some dependencies (libsvm-official) exist only
    as source and are built here once, as the pjsua2 build host does for a Pi.  The debootstrap
    root's python3 is 3.11 like this machine's.  Refreshed when pyproject.toml changes."""
    house = CACHE / "wheelhouse"
    stamp = house / ".stamp"
    inputs = (REPO / "pyproject.toml", REPO / "requirements" / "ops.txt")
    if stamp.exists() and all(stamp.stat().st_mtime >= p.stat().st_mtime for p in inputs):
        return house
    house.mkdir(parents=True, exist_ok=True)
    run([str(VENV_BIN / "pip"), "wheel", "-q", "-w", str(house),
         "--constraint", str(REPO / "requirements" / "ops.txt"), *dependencies()])
    stamp.touch()
    return house


#: Extras the roles install (the ops role: ``hotline-probe[ops]``).
EXTRAS = ("ops",)


def dependencies() -> list[str]:
    """The runtime requirements in pyproject.toml, with those of :data:`EXTRAS`."""
    import tomllib

    with (REPO / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    extras = project.get("optional-dependencies", {})
    return [*project["dependencies"], *(req for name in EXTRAS for req in extras.get(name, []))]
