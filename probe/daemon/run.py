"""``probe run``: the daemon.  Threads, each owning one thing, talking over queues:

=================  ==========================================================================
main thread        signals (SIGTERM/SIGINT stop, SIGHUP reload), systemd notify + watchdog,
                   the health record
``sched``          :mod:`probe.daemon.schedule`: hands due (target, channel) jobs to channel workers
``worker[sip]``    owns the pjsua2 endpoint; one call at a time (likewise one per modem)
``probe.uplink.forwarder``  durable outbox (SQLite) → publisher, in order, rate-limited
``probe.uplink.mqtt[..]``   owns the paho client (results, status, health, commands)
``control``        the local control socket (probe/daemon/control.py): ``probe call`` hands its call
                   to the channel worker, which streams the steps and the result back
=================  ==========================================================================

Every result is committed to the outbox before anything tries to publish it; the recording of a
failed or degraded call follows it there as a bulk row (probe/results/recording.py).  The systemd
watchdog is pinged only while every thread has shown a heartbeat recently, so a hung worker gets
the daemon restarted instead of silently testing nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import queue
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from probe import __version__
from probe.board.indicator import Status, indicator_status
from probe.board.line import LineInUseError
from probe.board.pins import open_board
from probe.clock import clock_synced, rfc3339
from probe.config.model import Config, Target, load_config
from probe.config.secrets import private_file_problems, secret_file
from probe.daemon.control import ControlServer, ControlSocketTaken, answers, reachable
from probe.daemon.schedule import Slot, due_slots, plan, replan, reschedule
from probe.daemon.systemd import Notifier
from probe.diagnosis.history import VerdictBook
from probe.diagnosis.rules import ProbeFacts, Thresholds
from probe.dial.dialer import Dialer
from probe.dial.progress import Progress
from probe.dial.runner import next_boot_count, prepare_state_dir, prune_audio, run_call
from probe.errors import ConfigError, DialerError, ProbeError
from probe.exitcodes import EXIT_UNJUDGED, combined_exit_code, result_exit_code
from probe.results.recording import submit_recording
from probe.uplink.commands import CommandHandler
from probe.uplink.forwarder import Forwarder
from probe.uplink.homeassistant import Discovery
from probe.uplink.mqtt import CMD_REPLY, HEALTH, Publisher
from probe.uplink.outbox import Outbox
from probe.uplink.tls import tls_context

if TYPE_CHECKING:
    from paho.mqtt.properties import Properties

log = logging.getLogger("probe.daemon.run")

HEARTBEAT_STALE_S = 180.0  # a thread silent for longer stops the watchdog pings (a Pi 3 may
# spend tens of seconds scoring one call's audio between two heartbeats of its worker)
HEALTH_EVERY_S = 60.0
DIALER_RETRY_S = 30.0  # a dialer that failed to start is retried this often
ONCE_DRAIN_S = 30.0  # --once: how long to wait for the broker to take the results
DEFER_S = 60.0  # an analog call deferred because the line is in use is tried again after this


@dataclass
class Job:
    target: Target
    channel: str
    reply: Callable[[dict[str, Any]], None] | None = None  # for "run now" commands
    #: For "run now" commands: True once the command's Message Expiry has passed (not started).
    expired: Callable[[], bool] | None = None
    progress: Progress | None = None  # told each step of the call (the control socket)
    document: bool = False  # the final reply carries the whole result (the control socket)


@dataclass
class ChannelState:
    """What the health record says about one channel."""

    state: str = "starting"  # starting | idle | calling | error
    error: str | None = None
    fault: str | None = None  # the last call failed inside the probe (a bug, the disk): the
    # LED shows fault_probe until a call goes through again
    last_call: dict[str, Any] | None = None
    last_success: dict[str, Any] | None = None
    facts: dict[str, Any] = field(default_factory=dict)


class ChannelWorker:
    """One thread per line (the SIP endpoint, each modem): calls strictly one at a time.

    The thread builds its dialer itself, so it owns it (pjsua2 requires this); a dialer that
    fails to start is reported in the health record and retried, never fatal.
    """

    def __init__(self, channel: str, make_dialer: Callable[[], Dialer | None],
                 place_call: Callable[[Job, Dialer], dict[str, Any]],
                 on_result: Callable[[Job, dict[str, Any]], None],
                 on_fault: Callable[[], None] | None = None) -> None:
        self.channel = channel
        self.make_dialer = make_dialer
        self.place_call = place_call
        self.on_result = on_result
        self.on_fault = on_fault  # after a probe fault: the LED and health show it now
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.state = ChannelState()
        self.stopping = threading.Event()
        self.busy = threading.Event()
        self.dialer: Dialer | None = None
        self.last_beat = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"worker[{channel}]", daemon=True)

    @property
    def beat(self) -> float:
        dialer_beat = self.dialer.last_beat if self.dialer is not None else 0.0
        return max(self.last_beat, dialer_beat)

    def idle(self) -> bool:
        return not self.busy.is_set() and self.jobs.empty()

    def facts(self) -> dict[str, Any]:
        """The line's counters, and what its dialer knows now: the SIP registration, the
        modem's radio state (both plain data, cheap, readable from any thread)."""
        dialer = self.dialer
        return {**self.state.facts, **(dialer.facts() if dialer is not None else {})}

    def start(self) -> ChannelWorker:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Abort the call in progress (it is hung up and still recorded) and end the thread."""
        self.stopping.set()
        if self.dialer is not None and self.busy.is_set():
            self.dialer.abort()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        next_try = 0.0
        try:
            while not self.stopping.is_set():
                self.last_beat = time.monotonic()
                if self.dialer is None and time.monotonic() >= next_try:
                    next_try = time.monotonic() + DIALER_RETRY_S
                    self._start_dialer()
                try:
                    job = self.jobs.get(timeout=1.0)
                except queue.Empty:
                    continue
                if self.stopping.is_set():
                    break
                try:
                    self._call(job)
                except Exception as exc:  # even the fault handling failed: the thread lives on
                    log.exception("%s: call of %s failed unexpectedly", self.channel,
                                  job.target.name)
                    self.state.state, self.state.fault = "error", f"{type(exc).__name__}: {exc}"
        finally:
            if self.dialer is not None:
                self.dialer.close()
                self.dialer = None

    def _start_dialer(self) -> None:
        try:
            self.dialer = self.make_dialer()
        except Exception as exc:  # also the power key's pins (no pin library, a pin taken)
            self.state.state, self.state.error = "error", str(exc)
            log.error("%s dialer cannot start: %s (retrying in %.0f s)", self.channel, exc,
                      DIALER_RETRY_S)
            return
        self.state.state, self.state.error = "idle", None

    def _call(self, job: Job) -> None:
        if job.expired is not None and job.expired():
            log.warning("%s/%s not called: the command expired while it waited",
                        job.target.name, self.channel)
            if job.reply:
                job.reply({"ok": False, "reason": "expired: its Message Expiry passed while "
                           "it waited for the line"})
            return
        if self.dialer is None:
            reason = self.state.error or "dialer not started"
            log.error("%s/%s not called: %s", job.target.name, self.channel, reason)
            if job.reply:
                job.reply({"ok": False, "reason": f"{self.channel} dialer unavailable: {reason}"})
            return
        self.busy.set()
        self.state.state = "calling"
        try:
            doc = self.place_call(job, self.dialer)
        except LineInUseError as exc:  # a person is on the analog line: not a hotline failure
            self.state.state = "idle"
            self.state.facts["deferred"] = self.state.facts.get("deferred", 0) + 1
            log.info("%s/%s deferred %.0f s: %s", job.target.name, self.channel, DEFER_S, exc)
            if job.reply:
                job.reply({"ok": False, "reason": f"deferred: {exc}"})
            else:
                timer = threading.Timer(DEFER_S, self.jobs.put, args=(job,))
                timer.daemon = True
                timer.start()
            return
        except (DialerError, ProbeError) as exc:
            self.state.state, self.state.error = "error", str(exc)
            log.error("%s/%s call failed in the probe: %s", job.target.name, self.channel, exc)
            if job.reply:
                job.reply({"ok": False, "reason": str(exc)})
            return
        except Exception as exc:  # a bug, a locked database, a full disk: one call is lost,
            self._probe_fault(job, exc)  # never the worker
            return
        finally:
            self.busy.clear()
        self.state.state, self.state.error, self.state.fault = "idle", None, None
        summary = {"at": doc["started_at"], "target": doc["target"], "outcome": doc["outcome"],
                   "met": doc["expectations"]["met"], "id": doc["id"]}
        self.state.last_call = summary
        if doc["expectations"]["met"]:
            self.state.last_success = summary
        try:
            self.on_result(job, doc)
        except Exception as exc:
            self._probe_fault(job, exc, result_id=doc["id"])
        if job.reply:
            job.reply({"ok": True, "result": summary, **({"document": doc} if job.document
                                                          else {})})

    def _probe_fault(self, job: Job, exc: Exception, result_id: str | None = None) -> None:
        """A call that failed inside the probe: recorded as a probe fault (health, LED), logged
        with its traceback as one structured line; the worker goes on with the next call."""
        fault = f"{type(exc).__name__}: {exc}"
        self.state.state, self.state.error, self.state.fault = "error", fault, fault
        self.state.facts["probe_faults"] = self.state.facts.get("probe_faults", 0) + 1
        log.error("%s/%s: probe fault, the worker goes on: %s", job.target.name, self.channel,
                  fault, exc_info=exc,
                  extra={"event": "probe_fault", "channel": self.channel,
                         "target": job.target.name, "error": fault, "result_id": result_id})
        if job.reply and result_id is None:  # with a result, the caller is answered with it
            job.reply({"ok": False, "reason": f"probe fault: {fault}"})
        if self.on_fault is not None:
            self.on_fault()


class Scheduler:
    """Hands due jobs to idle workers; a busy worker's slot waits, a missed slot is skipped."""

    def __init__(self, targets: tuple[Target, ...], workers: dict[str, ChannelWorker], *,
                 once: bool, rng: random.Random | None, max_jitter_s: float = 60.0) -> None:
        self.workers = workers
        self.once = once
        self.rng = rng if max_jitter_s > 0 else None
        self.max_jitter_s = max_jitter_s
        self.slots = plan(targets, time.monotonic(), self.rng, max_jitter_s)
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.last_beat = time.monotonic()
        self.finished = threading.Event()  # once: every slot handed out and done
        self.thread = threading.Thread(target=self._run, name="sched", daemon=True)

    def start(self) -> Scheduler:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def replace_targets(self, targets: tuple[Target, ...]) -> None:
        with self.lock:
            self.slots = replan(self.slots, targets, time.monotonic(), self.rng,
                                self.max_jitter_s)
        self.wake.set()

    def run_now(self, job: Job) -> bool:
        worker = self.workers.get(job.channel)
        if worker is None:
            return False
        worker.jobs.put(job)
        return True

    def _run(self) -> None:
        while not self.stopping.is_set():
            now = time.monotonic()
            self.last_beat = now
            with self.lock:
                for slot in due_slots(self.slots, now):
                    self._dispatch(slot, now)
                if self.once and not self.slots and all(w.idle() for w in self.workers.values()):
                    self.finished.set()
                    return
                wait = min((s.due for s in self.slots), default=now + 1.0) - now
            self.wake.wait(max(0.05, min(wait, 1.0)))
            self.wake.clear()

    def _dispatch(self, slot: Slot, now: float) -> None:
        worker = self.workers.get(slot.channel)
        if worker is None:
            log.error("%s/%s: no %s line configured; slot skipped", slot.target.name,
                      slot.channel, slot.channel)
        elif not worker.idle():
            return  # one call per line at a time: the slot waits for the line
        else:
            worker.jobs.put(Job(slot.target, slot.channel))
        if self.once:
            self.slots.remove(slot)
        else:
            reschedule(slot, now, self.rng, self.max_jitter_s)


class Daemon:
    def __init__(self, config_path: str, *, once: bool = False,
                 notifier: Notifier | None = None, rng: random.Random | None = None) -> None:
        self.config_path = config_path
        self.once = once
        self.notifier = notifier or Notifier.from_environment()
        self.rng = rng if rng is not None else (None if once else random.Random())
        self.stop_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.stop_reason = "stopped"
        self.restart = False
        self.started_mono = time.monotonic()
        self.started_at = rfc3339()
        self.config: Config | None = None
        self.control: ControlServer | None = None
        self.once_codes: list[int] = []  # --once: the exit code of each result (exitcodes.py)

    # -- signals (main thread) ----------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop("stopped"))
        signal.signal(signal.SIGINT, lambda *_: self.request_stop("stopped"))
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop_requested.set()

    # -- the life of the daemon -----------------------------------------------------------------
    def run(self) -> int:
        config = self.config = load_config(self.config_path)
        refuse_public_secrets(config)
        refuse_second_daemon(config)
        audio_dir = prepare_state_dir(config)
        state_dir = config.probe.state_dir
        self.boot = next_boot_count(state_dir)
        m = config.mqtt
        self.outbox = Outbox(state_dir / "outbox.sqlite3",
                             max_count=m.outbox_max_results if m else 10_000,
                             max_bytes=(m.outbox_max_mib if m else 50) * 1024 * 1024)
        self.forwarder = Forwarder(self.outbox, rate_per_s=m.drain_rate_per_s if m else 20.0)
        # The publisher's messages are the handler's from the start: its replies go to the
        # probe id this daemon was started with.
        self.commands = CommandHandler(self, self._publish_reply, probe_id=config.probe.id)
        self.verdicts = VerdictBook(state_dir / "verdicts.json", config.probe.language)
        # Home Assistant discovery ([homeassistant], off by default), after every connect.
        self.discovery = Discovery(config) if config.homeassistant.enabled else None
        # A board that does not open is a fault to report, never the daemon's death: the
        # LED's statuses then go to the log, results carry no line (probe/board/pins.py).
        # Before the publisher: a "silence" waiting in the broker finds the indicator.
        self.board = open_board(config.indicator, config.line,
                                on_line_change=lambda *_: self._line_changed())
        self.indicator, self.line = self.board.indicator, self.board.line
        self.indicator.show(Status.BOOTING)
        self.indicator.start()
        self.publisher = self._publisher(config)
        if self.publisher is not None:
            self.forwarder.start(self.publisher)
        self.workers = self._workers(config, audio_dir)
        if self.line is not None:  # after the workers: its changes refresh what they report
            self.line.start()
            # A few seconds at most, so the first calls see the line (or its board's fault)
            # as it is, not "unknown".
            self.line.wait_settled()
        self.scheduler = Scheduler(config.targets, self.workers, once=self.once, rng=self.rng,
                                   max_jitter_s=config.probe.max_jitter_s).start()
        self.control = self._control(config)
        log.info("probe %s running (boot %d, %d targets, outbox %d waiting)", config.probe.id,
                 self.boot, len(config.targets), self.outbox.depth().count)
        self.publish_status()
        self.notifier.ready(f"testing {len(config.targets)} targets")
        try:
            self._main_loop()
        finally:
            self._shutdown()
        if self.restart:
            self._reexec()
        return self.once_exit_code(config) if self.once else 0

    def once_exit_code(self, config: Config) -> int:
        """``--once``: one code for all the calls; a call that gave no result (a probe fault, no
        dialer) counts as one the probe could not judge."""
        expected = sum(len(t.channels) for t in config.targets)
        missing = [EXIT_UNJUDGED] * max(0, expected - len(self.once_codes))
        return combined_exit_code([*self.once_codes, *missing])

    def _main_loop(self) -> None:
        next_health = 0.0
        finished_at: float | None = None
        ping_every = self.notifier.watchdog_interval_s or 5.0
        while not self.stop_requested.is_set():
            now = time.monotonic()
            if self.all_alive(now):
                self.notifier.watchdog()
            else:
                log.error("watchdog withheld: stale threads %s", self.stale_threads(now))
            if now >= next_health:
                self.publish_health()
                next_health = now + HEALTH_EVERY_S
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            if self.once and self.scheduler.finished.is_set():
                if finished_at is None:
                    finished_at = now
                # Results are safe in the outbox: --once gives the broker a bounded while.
                if self._drained() or now - finished_at > ONCE_DRAIN_S:
                    break
            self.stop_requested.wait(min(ping_every, 0.5 if self.once else 1.0))

    def _drained(self) -> bool:
        return self.publisher is None or self.outbox.depth().count == 0

    def _shutdown(self) -> None:
        self.notifier.stopping()
        self.scheduler.stop()
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            worker.join(30)
        if self.control is not None:  # after the workers: a call cut short still answers
            self.control.stop()
        if self.publisher is not None:
            self.publish_health()
            # Results of the last calls are in the outbox already; give them a moment to go.
            self.forwarder.drain(timeout=5.0)
        self.forwarder.stop()
        if self.publisher is not None:
            self.publisher.close(timeout=5.0, reason=self.stop_reason)
        self.outbox.close()
        if self.line is not None:
            self.line.close()
        self.indicator.close()
        log.info("probe stopped (%s)", self.stop_reason)

    def _reexec(self) -> None:
        log.info("restarting to apply the new configuration")
        os.execv(sys.executable, [sys.executable, "-m", "probe", "run", "-c", self.config_path])

    # -- building blocks ----------------------------------------------------------------------
    def _publisher(self, config: Config) -> Publisher | None:
        m = config.mqtt
        if m is None:
            log.warning("no [mqtt] section: results are kept in the outbox only")
            return None
        return Publisher(
            probe_id=config.probe.id, host=m.host, port=m.port, keepalive_s=m.keepalive_s,
            username=m.username, password=m.password.reveal() if m.password else None,
            session_expiry_s=m.session_expiry_s, boot_count=self.boot,
            tls=tls_context(m), on_delivery=self.forwarder.delivered,
            subscriptions=("cmd/+",), on_message=self.commands.receive,
            on_connect=self.discovery.publish if self.discovery is not None else None)

    def _control(self, config: Config) -> ControlServer | None:
        """The control socket, with a command handler of its own (its own rate limits: a
        local operator never uses up the commands of ops).  Without it the daemon still runs:
        ``probe call`` then cannot hand its calls over, and says so."""
        path = config.probe.control_path
        if not reachable(path):
            log.warning("no control socket: %s is longer than a Unix socket path may be; set "
                        "probe.control_socket", path)
            return None
        try:
            return ControlServer(path, CommandHandler(self)).start()  # replies: the socket
        except (OSError, ControlSocketTaken) as exc:
            log.error("no control socket at %s: %s", path, exc)
            return None

    def _workers(self, config: Config, audio_dir: Path) -> dict[str, ChannelWorker]:
        from probe.dial.runner import start_modem_dialer, start_sip_dialer

        def place(job: Job, dialer: Dialer) -> dict[str, Any]:
            monitor = self.line
            # An analog call claims the line: LineInUseError (the call is deferred) while a
            # person is on it or it rings.
            seizing = (monitor.seize() if job.channel == "analog" and monitor is not None
                       else contextlib.nullcontext())
            self.indicator.show(Status.TESTING)
            try:
                with seizing as seizure:
                    line = functools.partial(self.board.result_line, seizure)
                    doc = run_call(config, job.target, job.channel, dialer, audio_dir,
                                   verdicts=self.verdicts, facts=self.facts(), line=line,
                                   progress=job.progress, analysis_worker=True)
            finally:
                self.refresh_indicator()
            prune_audio(audio_dir)
            return doc

        workers: dict[str, ChannelWorker] = {}
        channels = {c for t in config.targets for c in t.channels}
        if "sip" in channels:
            workers["sip"] = ChannelWorker("sip", lambda: start_sip_dialer(config), place,
                                           self._result, self._probe_faulted).start()
        for channel in sorted(channels & {"gsm", "analog"}):  # the modems (probe.dial.modem)
            workers[channel] = ChannelWorker(
                channel, functools.partial(start_modem_dialer, config, channel), place,
                self._result, self._probe_faulted).start()
        return workers

    def _probe_faulted(self) -> None:
        """A worker's call failed inside the probe: LED, status and health say so at once."""
        self.refresh_indicator()
        self.publish_status()
        self.publish_health()

    def _result(self, job: Job, doc: dict[str, Any]) -> None:
        if self.once:
            self.once_codes.append(result_exit_code(doc))
        self.forwarder.submit("result", doc)
        self._recording(doc)
        self.publish_status()
        self.refresh_indicator()
        log.info("%s/%s: %s (pdd %s, answer %s) id=%s", doc["target"], doc["channel"],
                 doc["outcome"], _ms(doc["timings_ms"]["post_dial_delay"]),
                 _ms(doc["timings_ms"]["time_to_answer"]), doc["id"])
        self.publish_health()

    def _recording(self, doc: dict[str, Any]) -> None:
        """After its result, the recording of a failed or degraded call (not without [mqtt]:
        nobody would hear it, and the outbox keeps its room for results)."""
        assert self.config is not None
        m = self.config.mqtt
        if m is not None:
            submit_recording(self.forwarder, doc, m.recording_max_kib * 1024)

    # -- liveness and health ------------------------------------------------------------------
    def beats(self) -> dict[str, float]:
        beats = {"sched": self.scheduler.last_beat}
        beats.update({f"worker[{c}]": w.beat for c, w in self.workers.items()})
        if self.line is not None:
            beats["line"] = self.line.last_beat
        if self.publisher is not None:
            beats["mqtt"] = self.publisher.last_beat
            beats["forwarder"] = self.forwarder.last_beat
        return beats

    def stale_threads(self, now: float) -> list[str]:
        return [name for name, beat in self.beats().items() if now - beat > HEARTBEAT_STALE_S]

    def all_alive(self, now: float) -> bool:
        return not self.stale_threads(now)

    def health(self) -> dict[str, Any]:
        assert self.config is not None
        from probe.dial.sip import pjproject_version

        depth = self.outbox.depth()
        return {
            "probe_id": self.config.probe.id,
            "site": self.config.probe.site,
            "at": rfc3339(),
            "boot": self.boot,
            "started_at": self.started_at,
            "uptime_s": round(time.monotonic() - self.started_mono),
            "clock_synced": clock_synced(),
            "outbox": {"count": depth.count, "bytes": depth.bytes, "dropped": depth.dropped,
                       "recordings_dropped": depth.bulk_dropped,
                       "in_flight": self.outbox.in_flight, "refused": self.forwarder.refused,
                       "unheard": self.forwarder.unheard},
            "storage": self.storage_health(),
            "channels": {c: {"state": w.state.state, "error": w.state.error,
                             "fault": w.state.fault, "last_call": w.state.last_call,
                             "last_success": w.state.last_success, **w.facts()}
                         for c, w in self.workers.items()},
            "threads_alive": self.all_alive(time.monotonic()),
            "line": self.line.snapshot() if self.line is not None else None,
            "indicator": self.indicator.snapshot(),
            "status": self.probe_health_summary(),
            "versions": {"probe": __version__, "python": sys.version.split()[0],
                         "pjproject": pjproject_version()},
        }

    def facts(self) -> ProbeFacts:
        """The probe's own state, as the diagnosis needs it."""
        sip = self.workers.get("sip")
        registration = sip.facts().get("registration") if sip is not None else None
        modems = {c: w.facts().get("modem") or {} for c, w in self.workers.items()
                  if c != "sip"}
        line = self.line.snapshot() if self.line is not None else None
        return ProbeFacts(line=line, sip_registration=registration, modems=modems,
                          broker_reachable=None if self.publisher is None
                          else self.publisher.connected, board_fault=self.board.line_fault())

    def probe_health_summary(self) -> dict[str, Any]:
        """The probe's own health, kept apart from the hotline's verdicts."""
        from probe.diagnosis.rules import probe_findings

        facts = self.facts()
        channels = list(self.workers)
        faults = [f.code for f in probe_findings(facts, channels, Thresholds())]
        faults += [f"{c}.{w.state.state}" for c, w in self.workers.items()
                   if w.state.state == "error"]
        faults += [f"storage.{name}" for name, error in self.storage_faults().items() if error]
        reasons = {}  # a board fault's code does not say which part, nor why
        if (board := self.board.reason()) is not None:  # the indicator's too, not the line's only
            faults += [] if "probe.board_fault" in faults else ["probe.board_fault"]
            reasons["probe.board_fault"] = board
        return {"ok": not faults, "faults": faults, "reasons": reasons}

    def storage_faults(self) -> dict[str, str | None]:
        """What could not be written to the state directory (None: fine)."""
        return {"outbox": self.forwarder.storage_error, "verdicts": self.verdicts.save_error}

    def storage_health(self) -> dict[str, Any]:
        return {**self.storage_faults(), "results_in_memory": self.forwarder.unsaved,
                "results_dropped_in_memory": self.forwarder.unsaved_dropped,
                "recordings_not_stored": self.forwarder.recordings_unsaved}

    def probe_fault(self) -> bool:
        """The probe itself is failing: a call broke inside it, or the disk refuses writes."""
        return (any(w.state.fault for w in self.workers.values())
                or any(self.storage_faults().values()))

    def refresh_indicator(self) -> None:
        """LED and buzzer follow the verdicts and the probe's own faults (the rule is
        probe/board/indicator.py's, which make demo's board uses too)."""
        modem_fault = any(w.state.state == "error" for c, w in self.workers.items()
                          if c != "sip")
        broker_ok = None if self.publisher is None else self.publisher.connected
        self.indicator.show(indicator_status(
            self.verdicts.status().values(), line_fault=self.board.line_faulty(),
            modem_fault=modem_fault, broker_ok=broker_ok, probe_fault=self.probe_fault()))

    def _line_changed(self) -> None:
        """The line (or the board reading it) changed state: the LED and the retained status
        say so now, not after the next call."""
        self.refresh_indicator()
        self.publish_status()

    def publish_status(self) -> None:
        """The retained status: the verdict per target and the probe's own health, apart."""
        if self.publisher is not None:
            self.publisher.set_status(targets=self.verdicts.status(),
                                      probe=self.probe_health_summary())

    def publish_health(self) -> None:
        if self.publisher is not None:
            self.publisher.publish(HEALTH, self.health())  # retained: mqtt.DELIVERY

    # -- what commands may do (probe/uplink/commands.py Controls) -------------------------------
    def target(self, name: str) -> Target | None:
        assert self.config is not None
        return next((t for t in self.config.targets if t.name == name), None)

    def line_busy(self, channel: str) -> bool:
        worker = self.workers.get(channel)
        return worker is not None and not worker.idle()

    def run_now(self, target: Target, channel: str, *,
                reply: Callable[[dict[str, Any]], None], expired: Callable[[], bool],
                progress: Progress | None, document: bool) -> bool:
        return self.scheduler.run_now(Job(target, channel, reply=reply, expired=expired,
                                          progress=progress, document=document))

    def silence(self) -> None:
        self.indicator.silence()

    def _publish_reply(self, doc: dict[str, Any], properties: Properties) -> None:
        if self.publisher is not None:
            self.publisher.publish(CMD_REPLY, doc, properties=properties)

    # -- reload ---------------------------------------------------------------------------------
    def reload(self) -> list[tuple[str, str]]:
        """Apply a new configuration; an invalid one is rejected and the old one kept.

        Returns the problems (empty when applied).  Target changes apply at once; anything else
        (SIP account, broker, state directory) restarts the daemon in place (same PID).
        """
        assert self.config is not None
        try:
            new = load_config(self.config_path)
            refuse_public_secrets(new)  # else the restart it may cause would refuse to start
        except ConfigError as exc:
            for key, reason in exc.problems:
                log.error("reload rejected, old configuration kept: %s: %s", key, reason)
            return exc.problems
        except Exception as exc:  # a validation bug must not take a working daemon down
            log.exception("reload rejected, old configuration kept: the configuration could "
                          "not be read")
            return [("(file)", f"cannot be read: {type(exc).__name__}: {exc}")]
        old = self.config
        unchanged_rest = dataclasses.replace(new, targets=(), source="") == \
            dataclasses.replace(old, targets=(), source="")
        if unchanged_rest and {c for t in new.targets for c in t.channels} == set(self.workers):
            self.config = new
            self.scheduler.replace_targets(new.targets)
            if self.discovery is not None:
                self.discovery.update(new, self.publisher)
            log.info("configuration reloaded: %d targets", len(new.targets))
        else:
            log.info("configuration reloaded: connection settings changed, restarting")
            self.restart = True
            self.request_stop("reload")
        return []


def refuse_public_secrets(config: Config) -> None:
    """ConfigError (exit 2) when a private key or secret file is open to others, as ssh does:
    whoever can read it can impersonate this probe."""
    files: dict[str, Path] = {}
    m = config.mqtt
    if m is not None and m.tls is not None:
        files["mqtt.tls.key_file"] = m.tls.key_file
    for key, secret in (("mqtt.password_file", m.password if m else None),
                        ("sip.password_file", config.sip.password if config.sip else None)):
        if (path := secret_file(secret)) is not None:
            files[key] = path
    if problems := private_file_problems(files):
        raise ConfigError(problems, config.source)


def refuse_second_daemon(config: Config) -> None:
    """ConfigError (exit 2) when a daemon already answers on this configuration's control
    socket: two would share the state directory (outbox, verdicts) and the lines."""
    path = config.probe.control_path
    if answers(path):
        raise ConfigError([("probe.control_socket", f"a probe daemon is running already: it "
                            f"answers on {path}; stop it first (sudo systemctl stop "
                            "hotline-probe)")], config.source)


def _log_thread_death(args: threading.ExceptHookArgs) -> None:
    """A thread that dies anyway says so in the structured log, not as a raw traceback."""
    name = args.thread.name if args.thread is not None else "?"
    log.critical("thread %s died: %s", name, args.exc_value,
                 exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
                 extra={"event": "thread_died", "thread_name": name})


def _ms(value: int | None) -> str:
    return "not measured" if value is None else f"{value} ms"


def run_daemon(config_path: str, *, once: bool = False) -> int:
    threading.excepthook = _log_thread_death
    daemon = Daemon(config_path, once=once)
    daemon.install_signal_handlers()
    return daemon.run()
