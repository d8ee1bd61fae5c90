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

The daemon's local control socket (probe/daemon/control.py, ``probe call`` while the daemon runs) is
served by this same handler (:meth:`CommandHandler.handle`, an instance of its own): the same
checks and answers, sent back on the socket instead of ``cmd-reply``.

The handler sees the daemon only through :class:`Controls` (what a command may ask of it) and
a function that publishes a reply: the daemon is one implementation, a test's is a few lines.

MQTT 5 properties of a command, as the ecosystem expects them:

* **Response Topic**: honoured when it is the probe's own ``cmd-reply`` topic.  The shipped ACL
  (deploy/mosquitto) lets a probe write nowhere else, so any other Response Topic is not
  written to (the broker would refuse it): the answer goes to ``cmd-reply`` and says so in
  ``"response_topic"``.
* **Message Expiry**: mosquitto drops a command whose expiry passed while it waited for the
  probe; one that reaches the probe carries the *remaining* seconds.  A ``run`` queued behind
  other calls is not started after that time: it is answered ``"ok": false``, ``expired``.
* Every reply is ``application/json`` and carries the request's Correlation Data.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import jsonschema
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from probe.dial.progress import Progress, Step
from probe.uplink.mqtt import CMD_REPLY, JSON_CONTENT_TYPE, topic

if TYPE_CHECKING:
    from probe.config.model import Target

log = logging.getLogger("probe.uplink.commands")

MAX_PAYLOAD = 4096
#: Deepest bracket nesting accepted (every schema is one flat object).  Checked before parsing:
#: a few kilobytes of ``[[[[`` would otherwise reach json's recursion limit (RecursionError).
MAX_NESTING = 8
REPLY_LEAF = CMD_REPLY

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


class Controls(Protocol):
    """What the commands may ask of the daemon (probe/daemon/run.py's ``Daemon`` provides it)."""

    def target(self, name: str) -> Target | None:
        """The configured target of that name, None when there is none."""
        ...

    def line_busy(self, channel: str) -> bool:
        """A call is in progress or queued on that line (a ``run`` would wait behind it)."""
        ...

    def run_now(self, target: Target, channel: str, *,
                reply: Callable[[dict[str, Any]], None], expired: Callable[[], bool],
                progress: Progress | None, document: bool) -> bool:
        """Queue a call to ``target`` on ``channel`` before the scheduled ones; False when
        there is no such line.  ``reply`` is told the call's outcome (the worker's answer)."""
        ...

    def reload(self) -> list[tuple[str, str]]:
        """Apply the configuration file again; the problems when it is rejected (kept old)."""
        ...

    def health(self) -> dict[str, Any]:
        """The health record, as published on ``health``."""
        ...

    def silence(self) -> None:
        """Stop the buzzer until the status changes."""
        ...


#: Publishes a reply document, with its MQTT properties, on the probe's ``cmd-reply``.
PublishReply = Callable[[dict[str, Any], Properties], object]


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


#: JSON strings (escapes included) and then everything that is not a bracket, removed in C
#: before the count: ~15 µs for a result document where a character loop in Python took ~90.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^][{}]+")


def nesting(text: str, stop_above: int | None = None) -> int:
    """The deepest ``[``/``{`` nesting in JSON ``text``, brackets inside strings ignored; a
    single pass without recursion, so any input is safe to measure.  With ``stop_above`` it
    returns as soon as the depth exceeds that (a hostile input need not be read to its end).

    >>> nesting('{"a": [1, {"b": "[[["}]}')
    3
    >>> nesting("[" * 10_000, stop_above=64)
    65
    """
    depth = deepest = 0
    for bracket in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        else:
            depth -= 1
    return deepest


@dataclass(frozen=True)
class Request:
    """What a reply needs of the command it answers."""

    name: str
    correlation: bytes | None = None
    #: Said in every reply when the Response Topic asked for could not be honoured.
    response_topic_note: str | None = None
    #: time.monotonic() after which the command has expired (its Message Expiry), or None.
    deadline: float | None = None
    #: Where the replies go when the command did not come over MQTT (the daemon's control
    #: socket, probe/daemon/control.py); None: published on cmd-reply.
    sink: Callable[[dict[str, Any]], None] | None = None
    #: ``run``: told each step of the call as it happens (the control socket streams them).
    progress: Progress | None = None
    #: ``run``: the final reply carries the whole result document as ``"document"`` (the
    #: control socket's ``probe call`` prints it; over MQTT the result topic has it).
    document: bool = False
    origin: str = "mqtt"  # for the log: "mqtt" or "control socket"

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (now or time.monotonic()) >= self.deadline


def response_topic_note(asked: str | None, own: str) -> str | None:
    """None when the reply can go where the caller asked, else what the reply says instead.

    >>> response_topic_note("hotline-probe/v1/p1/cmd-reply", "hotline-probe/v1/p1/cmd-reply")
    >>> response_topic_note("ops/inbox", "hotline-probe/v1/p1/cmd-reply")[:30]
    "not honoured: 'ops/inbox' is n"
    """
    if asked is None or asked == own:
        return None
    return (f"not honoured: {asked[:200]!r} is not this probe's to write (the broker's ACL "
            f"allows only {own}); answered on {own}")


def expiry_deadline(properties: Properties | None, now: float) -> float | None:
    """The monotonic time a command expires at, from the Message Expiry Interval the broker
    delivered (the seconds remaining), or None when it never expires."""
    remaining = getattr(properties, "MessageExpiryInterval", None) if properties else None
    return None if remaining is None else now + float(remaining)


class CommandHandler:
    """Validates, rate-limits and carries out commands on ``controls``.  Over MQTT the replies
    go out through ``publish`` on ``cmd-reply`` of ``probe_id``; the control socket's handler
    has neither (its requests carry their own ``sink``)."""

    def __init__(self, controls: Controls, publish: PublishReply | None = None, *,
                 probe_id: str | None = None, rate: RateLimit | None = None,
                 rejected_rate: RateLimit | None = None) -> None:
        self.controls = controls
        self.publish = publish
        self.probe_id = probe_id
        self.rate = rate or RateLimit()
        self.rejected_rate = rejected_rate or RateLimit()
        self.received = 0
        self.rejected = 0

    def receive(self, topic: str, payload: bytes, properties: Properties | None) -> None:
        """Publisher callback (MQTT thread): validate, then act or hand over; never raises."""
        self.handle(self.request(topic.rsplit("/", 1)[-1], properties), payload)

    def handle(self, request: Request, payload: bytes) -> None:
        """One command, however it came (MQTT, the control socket): validate, rate-limit,
        then act or hand over; every outcome is answered through ``reply``; never raises."""
        self.received += 1
        name = request.name
        args, problem = parse(name, payload)  # bounded: size and nesting checked first
        # Malformed commands have a bucket of their own, with the same limits: a flood of them
        # is rate-limited like valid ones, and never uses up the valid commands' rate.
        bucket = self.rate if problem is None else self.rejected_rate
        if not bucket.allow():
            args, problem = None, "rate limited: too many commands, try again in a few seconds"
        if problem is None and request.expired():
            problem = "expired: its Message Expiry passed before the probe received it"
        if problem is not None:
            self.rejected += 1
            log.warning("command %r rejected: %s", name[:40], problem)
            self.reply(request, {"ok": False, "reason": problem})
            return
        assert args is not None
        log.info("command %s %s (%s)", name, json.dumps(args), request.origin)
        try:
            getattr(self, f"_{name}")(args, request)
        except Exception as exc:  # a command must never take the MQTT thread down
            log.exception("command %s failed", name)
            self.reply(request, {"ok": False, "reason": f"internal error: {exc}"})

    def request(self, name: str, properties: Properties | None) -> Request:
        """The reply-side facts of a command: Correlation Data, Response Topic, expiry."""
        asked = getattr(properties, "ResponseTopic", None) if properties else None
        note = response_topic_note(asked, self.reply_topic())
        if note is not None:
            log.warning("command %r: Response Topic %s", name[:40], note)
        return Request(name=name,
                       correlation=getattr(properties, "CorrelationData", None)
                       if properties else None,
                       response_topic_note=note,
                       deadline=expiry_deadline(properties, time.monotonic()))

    def reply_topic(self) -> str:
        """Where this probe answers: the tree of the probe id it was started with, never a
        topic read back from the configuration, which a reload may be changing."""
        return topic(self.probe_id, REPLY_LEAF) if self.probe_id is not None else ""

    def reply(self, request: Request, body: dict[str, Any]) -> None:
        if request.sink is not None:
            request.sink({"command": request.name, **body})
            return
        if self.publish is None:
            return
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = JSON_CONTENT_TYPE
        if request.correlation is not None:
            props.CorrelationData = request.correlation
        note = {"response_topic": request.response_topic_note} \
            if request.response_topic_note else {}
        self.publish({"command": request.name, **body, **note}, props)

    # -- the commands ---------------------------------------------------------------------------
    def _run(self, args: dict[str, Any], request: Request) -> None:
        target = self.controls.target(args["target"])
        if target is None:
            self.reply(request, {"ok": False, "reason":
                                            f"no target named {args['target']!r}"})
            return
        channel = args.get("channel", target.channels[0])
        if channel not in target.channels:
            self.reply(request, {"ok": False, "reason":
                                            f"target {target.name!r} has no {channel} channel"})
            return
        if request.progress is not None and self.controls.line_busy(channel):
            request.progress(Step("queued", f"waiting for the {channel} line: a call is in "
                                  "progress"))
        if not self.controls.run_now(target, channel,
                                     reply=lambda body: self.reply(request, body),
                                     expired=request.expired, progress=request.progress,
                                     document=request.document):
            self.reply(request, {"ok": False, "reason": f"no {channel} line"})
            return
        self.reply(request, {"ok": True, "accepted": True})

    def _reload(self, args: dict[str, Any], request: Request) -> None:
        problems = self.controls.reload()
        if problems:
            self.reply(request, {"ok": False, "reason": "invalid configuration, "
                       "old one kept", "problems": [f"{k}: {r}" for k, r in problems]})
        else:
            self.reply(request, {"ok": True})

    def _health(self, args: dict[str, Any], request: Request) -> None:
        self.reply(request, {"ok": True, "health": self.controls.health()})

    def _silence(self, args: dict[str, Any], request: Request) -> None:
        self.controls.silence()
        self.reply(request, {"ok": True})
