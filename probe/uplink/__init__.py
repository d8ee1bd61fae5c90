"""Everything between a result and the central broker: the paho client (``mqtt``, the only
module that talks to paho), the durable outbox and its forwarder, remote commands, TLS, and
Home Assistant discovery."""
