"""The probe's configuration: one TOML file to frozen, validated objects (``model``), and the
secrets it names, kept out of logs and reprs (``secrets``)."""
