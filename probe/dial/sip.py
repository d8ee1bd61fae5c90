"""SIP dialer on pjsua2: places a test call and records its timeline, audio and RTP statistics.

Threading and lifetime rules of pjsua2, which this module keeps:

* The thread that calls :meth:`SipDialer.start` owns the pjsua2 endpoint (``threadCnt = 0``,
  ``mainThreadOnly``) and pumps it with ``libHandleEvents``; every other method must be called
  from that same thread (checked).  pjsua2 callbacks therefore run on our thread, inside
  ``libHandleEvents``, and are stamped with the monotonic clock right there.
* Callbacks only translate pjsua2 events into :class:`~probe.results.timeline.CallRecord` events;
  the decisions (give up ringing, hang up after the hold time) live in
  :meth:`SipDialer.call`'s loop.
* Account, Call and Recorder objects are held by strong references and dropped in order:
  hang up → DISCONNECTED → drop recorder and call → ``gc.collect()`` → ``libDestroy()``.
  A recorder destroyed after ``libDestroy`` aborts the process in pjmedia, so :meth:`close`
  runs even when a call raised.
* Headless: the null sound device; the conference bridge runs at 8 kHz (telephone band).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pjsua2 as pj

from probe.config.model import Expectations, SipAccount, Target
from probe.errors import DialerError
from probe.results.timeline import CallRecord, Ev, Event, RtpStats

log = logging.getLogger("probe.sip")

PUMP_MS = 5  # libHandleEvents wait; bounds how late a loop decision can be, not event stamps
STATS_EVERY_NS = 250_000_000
HANGUP_GRACE_NS = 10_000_000_000  # after CANCEL/BYE, how long to wait for the call to end
WAV_CLOSE_WAIT_NS = 2_000_000_000  # after dropping the recorder, how long to wait for the WAV
CANCEL_LINGER_NS = 500_000_000  # after a CANCEL, how long close() still pumps (to ACK the 487)


def pjproject_version() -> str:
    """Version of the pjproject library behind pjsua2, from any thread.

    pjlib asserts when an unregistered thread calls into a running endpoint, so the version is
    read once — by the thread that creates the endpoint, or here from a short-lived bare one
    under the same lock (pjsua2 allows one Endpoint object per process) — and cached.
    """
    global _version
    with _endpoint_lock:
        if _version is None:
            _version = pj.Endpoint().libVersion().full
        return _version


_live_endpoint: pj.Endpoint | None = None
_endpoint_lock = threading.Lock()
_version: str | None = None


@dataclass
class _Registration:
    code: int | None = None
    reason: str | None = None
    expires_s: int | None = None


class _LogWriter(pj.LogWriter):
    """pjsip's log into Python logging (stderr), never onto stdout where results are printed."""

    def write(self, entry: pj.LogEntry) -> None:
        level = logging.WARNING if entry.level <= 2 else logging.DEBUG
        log.log(level, "pjsip: %s", entry.msg.rstrip())


@contextlib.contextmanager
def _pjlib_startup_output() -> Iterator[None]:
    """pjlib prints start-up lines to fd 1 before any log configuration applies: keep them off
    stdout (where ``--json`` results go) — on stderr when debugging, else discarded.

    fd 1 is the whole process's: the log handlers are held meanwhile, so that another thread's
    log line (the daemon's, for journald) waits the few milliseconds instead of being lost.
    """
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.acquire()
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        sink = os.open(os.devnull, os.O_WRONLY) if not log.isEnabledFor(logging.DEBUG) else None
        try:
            os.dup2(sink if sink is not None else 2, 1)
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            if sink is not None:
                os.close(sink)
    finally:
        for handler in reversed(handlers):
            handler.release()


class _Account(pj.Account):
    def __init__(self, registration: _Registration) -> None:
        super().__init__()
        self.registration = registration

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        self.registration.code = prm.code
        self.registration.reason = prm.reason
        self.registration.expires_s = prm.expiration


class _Call(pj.Call):
    """Translates pjsua2 call callbacks into timeline events; decides nothing."""

    def __init__(self, account: pj.Account, record: CallRecord, recorder_path: Path) -> None:
        super().__init__(account)
        self.record = record
        self.recorder_path = recorder_path
        self.recorder: pj.AudioMediaRecorder | None = None
        self.state = pj.PJSIP_INV_STATE_NULL
        self.answered = False
        self.media_active = False
        self.final_from_network = False

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        now = time.monotonic_ns()
        info = self.getInfo()
        self.state = info.state
        if info.state == pj.PJSIP_INV_STATE_CONNECTING and not self.answered:
            self.answered = True
            self.record.add(Ev.ANSWER, now, info.lastStatusCode, info.lastReason)
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.answered:
            self.answered = True
            self.record.add(Ev.ANSWER, now, 200, "OK")
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.record.add(Ev.END, now, info.lastStatusCode, info.lastReason,
                            from_network=self.final_from_network or _received(prm.e),
                            call_id=info.callIdString)

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        now = time.monotonic_ns()
        event = prm.e
        if event.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx_event = event.body.tsxState
        tsx = tsx_event.tsx
        if tsx.method == "INVITE" and tsx.role == pj.PJSIP_ROLE_UAC:
            if tsx_event.type == pj.PJSIP_EVENT_TX_MSG and tsx.state == pj.PJSIP_TSX_STATE_CALLING:
                attempt = sum(1 for e in self.record.events if e.kind == Ev.DIAL) + 1
                # pjsua never reports the 401/407 it answers itself (it re-sends the INVITE with
                # credentials inside the response's processing): the re-sent INVITE tells.
                challenge = _answers_challenge(tsx_event) if attempt > 1 else None
                if challenge is not None and not self.record.has(Ev.CHALLENGE):
                    self.record.add(Ev.CHALLENGE, now, challenge, None)
                    self.final_from_network = True
                self.record.add(Ev.DIAL, now, attempt=attempt)
            elif tsx_event.type == pj.PJSIP_EVENT_RX_MSG:
                code, reason = tsx.statusCode, tsx.statusText
                if 100 <= code < 200:
                    self.record.add(Ev.PROGRESS, now, code, reason)
                elif code in (401, 407):
                    self.record.add(Ev.CHALLENGE, now, code, reason)
                    self.final_from_network = True
                elif code >= 200:
                    self.final_from_network = True
        elif (tsx.method == "BYE" and tsx.role == pj.PJSIP_ROLE_UAS
              and tsx_event.type == pj.PJSIP_EVENT_RX_MSG):
            self.record.add(Ev.REMOTE_HANGUP, now)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        now = time.monotonic_ns()
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            if self.recorder is None:
                self.recorder = pj.AudioMediaRecorder()
                self.recorder.createRecorder(str(self.recorder_path))
                self.record.audio_path = self.recorder_path
            # Re-attach on every media change: a 200 OK can renegotiate after early media.
            self.getAudioMedia(index).startTransmit(self.recorder)
            if not self.answered and not self.record.has(Ev.EARLY_MEDIA):
                self.record.add(Ev.EARLY_MEDIA, now)
            elif self.answered and not self.record.has(Ev.MEDIA_START):
                self.record.add(Ev.MEDIA_START, now)
            self.media_active = True

    def sample_rtp(self) -> RtpStats | None:
        """Receive statistics of the audio stream; None when there is no stream (yet)."""
        if not self.media_active:
            return None
        try:
            stat = self.getStreamStat(0)
            info = self.getStreamInfo(0)
        except pj.Error:
            return None  # the stream is already gone: keep the previous sample
        rx = stat.rtcp.rxStat
        tx = stat.rtcp.txStat
        rtt = stat.rtcp.rttUsec
        return RtpStats(
            codec=f"{info.codecName}/{info.codecClockRate}",
            packets_received=rx.pkt, packets_lost=rx.loss, packets_discarded=rx.discard,
            packets_reordered=rx.reorder, packets_duplicated=rx.dup,
            jitter_mean_us=rx.jitterUsec.mean, jitter_max_us=rx.jitterUsec.max,
            packets_sent=tx.pkt, rtt_mean_us=rtt.mean if rtt.n else None,
        )


class SipDialer:
    """Places SIP test calls from one pjsua2 endpoint.

    Example::

        with SipDialer(config.sip, probe_id="branch-017") as dialer:
            record = dialer.call(target.sip_uri, target.expect, target="support",
                                 audio_path=Path("/var/lib/hotline-probe/audio/x.wav"))
    """

    def __init__(self, account: SipAccount, *, probe_id: str, log_level: int = 1) -> None:
        self.account_config = account
        self.probe_id = probe_id
        self.log_level = log_level
        self.registration = _Registration()
        self._owner: threading.Thread | None = None
        self._ep: pj.Endpoint | None = None
        self._account: _Account | None = None
        self._transport_id: int | None = None
        self._log_writer = _LogWriter()  # pjsua2 keeps a raw pointer: we keep the object
        self._abort = threading.Event()  # set from any thread: hang up the current call now
        self._cancelled = False  # a CANCEL whose 487 close() must still read and ACK (_release)
        self.last_beat = time.monotonic()  # the owning thread is alive (for the watchdog)
        self.version = ""

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> SipDialer:
        if self._ep is not None:
            raise DialerError("SIP dialer already started (pjsua2 allows one endpoint)")
        self._owner = threading.current_thread()
        global _live_endpoint, _version
        with _endpoint_lock:
            ep = pj.Endpoint()
            _version = ep.libVersion().full
        with _pjlib_startup_output():
            ep.libCreate()
        self._ep = _live_endpoint = ep
        try:
            self._configure(ep)
        except pj.Error as exc:
            self.close()
            raise DialerError(f"SIP stack failed to start: {_pj_message(exc)}") from exc
        return self

    def _configure(self, ep: pj.Endpoint) -> None:
        acc = self.account_config
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.userAgent = f"hotline-probe/{self.probe_id}"
        cfg.logConfig.level = self.log_level
        cfg.logConfig.consoleLevel = self.log_level
        cfg.logConfig.writer = self._log_writer
        cfg.logConfig.decor = 0  # logging adds its own time and level
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.hasIoqueue = True
        # Keep the null sound device open: pjsua closes an idle one after 1 s by default, which
        # blocks libHandleEvents ~20 ms (and reopens it at the next media), late-stamping any SIP
        # response that arrives meanwhile.
        cfg.medConfig.sndAutoCloseTime = -1
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()
        tcfg = pj.TransportConfig()
        tcfg.port = acc.local_port
        if acc.local_address not in ("0.0.0.0", "::"):
            tcfg.boundAddress = acc.local_address
        kind = pj.PJSIP_TRANSPORT_TCP if acc.transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
        self._transport_id = ep.transportCreate(kind, tcfg)
        ep.libStart()
        self.version = ep.libVersion().full

        acfg = pj.AccountConfig()
        acfg.idUri = acc.identity or f"sip:{self.probe_id}@{_identity_host(acc)}"
        if acc.registrar:
            acfg.regConfig.registrarUri = acc.registrar
            acfg.regConfig.timeoutSec = 600
        else:
            acfg.regConfig.registerOnAdd = False
        acfg.sipConfig.transportId = self._transport_id
        if acc.username and acc.password:
            acfg.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", acc.realm, acc.username, 0, acc.password.reveal()))
        acfg.mediaConfig.transportConfig.port = acc.rtp_port
        if acc.local_address not in ("0.0.0.0", "::"):
            acfg.mediaConfig.transportConfig.boundAddress = acc.local_address
        self._account = _Account(self.registration)
        self._account.create(acfg)
        if acc.registrar:
            self._wait_registration(acc.register_timeout_s)

    def _wait_registration(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.registration.code is None and time.monotonic() < deadline:
            self._pump()
        if self.registration.code is None:
            self.registration.reason = f"no answer from the registrar within {timeout_s:g} s"
        log.info("registration: %s %s", self.registration.code, self.registration.reason)

    def close(self) -> None:
        """Hang up, release pjsua2 objects in order and destroy the endpoint.  Idempotent."""
        if self._ep is None:
            return
        self._check_thread()
        ep = self._ep
        # Counted from here, not from the CANCEL: the call's analysis runs in between without
        # pumping, and a linger spent during it would read nothing (the 487 then stays un-ACKed
        # and the far end resends it for 32 s).
        linger_until = time.monotonic_ns() + (CANCEL_LINGER_NS if self._cancelled else 0)
        while time.monotonic_ns() < linger_until:
            self._pump()
        if self._account is not None:
            if self.account_config.registrar and self.registration.code == 200:
                self._unregister(timeout_s=2.0)
            self._account.shutdown()
            self._account = None
        gc.collect()
        # Without NO_RX_MSG, pjsua_destroy sleeps a whole second "for unregistration": we have
        # waited for the registrar's answer ourselves, so the endpoint can go at once.
        ep.libDestroy(pj.PJSUA_DESTROY_NO_RX_MSG)
        self._ep = None
        global _live_endpoint
        _live_endpoint = None

    def destination(self, target: Target) -> str | None:
        """The target's SIP URI (None: it is not called over SIP)."""
        return target.sip_uri

    def facts(self) -> dict[str, Any]:
        """The latest REGISTER's answer, when there is a registrar (any thread)."""
        registration = self.registration_facts()
        return {} if registration is None else {"registration": registration}

    def registration_facts(self) -> dict[str, Any] | None:
        """{"code", "reason"} of the latest REGISTER; None without a registrar.  Plain data:
        any thread may read it."""
        if not self.account_config.registrar:
            return None
        return {"code": self.registration.code, "reason": self.registration.reason}

    def _unregister(self, timeout_s: float) -> None:
        assert self._account is not None
        self.registration.code = None
        try:
            self._account.setRegistration(False)
        except pj.Error as exc:
            log.warning("unregister failed: %s", _pj_message(exc))
            return
        deadline = time.monotonic() + timeout_s
        while self.registration.code is None and time.monotonic() < deadline:
            self._pump()
        log.info("unregistered: %s %s", self.registration.code, self.registration.reason)

    def __enter__(self) -> SipDialer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the call -------------------------------------------------------------------------------
    def call(self, uri: str, expect: Expectations, *, target: str, audio_path: Path,
             dtmf: str | None = None, dtmf_after_s: float = 1.0,
             on_event: Callable[[Event], None] | None = None) -> CallRecord:
        """Place one call to ``uri`` and live it as a caller would; returns what happened.

        Gives up (CANCEL) when it has rung longer than ``expect.max_ring_s``, or when nothing at
        all came back for the post-dial-delay limit plus the ring limit.  After answer it stays
        ``expect.hold_s`` on the line (sending ``dtmf`` after ``dtmf_after_s``), then hangs up.
        ``on_event`` is told of each event as it is recorded (the progress of the call).
        """
        self._check_thread()
        if self._account is None:
            raise DialerError("SIP dialer is not started")
        uri = _with_transport(uri, self.account_config.transport)
        audio_path.parent.mkdir(parents=True, exist_ok=True)
        mono = time.monotonic_ns()
        record = CallRecord(channel="sip", target=target, destination=uri,
                            wall_ns=time.time_ns(), mono_ns=mono, observer=on_event)
        record.facts["pjproject"] = self.version
        if (registration := self.registration_facts()) is not None:
            record.facts["registration"] = registration
        call = _Call(self._account, record, audio_path)
        try:
            self._live(call, uri, expect, dtmf, dtmf_after_s)
        finally:
            self._release(call)
        return record

    def _live(self, call: _Call, uri: str, expect: Expectations, dtmf: str | None,
              dtmf_after_s: float) -> None:
        record = call.record
        ring_limit_ns = int(expect.max_ring_s * 1e9)
        silence_limit_ns = int(expect.max_post_dial_delay_ms * 1e6) + ring_limit_ns
        hold_ns = int(expect.hold_s * 1e9)
        dtmf_ns = int(dtmf_after_s * 1e9)
        start = time.monotonic_ns()
        try:
            call.makeCall(uri, pj.CallOpParam(True))
        except pj.Error as exc:
            record.add(Ev.END, time.monotonic_ns(), None, _pj_message(exc), from_network=False)
            return
        hangup_at: int | None = None
        next_stats = 0
        while not record.has(Ev.END):
            self._pump()
            now = time.monotonic_ns()
            if hangup_at is not None:
                if now - hangup_at > HANGUP_GRACE_NS:
                    record.add(Ev.END, now, None, "call did not end after hang-up",
                               from_network=False)
                    break
                continue
            ringing = record.first(Ev.PROGRESS, codes=range(180, 190))
            answer = record.first(Ev.ANSWER)
            why = None
            if answer is None:
                if ringing is not None and now - ringing.t_ns >= ring_limit_ns:
                    why = "max_ring"
                elif ringing is None and now - start >= silence_limit_ns:
                    why = "no_progress"
            else:
                if now >= next_stats:
                    record.rtp = call.sample_rtp() or record.rtp
                    next_stats = now + STATS_EVERY_NS
                if dtmf and not record.has(Ev.DTMF) and now - answer.t_ns >= dtmf_ns:
                    self._send_dtmf(call, dtmf)
                if now - answer.t_ns >= hold_ns:
                    why = "hold_done"
            if self._abort.is_set():
                why = "aborted"
            if why is not None:
                record.rtp = call.sample_rtp() or record.rtp  # the stream dies with the call
                hangup_at = time.monotonic_ns()
                record.add(Ev.HANGUP, hangup_at, reason=why)
                try:
                    call.hangup(pj.CallOpParam(True))
                except pj.Error as exc:
                    log.warning("hang-up failed: %s", _pj_message(exc))

    def _send_dtmf(self, call: _Call, digits: str) -> None:
        try:
            call.dialDtmf(digits)  # RFC 4733 when telephone-event was negotiated
            method = "rfc4733"
        except pj.Error:
            prm = pj.CallSendDtmfParam()
            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
            prm.digits = digits
            call.sendDtmf(prm)
            method = "sip_info"
        call.record.add(Ev.DTMF, time.monotonic_ns(), reason=digits, method=method)

    def _release(self, call: _Call) -> None:
        """Make sure the call is over, then drop the recorder (finalises the WAV) and the call."""
        if not call.record.has(Ev.END) and call.state != pj.PJSIP_INV_STATE_NULL:
            try:
                call.hangup(pj.CallOpParam(True))
            except pj.Error as exc:
                log.warning("hang-up during release failed: %s", _pj_message(exc))
            deadline = time.monotonic_ns() + HANGUP_GRACE_NS
            while not call.record.has(Ev.END) and time.monotonic_ns() < deadline:
                self._pump()
        if call.record.has(Ev.HANGUP) and not call.record.has(Ev.ANSWER):
            # pjsua reports the call DISCONNECTED as soon as its CANCEL is sent; the far end's
            # 487 still has to arrive and be ACKed by the transaction layer (else it is resent
            # for 32 s), so the endpoint must not be destroyed at once.
            self._cancelled = True
        recorder = call.recorder
        wav = call.recorder_path if recorder is not None else None
        call.recorder = None
        del recorder
        del call
        gc.collect()
        if wav is not None:
            self._wait_wav_closed(wav)

    def _wait_wav_closed(self, path: Path) -> None:
        """Wait until the recorder has written the WAV's final sizes.

        pjproject >= 2.14 removes a conference port (and so closes the WAV writer, which fills
        in the RIFF and data lengths last) asynchronously on the media clock thread: right after
        the recorder is dropped the file may still have a zero-length header."""
        deadline = time.monotonic_ns() + WAV_CLOSE_WAIT_NS
        while not _wav_complete(path):
            if time.monotonic_ns() >= deadline:
                log.warning("recording %s not finalised by the media thread", path)
                return
            self._pump()

    def abort(self) -> None:
        """Hang up the call in progress as soon as possible (thread-safe; e.g. at shutdown)."""
        self._abort.set()

    def _pump(self) -> None:
        assert self._ep is not None
        self._ep.libHandleEvents(PUMP_MS)
        self.last_beat = time.monotonic()

    def _check_thread(self) -> None:
        if self._owner is not threading.current_thread():
            raise DialerError("SipDialer used from a thread that does not own the endpoint")


def _answers_challenge(tsx_event: pj.TsxStateEvent) -> int | None:
    """401 or 407 when the INVITE being sent carries credentials for that challenge."""
    try:
        message = tsx_event.src.tdata.wholeMsg
    except (AttributeError, pj.Error):
        return None
    headers = message.split("\r\n\r\n", 1)[0].lower()
    if "\nproxy-authorization:" in headers:
        return 407
    if "\nauthorization:" in headers:
        return 401
    return None


def _wav_complete(path: Path) -> bool:
    """True once pjmedia's WAV writer has closed ``path``: its RIFF and data lengths agree with
    a 44-byte PCM header (both are zero until then).  A missing file has nothing to wait for."""
    try:
        with open(path, "rb") as f:
            header = f.read(44)
    except OSError:
        return True
    if len(header) < 44:
        return False
    riff_len = int.from_bytes(header[4:8], "little")
    data_len = int.from_bytes(header[40:44], "little")
    return riff_len != 0 and data_len == riff_len - 36


def _received(event: pj.SipEvent) -> bool:
    """True when the event is a SIP message that came from the network (not made up locally)."""
    return (event.type == pj.PJSIP_EVENT_TSX_STATE
            and event.body.tsxState.type == pj.PJSIP_EVENT_RX_MSG)


def _identity_host(acc: SipAccount) -> str:
    if acc.registrar:
        return acc.registrar.split(":", 1)[1].split(";")[0].split("@")[-1]
    if acc.local_address in ("0.0.0.0", "::"):
        return "localhost"
    return acc.local_address


def _with_transport(uri: str, transport: str) -> str:
    if transport == "tcp" and ";transport=" not in uri:
        return uri + ";transport=tcp"
    return uri


def _pj_message(exc: pj.Error) -> str:
    return f"{exc.title}: {exc.reason}" if exc.title else str(exc.reason)
