"""Central ops: the service that turns every probe's results into fleet status, cross-site
incidents and notifications (``probe ops serve -c ops.toml``).

It lives in this package, beside the probe, because it is built on the probe's own contracts:
the result JSON Schema (``probe/schema/result-v1.json``), the cause catalogue and its
translations (``probe.diagnosis.rules``, ``probe.diagnosis.i18n``) and the MQTT topic tree
(``probe.uplink.mqtt``).  Its
extra dependencies (SQLAlchemy, Alembic, psycopg, FastAPI, uvicorn) come with the ``ops`` extra,
so a probe on a Pi installs none of them.

Rooms: ``config`` (ops.toml), ``db`` (models, engine, migrations), ``ingest`` (MQTT -> database),
``correlate`` (pure: a round of results -> judgements), ``incidents`` (judgements -> incident
lifecycle), ``notify`` (the durable notification queue and its receivers), ``api`` (HTTP JSON +
OpenAPI), ``metrics`` (Prometheus), ``console`` (the web pages), ``service`` (the wiring).
"""
