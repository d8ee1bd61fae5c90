"""The AT protocol layer: framing, final result codes, URCs, modem profiles.  No hardware inside.

The transport (anything with pyserial's ``read``/``write``/``in_waiting``/``close``) is injected;
:func:`probe.at.port.open_url` opens one from a pyserial URL (``/dev/serial/by-id/...``,
``rfc2217://host:port``, ``loop://``, ``spy:///dev/ttyUSB2``).
"""
