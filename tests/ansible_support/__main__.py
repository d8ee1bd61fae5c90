"""``python -m tests.ansible_support collections|mirror|rootfs``: prepare one cached item."""

import sys

from tests.ansible_support import collections_path, debian_mirror, rootfs_tarball

COMMANDS = {"collections": collections_path, "mirror": debian_mirror, "rootfs": rootfs_tarball}

if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
    sys.exit(f"usage: python -m tests.ansible_support {'|'.join(COMMANDS)}")
print(COMMANDS[sys.argv[1]]())
