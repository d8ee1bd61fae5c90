"""The probe board behind thin adapters: the analog line through an MCP3008 (``line``), the
status LED, buzzer and silence button (``indicator``), and the pins and their conflicts
(``pins``).  A missing or faulty board never stops the daemon."""
