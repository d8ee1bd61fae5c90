"""``probe run``: the daemon's threads, health and reload (``run``), when each target is due
(``schedule``), the local control socket (``control``), sd_notify (``systemd``) and the JSON
logs with journald priorities (``logs``)."""
