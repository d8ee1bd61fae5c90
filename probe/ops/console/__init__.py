"""The ops console: server-rendered pages over the ops database, in English and Russian.

``console_router(config, sessions)`` gives a FastAPI router to include in the API's app
(``app.include_router(console_router(config, sessions))``)::

    GET  /login, POST /login, POST /logout     the form login (the API's hp_session cookie)
    GET  /                                     fleet: status grid by round, filters
    GET  /fleet/grid                           the grid alone (the page re-fetches it live)
    GET  /events                               server-sent events: results/incidents changed
    GET  /incidents, /incidents/{id}           open and past incidents; one with its timeline
    POST /incidents/{id}/ack|resolve|comment   operator+, CSRF-checked, audited
    POST /maintenance                          operator+: a maintenance window
    GET  /targets/{name}                       availability, timings, MOS, outcomes
    GET  /targets/{name}/sla, /sla.csv         the SLA report: printable page and CSV
    GET  /probes/{id}                          presence, health, results, "run now"
    GET  /calls/{result_id}                    ladder, recording (waveform, spectrogram), values
    GET  /static/{name}                        the console's CSS and JS (shipped, no CDN)

Everything the pages show comes from the database at request time, so any instance serves
any page.  Viewers see everything; what changes things is shown to operators and admins only
and checked again (role and CSRF token) when it is posted.
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session, sessionmaker

from probe.ops.config import OpsConfig
from probe.ops.console.pages import add_fleet_routes, add_incident_routes, add_login_routes
from probe.ops.console.views import (
    add_call_routes,
    add_probe_routes,
    add_static_routes,
    add_target_routes,
)
from probe.ops.console.web import Web

__all__ = ["console_router"]


def console_router(config: OpsConfig, sessions: sessionmaker[Session]) -> APIRouter:
    web = Web(config, sessions)
    router = APIRouter(include_in_schema=False)  # pages, not API: kept out of the OpenAPI
    add_static_routes(router, web)
    add_login_routes(router, web)
    add_fleet_routes(router, web)
    add_incident_routes(router, web)
    add_target_routes(router, web)
    add_probe_routes(router, web)
    add_call_routes(router, web)
    return router
