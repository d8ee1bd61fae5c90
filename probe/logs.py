"""Structured logs on stdout for journald: one JSON object per line (or plain text on a tty).

Secrets never reach a log line: configuration objects hide them in their repr, and nothing logs a
password or key; the formatter adds no environment or config dump of its own.
"""

from __future__ import annotations

import json
import logging
import sys

from probe.clock import rfc3339

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": rfc3339(seconds=record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "thread": record.threadName,
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def configure_logging(fmt: str = "json", *, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("probe.mqtt.paho").setLevel(logging.INFO if not verbose else logging.DEBUG)
