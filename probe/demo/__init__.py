"""``make demo``: the probe against local stand-ins (``script``), a fleet of simulated probes
feeding the ops service (``fleet``), and the board on mock pins (``board``)."""
