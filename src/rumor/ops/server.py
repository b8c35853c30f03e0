"""The operations endpoint of a peer (aiohttp).

    GET  /healthz     200 {"status": "OK"} or 503 with the failed checks
    GET  /metrics     Prometheus text exposition
    GET  /api/status  the peer's view as JSON (identity, channels, heights, leader, membership)
    GET  /logspec     the current log specification
    PUT  /logspec     {"spec": "debug"} or {"spec": "rumor.comm=debug:info"} changes log levels at run time
                      (an admin call, see below)
    POST /channels    body: a channel's genesis block (raw bytes); the peer joins it (an admin call;
                      ``rumor channel join``). 200 {"channel": name}, 400 {"error": why}
    GET  /            the live dashboard of this peer's view (membership graph, heights, traffic, events),
                      fed over the WebSocket GET /ws; GET /api/dashboard is one snapshot of it as JSON

The log specification follows Fabric's: colon-separated terms, each either a
level (the default for every rumor logger) or ``logger[,logger]=level``.

Calls that change anything are *admin calls*: they need either a TLS client certificate that ``admin_check``
accepts (the peer wires it to "an admin of this peer's own org") or, when ``admin_token`` is set, the header
``Authorization: Bearer <token>``; without either they get 401 (no credentials) or 403 (wrong ones). Over TLS
(``ssl_context``) the server asks for a client certificate, requiring one when so configured. Request bodies are
bounded (``max_body`` bytes) and nesting deeper than JSON's recursion limit is a 400, never a crash.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from rumor.ops.dashboard import Dashboard
from rumor.ops.metrics import PeerMetrics

StatusProvider = Callable[[], Mapping[str, Any]]
AdminCheck = Callable[[bytes], str | None]
"""Given a client certificate (DER), None when it belongs to an admin, else why not."""
MAX_BODY = 64 * 1024
MAX_BLOCK_BODY = 16 * 1024 * 1024
"""Largest genesis block POST /channels reads (bytes); a config block holding many orgs' certificates is ~100 KB."""
log = logging.getLogger("rumor.ops")
HealthCheck = Callable[[], Awaitable[str | None] | str | None]
"""A named check returns None when healthy, else the reason."""

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "critical": logging.CRITICAL,
}


class LogSpecError(ValueError):
    """A log specification that does not parse."""


def parse_logspec(spec: str) -> tuple[int, dict[str, int]]:
    """(default level, {logger: level}) of a Fabric-style log specification."""
    default: int | None = None
    overrides: dict[str, int] = {}
    for term in filter(None, (t.strip() for t in spec.split(":"))):
        if "=" in term:
            names, _, level_name = term.partition("=")
            level = LEVELS.get(level_name.strip().lower())
            if level is None or not names.strip():
                raise LogSpecError(f"bad term {term!r}: expected logger=level with level one of {sorted(LEVELS)}")
            for name in names.split(","):
                overrides[name.strip()] = level
        else:
            level = LEVELS.get(term.lower())
            if level is None:
                raise LogSpecError(f"unknown level {term!r}: expected one of {sorted(LEVELS)}")
            default = level
    if default is None and not overrides:
        raise LogSpecError("empty log specification")
    return (default if default is not None else logging.getLogger("rumor").getEffectiveLevel()), overrides


def apply_logspec(spec: str, previous: Mapping[str, int] | None = None) -> dict[str, int]:
    """Set the levels of ``spec`` on the rumor loggers; returns the overrides now in force."""
    default, overrides = parse_logspec(spec)
    for name in previous or {}:
        if name not in overrides:
            logging.getLogger(name).setLevel(logging.NOTSET)
    logging.getLogger("rumor").setLevel(default)
    for name, level in overrides.items():
        logging.getLogger(name).setLevel(level)
    return overrides


class OperationsServer:
    """Serves the operations endpoint; ``start`` binds, ``stop`` closes every connection."""

    def __init__(
        self,
        listen_address: str,
        status: StatusProvider,
        metrics: PeerMetrics,
        health_checks: Mapping[str, HealthCheck] | None = None,
        *,
        dashboard: bool = True,
        dashboard_interval: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
        admin_token: str = "",
        admin_check: AdminCheck | None = None,
        max_body: int = MAX_BODY,
        join_channel: Callable[[bytes], Awaitable[str]] | None = None,
    ) -> None:
        self.ssl_context = ssl_context
        self.admin_token = admin_token
        self.admin_check = admin_check
        self.join_channel = join_channel
        host, _, port = listen_address.rpartition(":")
        self.host = host or "127.0.0.1"
        self.requested_port = int(port)
        self.status = status
        self.metrics = metrics
        self.health_checks = dict(health_checks or {})
        self.logspec = "info"
        self._overrides: dict[str, int] = {}
        self.app = web.Application(client_max_size=max_body)
        self.app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/metrics", self._metrics),
                web.get("/api/status", self._status),
                web.get("/logspec", self._get_logspec),
                web.put("/logspec", self._put_logspec),
                web.post("/channels", self._post_channel),
            ]
        )
        self.dashboard: Dashboard | None = None
        if dashboard:
            # The peer's own view; it polls only while a page is open.
            self.dashboard = Dashboard(
                self._own_status,
                view="peer",
                title="rumor peer",
                interval=dashboard_interval,
                only_when_watched=True,
            )
            self.dashboard.add_routes(self.app)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if self.dashboard is not None:
            self.dashboard.start()

    async def stop(self) -> None:
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _own_status(self) -> dict[str, Mapping[str, Any] | None]:
        status = dict(self.status())
        if self.dashboard is not None and status.get("peer_id"):
            self.dashboard.model.title = f"peer {status['peer_id']}"
        return {str(status.get("peer_id") or "self"): status}

    async def _healthz(self, _request: web.Request) -> web.Response:
        failed = []
        for name, check in self.health_checks.items():
            result = check()
            reason = await result if isinstance(result, Awaitable) else result
            if reason:
                failed.append({"component": name, "reason": reason})
        if failed:
            return web.json_response({"status": "Service Unavailable", "failed_checks": failed}, status=503)
        return web.json_response({"status": "OK"})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(dict(self.status()))

    async def _get_logspec(self, _request: web.Request) -> web.Response:
        return web.json_response({"spec": self.logspec})

    def _refuse_non_admin(self, request: web.Request) -> web.Response | None:
        """None when the request may change things (see the module doc), else the answer that refuses it."""
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
        cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if cert and self.admin_check is not None:
            problem = self.admin_check(cert)
            if problem is None:
                return None
            log.warning("admin call %s %s refused: %s", request.method, request.path, problem)
            return web.json_response({"error": f"not an admin: {problem}"}, status=403)
        header = request.headers.get("Authorization", "")
        if self.admin_token and header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.admin_token.encode()):
                return None
            log.warning("admin call %s %s refused: wrong token", request.method, request.path)
            return web.json_response({"error": "wrong admin token"}, status=403)
        how = []
        if self.admin_check is not None and self.ssl_context is not None:
            how.append("a TLS client certificate of an admin")
        if self.admin_token:
            how.append("Authorization: Bearer <operations.adminToken>")
        wanted = " or ".join(how) or "operations.adminToken set in the peer's configuration (or operations.tls)"
        return web.json_response({"error": f"admin call: needs {wanted}"}, status=401)

    async def _post_channel(self, request: web.Request) -> web.Response:
        """Join the channel whose genesis block is the body (raw ``common.Block`` bytes): an admin call."""
        refused = self._refuse_non_admin(request)
        if refused is not None:
            return refused
        if self.join_channel is None:
            return web.json_response({"error": "this server joins no channels"}, status=404)
        # Read from the stream ourselves: a genesis block may exceed the JSON bodies' limit, not this one.
        block = await request.content.read(MAX_BLOCK_BODY + 1)
        if len(block) > MAX_BLOCK_BODY:
            return web.json_response({"error": f"a genesis block is at most {MAX_BLOCK_BODY} bytes"}, status=413)
        try:
            channel = await self.join_channel(block)
        except Exception as exc:  # the peer's refusal (PeerError) or any other: the caller gets why
            return web.json_response({"error": " ".join(str(exc).splitlines())}, status=400)
        log.info("admin call: joined channel %s", channel)
        return web.json_response({"channel": channel})

    async def _put_logspec(self, request: web.Request) -> web.Response:
        refused = self._refuse_non_admin(request)
        if refused is not None:
            return refused
        try:
            body = json.loads(await request.text())
            if not isinstance(body, dict):
                raise TypeError("the body must be a JSON object")
            spec = body["spec"]
            if not isinstance(spec, str):
                raise TypeError("spec must be a string")
            self._overrides = apply_logspec(spec, self._overrides)
        except web.HTTPRequestEntityTooLarge:
            raise
        except RecursionError:
            return web.json_response({"error": "bad log specification: JSON nested too deeply"}, status=400)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad log specification: {exc}"}, status=400)
        log.info("log specification set to %r", spec)
        self.logspec = spec
        return web.json_response({"spec": spec})
