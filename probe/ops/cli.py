"""``probe ops``: the central ops service's commands.

Exit codes: 0 done, 2 usage or configuration error (every problem printed with its key path),
70 the command failed unexpectedly, a database that cannot be reached included (one line on
stderr; ``probe -v`` shows the traceback).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

DEFAULT_OPS_CONFIG = "/etc/hotline-probe/ops.toml"
OPS_EPILOG = """exit codes:
  0   done (serve: stopped as asked)
  2   usage or configuration error (every problem with its key path)
  70  failed unexpectedly, a database that cannot be reached included (one line on stderr;
      probe -v ... shows the traceback)"""


def add_parsers(sub: Any) -> None:
    """Register ``ops`` and its sub-commands on the ``probe`` command."""
    raw = argparse.RawDescriptionHelpFormatter
    ops = sub.add_parser("ops", help="the central ops service: fleet status, incidents, alerts",
                         description="The central ops service: fleet status, incidents, "
                         "alerts.", epilog=OPS_EPILOG, formatter_class=raw)
    ops_sub = ops.add_subparsers(dest="ops_command", required=True)

    def command(name: str, short: str, description: str) -> argparse.ArgumentParser:
        return ops_sub.add_parser(name, help=short, description=description, epilog=OPS_EPILOG,
                                  formatter_class=raw)

    def with_config(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("-c", "--config",
                         default=os.environ.get("PROBE_OPS_CONFIG", DEFAULT_OPS_CONFIG),
                         help=f"ops TOML (default: $PROBE_OPS_CONFIG or {DEFAULT_OPS_CONFIG})")

    serve = command("serve", "run the service: ingest, correlation, notifications, HTTP API "
                    "and console", "Run the service until SIGTERM: MQTT ingest, correlation, "
                    "notifications, the HTTP API and the console.")
    with_config(serve)
    serve.add_argument("--log-format", choices=("json", "text"),
                       default="text" if sys.stdout.isatty() else "json")
    serve.set_defaults(func=cmd_serve)

    check = command("check-config", "validate an ops configuration; exit 2 with every problem",
                    "Validate an ops configuration and print every problem with its key path.")
    with_config(check)
    check.set_defaults(func=cmd_check)

    migrate = command("migrate", "create or upgrade the database schema",
                      "Create the database schema, or upgrade it to this release's version.")
    with_config(migrate)
    migrate.set_defaults(func=cmd_migrate)

    user = command("user-add", "add a console / API user (password from $PROBE_OPS_PASSWORD "
                   "or asked)", "Add a console / API user; the password comes from "
                   "$PROBE_OPS_PASSWORD or is asked for (at least 10 characters).")
    with_config(user)
    user.add_argument("name")
    user.add_argument("--role", choices=("viewer", "operator", "admin"), default="viewer")
    user.set_defaults(func=cmd_user_add)

    schema = command("config-schema", "print the JSON Schema of ops.toml",
                     "Print the JSON Schema of ops.toml.")
    schema.set_defaults(func=cmd_config_schema)


def _load(args: argparse.Namespace) -> Any:
    from probe.ops.config import load_ops_config

    return load_ops_config(args.config)


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    backend = config.database_url.split(":", 1)[0].split("+", 1)[0]
    print(f"{args.config}: OK — instance {config.ops.instance}, database {backend}, "
          f"broker {config.mqtt.host}:{config.mqtt.port}, {len(config.receivers)} receiver(s)")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from probe.ops.db import current_revision, make_engine, upgrade

    config = _load(args)
    config.ops.state_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.database_url, password=config.database.password)
    upgrade(engine)
    print(f"database at revision {current_revision(engine)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from probe.daemon.logs import configure_logging
    from probe.ops.service import OpsService

    configure_logging(args.log_format)
    return OpsService(_load(args)).serve_forever()


def cmd_user_add(args: argparse.Namespace) -> int:
    from probe.ops.auth import create_user
    from probe.ops.db import make_engine, session_factory, transaction, upgrade

    config = _load(args)
    password = os.environ.get("PROBE_OPS_PASSWORD") or getpass.getpass(f"password for "
                                                                       f"{args.name}: ")
    if len(password) < 10:
        print("password: must be at least 10 characters", file=sys.stderr)
        return 2
    engine = make_engine(config.database_url, password=config.database.password)
    upgrade(engine)
    with transaction(session_factory(engine)) as session:
        create_user(session, args.name, password, args.role)
    print(f"user {args.name} ({args.role}) added")
    return 0


def cmd_config_schema(_args: argparse.Namespace) -> int:
    from probe.ops.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0

