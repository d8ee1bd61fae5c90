"""hotline-probe: tells whether a customer hotline works right now, and if not, why."""

__version__ = "0.1.0"
