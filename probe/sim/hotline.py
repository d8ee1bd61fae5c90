"""A hotline stand-in: SIPp (Debian package ``sip-tester``) answering test calls on loopback.

Each :class:`HotlineBehaviour` describes what the caller lives through — how long until it rings,
how long it rings, how it ends — and :func:`scenario_xml` turns it into a SIPp UAS scenario.  Tests
and ``make demo`` share this module, so the demo hotline is the one the tests prove.

Timing is imposed by SIPp's ``<pause>``: post-dial delay = ``pdd_ms`` (INVITE received → first
provisional sent), ring time = ``ring_ms`` (first provisional → final response).

Example::

    with SippHotline(HotlineBehaviour(pdd_ms=300, ring_ms=1500)) as hotline:
        uri = hotline.uri          # "sip:hotline@127.0.0.1:<port>"
        ...place a call...
    hotline.exit_code              # 0 = SIPp saw every call go as scripted
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from probe.sim.ports import free_port

AUDIO_DIR = Path(str(resources.files("probe.sim") / "audio"))
GREETING_WAV = AUDIO_DIR / "greeting-ulaw.wav"  # espeak-ng, 8 kHz µ-law, 8.0 s
RINGBACK_WAV = AUDIO_DIR / "ringback-425-ulaw.wav"  # 425 Hz 1 s on / 4 s off (Europe)

REASONS = {
    180: "Ringing", 183: "Session Progress", 200: "OK", 401: "Unauthorized",
    403: "Forbidden", 404: "Not Found", 408: "Request Timeout", 480: "Temporarily Unavailable",
    484: "Address Incomplete", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 500: "Server Internal Error", 502: "Bad Gateway",
    503: "Service Unavailable", 600: "Busy Everywhere", 603: "Decline",
}

NEVER_ANSWER = 0  # ``final`` value: keep ringing until the caller cancels


@dataclass(frozen=True)
class HotlineBehaviour:
    pdd_ms: int = 200
    """INVITE received → first provisional response (the caller's post-dial delay)."""
    ring_ms: int = 1000
    """First provisional → final response."""
    provisional: int | None = 180
    """180 (ringing), 183 (session progress with early media), or None (final response at once)."""
    final: int = 200
    """200 answers; 4xx/5xx/6xx rejects; NEVER_ANSWER rings until the caller gives up (CANCEL)."""
    audio: Path | None = GREETING_WAV
    """µ-law WAV streamed after answer, looped; None answers with SDP but never sends RTP."""
    early_audio: Path | None = RINGBACK_WAV
    """µ-law WAV streamed as early media after a 183."""
    challenge: tuple[str, str] | None = None
    """(user, password): challenge the first INVITE (401), then require a valid digest."""
    hangup_after_ms: int | None = None
    """The hotline hangs up itself this long after answering; None waits for the caller's BYE."""
    dtmf_info: str | None = None
    """A DTMF digit the hotline requires after answer as a SIP INFO (application/dtmf-relay),
    else SIPp fails the call; its SDP then offers no telephone-event, so the caller cannot use
    RFC 4733.  One digit only: a caller sends the INFOs of several digits at once, faster than
    SIPp's sequential scenario can answer them.  None: no DTMF expected (RFC 4733 offered)."""


def scenario_xml(b: HotlineBehaviour, request_uri: str = "") -> str:
    """SIPp UAS scenario for one call following ``b``; ``request_uri`` is what callers dial."""
    remember = _REMEMBER_INVITE + (_REMEMBER_CONTACT if b.hangup_after_ms is not None else "")
    steps: list[str] = [f'<recv request="INVITE" crlf="true"><action>{remember}</action></recv>']
    if b.challenge:
        # SIPp 3.6's verifyauth computes the digest over a mangled URI, so the expected response
        # is computed here (RFC 2617 without qop) and matched exactly in the second INVITE.
        user, password = b.challenge
        nonce = secrets.token_hex(16)
        expected = digest_response(user, password, "hotline.test", nonce, "INVITE", request_uri)
        steps += [
            _response(401, extra='WWW-Authenticate: Digest realm="hotline.test", '
                                 f'nonce="{nonce}", algorithm=MD5'),
            '<recv request="ACK"/>',
            f'<recv request="INVITE"><action>{remember}<ereg regexp="response=.?{expected}" '
            'search_in="hdr" header="Authorization:" assign_to="authok"/></action></recv>',
            '<nop hide="true" test="authok" next="authorized"/>',
            _response(403),
            '<recv request="ACK" next="end"/>',
            '<label id="authorized"/>',
        ]
    steps.append(f'<pause milliseconds="{b.pdd_ms}"/>')
    if b.provisional == 183:
        steps.append(_response(183, sdp=True))
        if b.early_audio:
            steps.append(_rtp_stream(b.early_audio))
    elif b.provisional is not None:
        steps.append(_response(b.provisional))
    if b.final == NEVER_ANSWER:
        steps += [
            '<recv request="CANCEL"/>',
            _response(200, last=True),
            _response(487, tagged=b.provisional is not None),
            '<recv request="ACK"/>',
        ]
    else:
        steps.append(f'<pause milliseconds="{b.ring_ms}"/>')
        if b.final == 200:
            steps.append(_response(200, sdp=True))
            steps.append('<recv request="ACK"/>')
            if b.audio:
                steps.append(_rtp_stream(b.audio))
            elif b.provisional == 183 and b.early_audio:
                steps.append('<nop><action><exec rtp_stream="pause"/></action></nop>')
            if b.dtmf_info:
                steps += [_dtmf_info(b.dtmf_info), _response(200, last=True)]
            if b.hangup_after_ms is None:
                steps += ['<recv request="BYE"/>', _response(200, last=True)]
            else:
                steps += [f'<pause milliseconds="{b.hangup_after_ms}"/>', _BYE,
                          '<recv response="200"/>']
        else:
            steps += [_response(b.final, tagged=b.provisional is not None), '<recv request="ACK"/>']
    steps.append('<label id="end"/>')
    body = "\n  ".join(steps)
    if b.dtmf_info:
        body = body.replace(_TELEPHONE_EVENT, "").replace(" 0 101\n", " 0\n")
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n'
            f'<scenario name="hotline">\n  {body}\n</scenario>\n')


def _dtmf_info(digit: str) -> str:
    """Receive one SIP INFO and fail the call (SIPp exit code) unless it carries ``digit``."""
    if len(digit) != 1 or digit not in "0123456789*#ABCD":
        raise ValueError(f"dtmf_info must be one DTMF digit, got {digit!r}")
    return ('<recv request="INFO"><action><ereg regexp="Signal= *[' + digit + '][[:space:]]" '
            'search_in="body" check_it="true" assign_to="dtmfok"/></action></recv>'
            # SIPp refuses a variable used only once: this test just references it.
            '<nop hide="true" test="dtmfok" next="dtmfok"/><label id="dtmfok"/>')


# The INVITE's Via/From/CSeq are kept in variables so that responses to the INVITE sent after a
# CANCEL (487) still carry the INVITE's headers, not the CANCEL's.
_REMEMBER_INVITE = (
    '<ereg regexp=".*" search_in="hdr" header="Via:" assign_to="ivia"/>'
    '<ereg regexp=".*" search_in="hdr" header="From:" assign_to="ifrom"/>'
    '<ereg regexp=".*" search_in="hdr" header="To:" assign_to="ito"/>'
    '<ereg regexp=".*" search_in="hdr" header="CSeq:" assign_to="icseq"/>'
)
# Only when the hotline sends its own BYE: SIPp refuses a variable that is set and never used.
_REMEMBER_CONTACT = (
    '<ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="icontact"/>'
)
# SIPp reads only one <action> element per message: every ereg goes inside the same one.

_TELEPHONE_EVENT = "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\n"

_SDP = """v=0
o=hotline 1 1 IN IP[local_ip_type] [local_ip]
s=hotline
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [rtpstream_audio_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
"""

_BYE = """<send retrans="500"><![CDATA[
BYE [$icontact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From:[$ito];tag=hotline[call_number]
To:[$ifrom]
[last_Call-ID:]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>"""


def digest_response(user: str, password: str, realm: str, nonce: str, method: str,
                    uri: str) -> str:
    """RFC 2617 digest ``response`` (MD5, no qop): what a correct client must send."""
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    return hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()


def _response(code: int, *, sdp: bool = False, tagged: bool = True, last: bool = False,
              extra: str = "", contact: bool = True) -> str:
    """A response to the INVITE (or, with ``last``, to the request just received)."""
    if last:
        headers = "[last_Via:]\n[last_From:]\n[last_To:]\n[last_Call-ID:]\n[last_CSeq:]"
    else:
        to_tag = ";tag=hotline[call_number]" if tagged or code >= 200 else ""
        headers = f"Via:[$ivia]\nFrom:[$ifrom]\nTo:[$ito]{to_tag}\n[last_Call-ID:]\nCSeq:[$icseq]"
    lines = [f"SIP/2.0 {code} {REASONS.get(code, 'Response')}", headers]
    if contact:
        lines.append("Contact: <sip:hotline@[local_ip]:[local_port];transport=[transport]>")
    if extra:
        lines.append(extra)
    if sdp:
        lines += ["Content-Type: application/sdp", "Content-Length: [len]", "", _SDP]
    else:
        lines += ["Content-Length: 0", "", ""]
    return "<send><![CDATA[\n" + "\n".join(lines) + "]]></send>"


def _rtp_stream(wav: Path) -> str:
    # -1: loop for the whole call; payload type 0 = PCMU.  SIPp skips the RIFF header.
    return f'<nop><action><exec rtp_stream="{_attr(str(wav))},-1,0"/></action></nop>'


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


class SippHotline:
    """SIPp running one :class:`HotlineBehaviour` for ``calls`` calls on 127.0.0.1."""

    def __init__(self, behaviour: HotlineBehaviour, *, calls: int = 1, user: str = "hotline",
                 timeout_s: float = 60.0) -> None:
        self.behaviour = behaviour
        self.calls = calls
        self.user = user
        self.timeout_s = timeout_s
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.timed_out = False  # wait() had to stop SIPp: its exit code then proves nothing
        self._dir = Path(tempfile.mkdtemp(prefix="hotline-sipp-"))

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.port}"

    def start(self) -> SippHotline:
        sipp = shutil.which("sipp")
        if sipp is None:
            raise FileNotFoundError("sipp not found: install Debian package sip-tester")
        scenario = self._dir / "hotline.xml"
        self.port = free_port()
        scenario.write_text(self._scenario())
        media_port = free_port()
        cmd = [sipp, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port),
               "-mp", str(media_port), "-m", str(self.calls), "-nostdin",
               "-timeout", f"{int(self.timeout_s)}s", "-trace_err",
               "-error_file", str(self._dir / "errors.log"),
               "-trace_msg", "-message_file", str(self._dir / "messages.log")]
        self.process = subprocess.Popen(cmd, cwd=self._dir, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        _wait_udp_bound(self.port, self.process)
        return self

    def _scenario(self) -> str:
        return scenario_xml(self.behaviour, self.uri)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for SIPp to finish its calls; its exit code (0 = every call went as scripted).

        -1 when it had not finished within ``timeout``: it is then terminated (SIPp exits 0 on
        SIGTERM, which must not pass for success); its traces stay readable until :meth:`stop`."""
        assert self.process is not None
        try:
            self.exit_code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self._terminate()
        return -1 if self.timed_out or self.exit_code is None else self.exit_code

    def stop(self) -> None:
        self._terminate()
        if self.process:
            self.exit_code = None if self.timed_out else self.process.returncode
            if self.process.stderr:
                self.process.stderr.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def messages(self) -> str:
        """Every SIP message SIPp sent and received (for failing tests to show)."""
        log = self._dir / "messages.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def errors(self) -> str:
        log = self._dir / "errors.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def __enter__(self) -> SippHotline:
        try:
            return self.start()
        except BaseException:
            self.stop()  # __exit__ will not run: do not leak the process or the directory
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_udp_bound(port: int, process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Return once SIPp has bound its UDP port (so the first INVITE is not lost).

    Reads /proc/net/udp rather than probing with a bind of our own, which could steal the port.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"sipp exited at start ({process.returncode}): {err.strip()}")
        if port in _bound_udp_ports():
            return
        time.sleep(0.02)
    raise RuntimeError(f"sipp did not bind UDP port {port} within {timeout} s")


def _bound_udp_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                rows = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            local_address = row.split()[1]  # "0100007F:1F90"
            ports.add(int(local_address.rsplit(":", 1)[1], 16))
    return ports


def registrar_xml(user: str, password: str, registrar_uri: str, expires_s: int = 600) -> str:
    """SIPp registrar: challenge the first REGISTER (401), accept the one with the right digest
    (200, echoing the Contact), refuse a wrong one (403); then answer the un-REGISTER (200)."""
    nonce = secrets.token_hex(16)
    expected = digest_response(user, password, "hotline.test", nonce, "REGISTER", registrar_uri)
    remember = (_REMEMBER_INVITE + '<ereg regexp=".*" search_in="hdr" header="Contact:" '
                'assign_to="icontact"/>')
    steps = [
        f'<recv request="REGISTER"><action>{remember}</action></recv>',
        _response(401, extra='WWW-Authenticate: Digest realm="hotline.test", '
                             f'nonce="{nonce}", algorithm=MD5'),
        f'<recv request="REGISTER"><action>{remember}<ereg regexp="response=.?{expected}" '
        'search_in="hdr" header="Authorization:" assign_to="authok"/></action></recv>',
        '<nop hide="true" test="authok" next="registered"/>',
        _response(403),
        '<nop hide="true" next="end"/>',
        '<label id="registered"/>',
        _response(200, contact=False,
                  extra=f"Contact:[$icontact];expires={expires_s}\nExpires: {expires_s}"),
        '<recv request="REGISTER" timeout="60000"/>',  # the probe un-registers when it stops
        _response(200, last=True, contact=False, extra="Expires: 0"),
        '<label id="end"/>',
    ]
    body = "\n  ".join(steps)
    return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n'
            f'<scenario name="registrar">\n  {body}\n</scenario>\n')


class SippRegistrar(SippHotline):
    """SIPp as the probe's registrar on 127.0.0.1 (one registration, then its removal)."""

    def __init__(self, user: str, password: str, *, timeout_s: float = 60.0) -> None:
        super().__init__(HotlineBehaviour(), user=user, timeout_s=timeout_s)
        self.password = password

    @property
    def registrar_uri(self) -> str:
        return f"sip:127.0.0.1:{self.port}"

    def _scenario(self) -> str:
        return registrar_xml(self.user, self.password, self.registrar_uri)
