"""What a dialer is to the rest of the probe: the one interface that ``run_call``
(probe/dial/runner.py), the daemon's channel workers (probe/daemon/run.py) and ``probe call``
use, and that :class:`~probe.dial.sip.SipDialer` and :class:`~probe.dial.modem.ModemDialer`
both provide.  Nothing outside a dialer asks which kind it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from probe.config.model import Expectations, Target
from probe.results.timeline import CallRecord, Event


class Dialer(Protocol):
    """Places test calls on one line, one at a time, from the thread that owns it."""

    @property
    def last_beat(self) -> float:
        """``time.monotonic()`` of the owning thread's last sign of life (the watchdog)."""
        ...

    def destination(self, target: Target) -> str | None:
        """What this dialer dials for ``target`` (the SIP URI, the number); None when the
        target has none for this line."""
        ...

    def call(self, destination: str, expect: Expectations, /, *, target: str, audio_path: Path,
             dtmf: str | None = ..., dtmf_after_s: float = ...,
             on_event: Callable[[Event], None] | None = ...) -> CallRecord:
        """Place one call and live it as a caller would; the record of what happened."""
        ...

    def facts(self) -> dict[str, Any]:
        """What the dialer knows of its line now, for the health record and the diagnosis
        (``registration`` for SIP, ``modem`` for a modem).  Plain data, any thread."""
        ...

    def abort(self) -> None:
        """Hang up the call in progress as soon as possible (any thread)."""
        ...

    def close(self) -> None:
        """Release the line (idempotent), from the owning thread."""
        ...


if TYPE_CHECKING:  # mypy proves both dialers are Dialers: a method missing or changed fails here
    from probe.dial.modem import ModemDialer
    from probe.dial.sip import SipDialer

    _sip: type[Dialer] = SipDialer
    _modem: type[Dialer] = ModemDialer
