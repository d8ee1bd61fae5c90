"""Remote commands from central ops, over MQTT 5 request/response.

A command is a message on ``hotline-probe/v1/<probe-id>/cmd/<name>`` whose payload is a JSON
object (or empty).  Every command is validated against its schema before anything is done, and
rate-limited; the answer goes to ``hotline-probe/v1/<probe-id>/cmd-reply`` (the only topic the
broker's ACL lets a probe answer on) carrying the request's Correlation Data, so a requester can
match it::

    mosquitto_pub -t hotline-probe/v1/branch-017/cmd/run -m '{"target": "support"}' \\
                  -D publish correlation-data 42 -V mqttv5

    → cmd-reply  {"command": "run", "ok": true, "accepted": true}         (at once)
    → cmd-reply  {"command": "run", "ok": true, "result": {...summary}}   (when the call ended)

Malformed, unknown or over-rate commands are answered with ``"ok": false`` and a reason, logged,
and never raise into the MQTT thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import jsonschema
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

if TYPE_CHECKING:
    from probe.daemon import Daemon

log = logging.getLogger("probe.commands")

MAX_PAYLOAD = 4096
#: Deepest bracket nesting accepted (every schema is one flat object).  Checked before parsing:
#: a few kilobytes of ``[[[[`` would otherwise reach json's recursion limit (RecursionError).
MAX_NESTING = 8
REPLY_LEAF = "cmd-reply"

_EMPTY = {"type": "object", "additionalProperties": False, "properties": {}}
SCHEMAS: dict[str, dict[str, Any]] = {
    "run": {
        "type": "object", "additionalProperties": False, "required": ["target"],
        "properties": {
            "target": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
            "channel": {"enum": ["sip", "gsm", "analog"]},
        },
    },
    "reload": _EMPTY,
    "health": _EMPTY,
    "silence": _EMPTY,
}


class RateLimit:
    """Token bucket: ``burst`` commands at once, then one every ``every_s`` seconds."""

    def __init__(self, burst: int = 5, every_s: float = 6.0, clock=time.monotonic) -> None:
        self.burst, self.every_s, self.clock = burst, every_s, clock
        self.tokens = float(burst)
        self.last = clock()
        self.lock = threading.Lock()

    def allow(self) -> bool:
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.last) / self.every_s)
            self.last = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


def parse(name: str, payload: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(arguments, None) for a valid command, (None, reason) otherwise.  Pure."""
    if name not in SCHEMAS:
        return None, f"unknown command {name[:40]!r} (known: {', '.join(sorted(SCHEMAS))})"
    if len(payload) > MAX_PAYLOAD:
        return None, f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD}-byte limit"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"payload is not JSON: {exc}"
    if (depth := nesting(text)) > MAX_NESTING:
        return None, f"payload nested {depth} levels deep, over the limit of {MAX_NESTING}"
    try:
        args = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        return None, f"payload is not JSON: {exc}"
    try:
        jsonschema.validate(args, SCHEMAS[name])
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "payload"
        return None, f"{where}: {exc.message}"
    return args, None


def nesting(text: str) -> int:
    """The deepest ``[``/``{`` nesting in JSON ``text``, brackets inside strings ignored; a
    single pass without recursion, so any input is safe to measure.

    >>> nesting('{"a": [1, {"b": "[[["}]}')
    3
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif in_string:
            escaped, in_string = ch == "\\", ch != '"'
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


class CommandHandler:
    def __init__(self, daemon: Daemon, rate: RateLimit | None = None,
                 rejected_rate: RateLimit | None = None) -> None:
        self.daemon = daemon
        self.rate = rate or RateLimit()
        self.rejected_rate = rejected_rate or RateLimit()
        self.received = 0
        self.rejected = 0

    def receive(self, topic: str, payload: bytes, properties: Properties | None) -> None:
        """Publisher callback (MQTT thread): validate, then act or hand over; never raises."""
        self.received += 1
        name = topic.rsplit("/", 1)[-1]
        correlation = getattr(properties, "CorrelationData", None) if properties else None
        args, problem = parse(name, payload)  # bounded: size and nesting checked first
        # Malformed commands have a bucket of their own, with the same limits: a flood of them
        # is rate-limited like valid ones, and never uses up the valid commands' rate.
        bucket = self.rate if problem is None else self.rejected_rate
        if not bucket.allow():
            args, problem = None, "rate limited: too many commands, try again in a few seconds"
        if problem is not None:
            self.rejected += 1
            log.warning("command %r rejected: %s", name[:40], problem)
            self.reply(name, correlation, {"ok": False, "reason": problem})
            return
        assert args is not None
        log.info("command %s %s", name, json.dumps(args))
        try:
            getattr(self, f"_{name}")(args, correlation)
        except Exception as exc:  # a command must never take the MQTT thread down
            log.exception("command %s failed", name)
            self.reply(name, correlation, {"ok": False, "reason": f"internal error: {exc}"})

    def reply(self, name: str, correlation: bytes | None, body: dict[str, Any]) -> None:
        publisher = self.daemon.publisher
        if publisher is None:
            return
        props = Properties(PacketTypes.PUBLISH)
        if correlation is not None:
            props.CorrelationData = correlation
        publisher.publish(REPLY_LEAF, {"command": name, **body}, properties=props)

    # -- the commands ---------------------------------------------------------------------------
    def _run(self, args: dict[str, Any], correlation: bytes | None) -> None:
        from probe.daemon import Job

        config = self.daemon.config
        assert config is not None
        target = next((t for t in config.targets if t.name == args["target"]), None)
        if target is None:
            self.reply("run", correlation, {"ok": False, "reason":
                                            f"no target named {args['target']!r}"})
            return
        channel = args.get("channel", target.channels[0])
        if channel not in target.channels:
            self.reply("run", correlation, {"ok": False, "reason":
                                            f"target {target.name!r} has no {channel} channel"})
            return
        job = Job(target, channel,
                  reply=lambda body: self.reply("run", correlation, body))
        if not self.daemon.scheduler.run_now(job):
            self.reply("run", correlation, {"ok": False, "reason": f"no {channel} line"})
            return
        self.reply("run", correlation, {"ok": True, "accepted": True})

    def _reload(self, args: dict[str, Any], correlation: bytes | None) -> None:
        problems = self.daemon.reload()
        if problems:
            self.reply("reload", correlation, {"ok": False, "reason": "invalid configuration, "
                       "old one kept", "problems": [f"{k}: {r}" for k, r in problems]})
        else:
            self.reply("reload", correlation, {"ok": True})

    def _health(self, args: dict[str, Any], correlation: bytes | None) -> None:
        self.reply("health", correlation, {"ok": True, "health": self.daemon.health()})

    def _silence(self, args: dict[str, Any], correlation: bytes | None) -> None:
        indicator = getattr(self.daemon, "indicator", None)
        if indicator is None:
            self.reply("silence", correlation, {"ok": False,
                                                "reason": "this probe has no buzzer"})
            return
        indicator.silence()
        self.reply("silence", correlation, {"ok": True})
