"""``probe ops``: the central ops service's commands.

Exit codes: 0 done, 1 the command failed (a database or a broker that cannot be reached),
2 usage or configuration error (every problem printed with its key path).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any

DEFAULT_OPS_CONFIG = "/etc/hotline-probe/ops.toml"


def add_parsers(sub: Any) -> None:
    """Register ``ops`` and its sub-commands on the ``probe`` command."""
    ops = sub.add_parser("ops", help="the central ops service: fleet status, incidents, alerts")
    ops_sub = ops.add_subparsers(dest="ops_command", required=True)

    def with_config(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("-c", "--config",
                         default=os.environ.get("PROBE_OPS_CONFIG", DEFAULT_OPS_CONFIG),
                         help=f"ops TOML (default: $PROBE_OPS_CONFIG or {DEFAULT_OPS_CONFIG})")

    serve = ops_sub.add_parser("serve", help="run the service: ingest, correlation, "
                               "notifications, HTTP API and console")
    with_config(serve)
    serve.add_argument("--log-format", choices=("json", "text"),
                       default="text" if sys.stdout.isatty() else "json")
    serve.set_defaults(func=cmd_serve)

    check = ops_sub.add_parser("check-config", help="validate an ops configuration; exit 2 "
                               "with every problem")
    with_config(check)
    check.set_defaults(func=cmd_check)

    migrate = ops_sub.add_parser("migrate", help="create or upgrade the database schema")
    with_config(migrate)
    migrate.set_defaults(func=cmd_migrate)

    user = ops_sub.add_parser("user-add", help="add a console / API user (password from "
                              "$PROBE_OPS_PASSWORD or asked)")
    with_config(user)
    user.add_argument("name")
    user.add_argument("--role", choices=("viewer", "operator", "admin"), default="viewer")
    user.set_defaults(func=cmd_user_add)

    schema = ops_sub.add_parser("config-schema", help="print the JSON Schema of ops.toml")
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
    from probe.logs import configure_logging
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

