"""The local application's side of Bitrix24 (application mode): its installation and what it
registers on the portal.

Installation. A portal installing a local application posts ONAPPINSTALL (form-encoded
``auth[access_token]``, ``auth[refresh_token]``, ``auth[expires_in]``, ``auth[application_token]``,
``auth[domain]``, ``auth[member_id]``) to the application's "initial installation path" — our
events route. We keep its tokens and pin its application_token (state.py, never purged), so no
refresh token has to be pasted into config.yaml. Who may install:

- ``auth[domain]`` must be our portal (``app.portal_url``'s host) and ``auth[member_id]`` our
  portal's (``app.member_id`` if set, else the one pinned by the first installation);
- its application_token equal to the one we know (configured or pinned: compared in constant
  time) is enough; otherwise — the first installation, or a reinstallation, which brings a new
  application_token — the access token it carries must work on our portal for our application
  (``app.info``): only the portal can hand out such a token (b24restdocs, safe-event-handlers).
  Such a proof is made at most once per PROOF_INTERVAL (429 otherwise).

Registration. Bitrix24 drops an application's event handlers when it is reinstalled or updated,
so after every installation (and on start) a supervised task binds our handler
(``public_url`` + ``events_path``) to ONEXTERNALCALLSTART, ONUSERADD and ONUSERUPDATE with
``event.bind``, and adds each of our numbers with ``telephony.externalLine.add`` — reading
``event.get`` / ``telephony.externalLine.get`` first, so nothing is added twice. It retries with
the supervisor's backoff until it is done.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Mapping
from typing import Any

import structlog

from bridge.errors import BadRequest, DeliveryError
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.events import USER_EVENTS
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.integrations.bitrix24.state import AppInstall, OAuthToken, load_install, save_install
from bridge.outbox.state import StateStore

log = structlog.get_logger("bridge.bitrix24")

EVENTS = ("ONEXTERNALCALLSTART", *USER_EVENTS)
# Bitrix24's REST event list has no ONUSERUPDATE (SPECS.md): a refusal to bind it is expected;
# the periodic user.get sync covers it.
OPTIONAL_EVENTS = frozenset({"ONUSERUPDATE"})
PROOF_INTERVAL = 5.0  # forged installations cannot make us spend the portal's rate limit
_TOKEN = re.compile(r"[\w.\-]{8,256}")


def _field(form: Mapping[str, str], name: str, pattern: re.Pattern[str] = _TOKEN) -> str:
    value = form.get(f"auth[{name}]", "")
    if not pattern.fullmatch(value):
        raise BadRequest(400, "bad-field", f"auth[{name}] is missing or malformed")
    return value


class Application:
    """ONAPPINSTALL, the application_token events must carry, and the portal registrations."""

    def __init__(
        self, settings: Bitrix24Settings, client: BitrixClient, state: StateStore, lines: Mapping[str, str]
    ) -> None:
        self.s = settings
        self.client = client
        self._state = state
        self.lines = dict(lines)  # our numbers (DID -> name) for telephony.externalLine.add
        self._installed = asyncio.Event()
        self._last_proof = -PROOF_INTERVAL
        self.registered = False

    def expected_token(self) -> str:
        """The application_token events must carry: configured, or pinned by ONAPPINSTALL."""
        if self.s.application_token:
            return self.s.application_token
        install = load_install(self._state)
        return install.application_token if install else ""

    # -- ONAPPINSTALL ----------------------------------------------------------------------------
    async def accept_install(self, form: Mapping[str, str]) -> str:
        if not self.s.app_mode:
            raise BadRequest(
                403, "not-configured", "ONAPPINSTALL needs the application mode (sinks.bitrix24.app)"
            )
        access, refresh = _field(form, "access_token"), _field(form, "refresh_token")
        app_token = _field(form, "application_token")
        domain = _field(form, "domain", re.compile(r"[\w.\-:]{1,253}")).lower()
        member_id = _field(form, "member_id", re.compile(r"[\w\-]{1,64}"))
        expires_in = form.get("auth[expires_in]", "3600")
        if domain != self.s.app.domain:
            raise BadRequest(403, "wrong-portal", f"auth[domain] is not {self.s.app.domain}")
        pinned = load_install(self._state)
        member = self.s.app.member_id or (pinned.member_id if pinned else "")
        if member and not hmac.compare_digest(member_id.encode(), member.encode()):
            raise BadRequest(403, "wrong-portal", "auth[member_id] is not our portal's")
        known = self.expected_token()
        if not (known and hmac.compare_digest(app_token.encode(), known.encode())):
            now = time.monotonic()
            if now - self._last_proof < PROOF_INTERVAL:  # each proof costs a request to the portal
                raise BadRequest(429, "too-many-installs", "an installation was checked moments ago")
            self._last_proof = now
            try:
                genuine = await self.client.token_works(access)
            except DeliveryError as e:
                log.error("bitrix24.install_unverified", error=str(e))
                raise BadRequest(503, "portal-unreachable", "cannot verify the installation now") from None
            if not genuine:
                raise BadRequest(
                    401, "bad-token", "the installation's access token is not valid on our portal"
                )
        expires = time.time() + (float(expires_in) if expires_in.isdigit() else 3600.0)
        save_install(
            self._state,
            AppInstall(app_token, member_id, domain, time.time()),
            OAuthToken(access, refresh, expires),
        )
        log.info("bitrix24.app_installed", domain=domain, reinstalled=pinned is not None)
        self._installed.set()
        return "installed"

    # -- event.bind and external lines -----------------------------------------------------------
    async def run(self) -> None:
        """Register on the portal now (if installed) and again after every installation."""
        while True:
            self._installed.clear()
            if self.client.has_credentials():
                await self.register()
            else:
                log.warning("bitrix24.app_not_installed", handler=self.s.handler_url)
            await self._installed.wait()

    async def register(self) -> None:
        """Bind our handler to the events, add our numbers as external lines; raise to be retried."""
        handler = self.s.handler_url
        now = await self.client.batch(
            {"events": ("event.get", {}), "lines": ("telephony.externalLine.get", {})}, halt=False
        )
        for key, err in now.errors.items():
            self.client.raise_for(err.error, f"{key}: {err.description}")
        bound = {
            (str(e.get("event", "")).upper(), str(e.get("handler", "")))
            for e in _rows(now.results.get("events"))
        }
        have_lines = {str(line.get("NUMBER", "")) for line in _rows(now.results.get("lines"))}
        todo: dict[str, tuple[str, dict[str, Any]]] = {}
        for event in EVENTS if handler else ():  # without public_url: lines only (check says so)
            if (event, handler) not in bound:
                todo[f"bind_{event}"] = ("event.bind", {"event": event, "handler": handler})
        for number, name in self.lines.items():
            if number not in have_lines:
                params = {"NUMBER": number, "NAME": name or number}
                todo[f"line_{number}"] = ("telephony.externalLine.add", params)
        if todo:
            done = await self.client.batch(todo, halt=False)
            for key, err in done.errors.items():
                if key.removeprefix("bind_") in OPTIONAL_EVENTS:
                    log.info("bitrix24.event_not_bindable", bitrix_event=key[5:], error=err.description)
                    continue
                self.client.raise_for(err.error, f"{todo[key][0]} ({key}): {err.description}")
        self.registered = True
        log.info("bitrix24.app_registered", handler=handler, added=sorted(todo), lines=sorted(self.lines))


def _rows(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []
