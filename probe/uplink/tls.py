"""TLS to the broker: TLS 1.2 or newer, CA-verified, hostname-checked, with the probe's own
client certificate.  There is deliberately no way to turn verification off."""

from __future__ import annotations

import ssl

from probe.config.model import MqttConfig


def tls_context(mqtt: MqttConfig) -> ssl.SSLContext | None:
    tls = getattr(mqtt, "tls", None)
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(tls.ca_file))
    context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    return context
