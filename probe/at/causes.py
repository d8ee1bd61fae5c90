"""Call end causes: 3GPP TS 24.008 10.5.4.11 / ITU-T Q.850 cause values, as modems report them
in ``AT+CEER`` (number or text, by vendor) and Huawei ``^CEND``.

:func:`parse_ceer` accepts the shapes seen in the field::

    +CEER: 17                                  (numeric)
    +CEER: Normal call clearing                (SIMCom text)
    +CEER: "CC INFO","User busy"               (Quectel)
    +CEER: No cause information available       (nothing to say)
"""

from __future__ import annotations

import re

CAUSES: dict[int, str] = {
    1: "Unassigned (unallocated) number",
    3: "No route to destination",
    6: "Channel unacceptable",
    8: "Operator determined barring",
    16: "Normal call clearing",
    17: "User busy",
    18: "No user responding",
    19: "User alerting, no answer",
    21: "Call rejected",
    22: "Number changed",
    25: "Pre-emption",
    26: "Non-selected user clearing",
    27: "Destination out of order",
    28: "Invalid number format (incomplete number)",
    29: "Facility rejected",
    31: "Normal, unspecified",
    34: "No circuit/channel available",
    38: "Network out of order",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    43: "Access information discarded",
    44: "Requested circuit/channel not available",
    47: "Resources unavailable, unspecified",
    49: "Quality of service unavailable",
    50: "Requested facility not subscribed",
    55: "Incoming calls barred within the CUG",
    57: "Bearer capability not authorized",
    58: "Bearer capability not presently available",
    63: "Service or option not available, unspecified",
    65: "Bearer service not implemented",
    68: "ACM equal to or greater than ACMmax",
    69: "Requested facility not implemented",
    79: "Service or option not implemented, unspecified",
    88: "Incompatible destination",
    102: "Recovery on timer expiry",
    111: "Protocol error, unspecified",
    127: "Interworking, unspecified",
}

UNASSIGNED = {1, 3, 22, 28}
BUSY = {17}
NO_ANSWER = {18, 19}
REJECTED = {8, 21, 29, 50, 55, 57, 88}
CONGESTION = {34, 38, 41, 42, 44, 47, 49, 58}
NORMAL = {16, 31}



def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


_BY_TEXT = {_norm(text): code for code, text in CAUSES.items()}
_BY_TEXT.update({"unassigned number": 1, "unallocated number": 1, "user busy": 17,
                 "no answer": 19, "user alerting no answer": 19, "normal clearing": 16,
                 "normal unspecified": 31, "no circuit channel available": 34,
                 "switching equipment congestion": 42, "call rejected": 21,
                 "network out of order": 38, "temporary failure": 41})


def cause_text(code: int | None) -> str | None:
    return CAUSES.get(code) if code is not None else None


def parse_ceer(lines: list[str]) -> tuple[int | None, str | None]:
    """(cause number, text) from an ``AT+CEER`` answer; (None, text) when only text is known."""
    for line in lines:
        body = line.split(":", 1)[1] if line.upper().startswith("+CEER") else line
        body = body.strip()
        if not body:
            continue
        numbers = re.findall(r"(?<![\w.])(\d{1,3})(?![\w.])", body)
        for number in numbers:
            if int(number) in CAUSES:
                return int(number), CAUSES[int(number)]
        parts = [p.strip().strip('"') for p in body.split(",")]
        for part in reversed(parts):
            key = _norm(part)
            if key in _BY_TEXT:
                return _BY_TEXT[key], CAUSES.get(_BY_TEXT[key], part)
        return None, parts[-1] or None
    return None, None
