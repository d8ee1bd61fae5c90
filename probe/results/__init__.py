"""From what a dialer recorded to what is sent: the call timeline (``timeline``), outcome and
timings (``measure``), the result document and its schema (``document``), and which calls'
recordings go to ops (``recording``).  Plain functions: no network, no modem, no clock."""
