"""One error root for the probe; each error is also the builtin callers already understand."""


class ProbeError(Exception):
    """Root of every error the probe raises on purpose."""


class ConfigError(ProbeError, ValueError):
    """The configuration is invalid.  ``problems`` lists every (key path, reason) found."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(f"{prefix}{key}: {reason}" for key, reason in problems))


class DialerError(ProbeError, RuntimeError):
    """The dialer itself failed (not the hotline): the SIP stack or the modem would not work."""
