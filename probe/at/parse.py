"""Pure parsers for the radio and SIM facts a result carries (3GPP TS 27.007 shapes).

>>> csq_dbm("20,99")
-73
>>> registration("0,5")
5
>>> mask_identity("358240051111110")
'35824005******0'
"""

from __future__ import annotations

import re

from probe.at.port import fields

REG_STATES = {0: "not_registered", 1: "home", 2: "searching", 3: "denied", 4: "unknown",
              5: "roaming", 6: "home_sms_only", 7: "roaming_sms_only", 8: "emergency_only",
              9: "home_csfb_not_preferred", 10: "roaming_csfb_not_preferred"}
REGISTERED = {1, 5, 6, 7, 9, 10}
# +COPS <AcT> (27.007 7.3)
ACCESS_TECH = {0: "GSM", 1: "GSM compact", 2: "UTRAN", 3: "GSM/EGPRS", 4: "UTRAN/HSDPA",
               5: "UTRAN/HSUPA", 6: "UTRAN/HSPA", 7: "E-UTRAN", 8: "EC-GSM-IoT",
               9: "E-UTRAN NB-S1", 10: "E-UTRA-5GCN", 11: "NR-5GCN", 12: "NG-RAN",
               13: "E-UTRA-NR"}


def csq_dbm(payload: str) -> int | None:
    """``+CSQ: <rssi>,<ber>`` -> dBm: 0 -> -113, 1 -> -111, 2..30 -> -109..-53, 31 -> -51;
    99 (unknown) -> None."""
    values = fields(payload)
    rssi = values[0] if values else None
    if not isinstance(rssi, int) or not 0 <= rssi <= 31:
        return None
    return -113 + 2 * rssi


def csq_ber(payload: str) -> int | None:
    values = fields(payload)
    ber = values[1] if len(values) > 1 else None
    return ber if isinstance(ber, int) and 0 <= ber <= 7 else None


def cesq(payload: str) -> tuple[float | None, float | None]:
    """``+CESQ: rxlev,ber,rscp,ecno,rsrq,rsrp`` -> (RSRP dBm, RSRQ dB); 255 = unknown.

    RSRP index 0..97 -> -140..-44 dBm (index - 141); RSRQ 0..34 -> -19.5..-3 dB."""
    values = fields(payload)
    if len(values) < 6:
        return None, None
    rsrq, rsrp = values[4], values[5]
    rsrp_dbm = float(rsrp - 141) if isinstance(rsrp, int) and 0 <= rsrp <= 97 else None
    rsrq_db = (rsrq / 2 - 20.0) if isinstance(rsrq, int) and 0 <= rsrq <= 34 else None
    return rsrp_dbm, rsrq_db


def registration(payload: str) -> int | None:
    """The <stat> of a ``+CREG?``-style response ``<n>,<stat>[,...]``."""
    values = fields(payload)
    stat = values[1] if len(values) > 1 else None
    return stat if isinstance(stat, int) else None


def cops(payload: str) -> tuple[str | None, str | None]:
    """``+COPS: <mode>[,<format>,<oper>[,<AcT>]]`` -> (operator, access technology)."""
    values = fields(payload)
    operator = values[2] if len(values) > 2 and isinstance(values[2], str | int) else None
    act = values[3] if len(values) > 3 else None
    return (str(operator) if operator not in (None, "") else None,
            ACCESS_TECH.get(act) if isinstance(act, int) else None)


def cpin(payload: str | None) -> str | None:
    return payload.strip().strip('"') if payload else None


_DIGITS = re.compile(r"\d{6,20}")


def identity_digits(lines: list[str]) -> str | None:
    """The first all-digit token (IMEI 15, IMSI up to 15) in a ``+CGSN``/``+CIMI`` answer."""
    for text in lines:
        token = text.split(":", 1)[-1].strip().strip('"')
        if _DIGITS.fullmatch(token):
            return token
    return None


def mask_identity(digits: str | None) -> str | None:
    """IMEI/IMSI for publication: the first 8 digits (IMEI type allocation code; IMSI's MCC,
    MNC and a little more: which operator and model, not which device) and the last one.

    The full value never leaves the probe.
    """
    if not digits:
        return None
    if len(digits) <= 9:
        return "*" * len(digits)
    return digits[:8] + "*" * (len(digits) - 9) + digits[-1]
