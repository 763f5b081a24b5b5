"""Who should answer this caller first: the client's responsible manager in the CRM, else the
employee who last talked to the number, else nobody — decided fast enough never to hold a call.

The CRM is reached only through the ``ResponsibleLookup`` port (an integration gives one in its
Parts); its answers are cached per number. A warm cache answers at once (a stale entry is served
and refreshed in the background); a cold one waits at most ``agi.budget_ms`` for the CRM and then
answers without it, while the lookup goes on in the background to fill the cache. Nothing here
raises to the caller: a dead CRM or a crash in a lookup is an empty route.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from bridge.calls.records import CallRecord, Event
from bridge.config import AgiConfig
from bridge.directory import Directory
from bridge.pbx.route_history import RouteHistory

log = structlog.get_logger("bridge.agi")

CACHE_FRESH = 600.0  # a CRM answer younger than this is used as is
CACHE_FRESH_UNKNOWN = 60.0  # "the CRM does not know this number" is re-checked sooner
CACHE_MAX_AGE = 86400.0  # older than this: as good as no entry (cold)
CACHE_SIZE = 50_000  # numbers kept; the least recently fetched go first
MAX_INFLIGHT = 64  # CRM lookups at once; beyond it a cold call does not wait for the CRM at all
LOOKUP_TIMEOUT = 10.0  # a background lookup gives up after this long
ROUTED_KEEP_AFTER_END = 300.0  # the route stays for records that follow the END (NOTIFY_RECORD)

EXTENSION = re.compile(r"^[0-9]{1,15}$")


@dataclass(frozen=True)
class CrmMatch:
    """What the CRM says about a number: the user responsible for the client, and their name."""

    owner: str  # the CRM user id (Bitrix24: ASSIGNED_BY_ID); "" when nobody is
    name: str = ""  # the client's name in the CRM
    entity: str = ""  # which CRM entity, for logs ("CONTACT 12")


class ResponsibleLookup(Protocol):
    """The port a CRM integration implements (bridge/integrations/bitrix24/crm_lookup.py)."""

    name: str  # route_source in the records when this CRM chose the employee

    async def lookup(self, number: str) -> CrmMatch | None:
        """The CRM's entity for ``number`` (7XXXXXXXXXX); None when it knows no such number.
        Raises when the CRM cannot be asked (the router counts it and routes without it)."""
        ...


@dataclass(frozen=True)
class Route:
    extension: str = ""  # whom to ring first; "" = nobody in particular
    caller_name: str = ""  # the client's name, shown on the handset; "" = unknown
    source: str = ""  # "bitrix24" (the CRM port's name), "history", or ""


@dataclass
class RouterStats:
    requests: int = 0
    routed: int = 0  # answers naming an extension
    from_crm: int = 0
    from_history: int = 0
    cache_hits: int = 0
    fallbacks: int = 0  # cold cache and the CRM gave no answer in time: routed without it
    crm_errors: int = 0  # lookups that failed (dead CRM, refused, crashed)
    errors: int = 0  # crashes in routing itself (answered with an empty route)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Routed:
    route: Route
    expires: float


@dataclass
class Router:
    settings: AgiConfig
    directory: Directory
    history: RouteHistory
    crm: ResponsibleLookup | None = None
    clock: Callable[[], float] = time.monotonic
    max_call_age: float = 14400.0
    stats: RouterStats = field(default_factory=RouterStats)

    def __post_init__(self) -> None:
        self._cache: OrderedDict[str, tuple[float, CrmMatch | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[tuple[bool, CrmMatch | None]]] = {}
        self._routed: OrderedDict[str, _Routed] = OrderedDict()  # oldest first

    # -- the answer to one AGI request ---------------------------------------------------------
    async def route(self, number: str, call_id: str = "", spent: float = 0.0) -> Route:
        """The route for a caller; never raises, never waits longer than the budget (less the
        ``spent`` seconds the request already took: the budget is the channel's, not ours)."""
        self.stats.requests += 1
        try:
            route = await self._route(number, max(0.0, self.settings.budget_ms / 1000 - spent))
        except Exception:
            self.stats.errors += 1
            log.exception("agi.route_failed", number=number)
            route = Route()
        if route.extension:
            self.stats.routed += 1
            if route.source == "history":
                self.stats.from_history += 1
            else:
                self.stats.from_crm += 1
        if call_id and (route.extension or route.caller_name):
            self._remember(call_id, route)
        return route

    async def _route(self, number: str, budget: float) -> Route:
        if not number.isdigit():  # hidden caller, "anonymous", an alphanumeric sender
            return Route()
        crm_name = ""
        if self.crm is not None:
            match = await self._crm_answer(number, budget)
            if match is not None:
                ext = self._extension_of(match.owner)
                if ext:
                    return Route(ext, match.name, self.crm.name)
                crm_name = match.name
        if self.settings.sticky_days > 0:
            since = time.time() - self.settings.sticky_days * 86400
            last = self.history.last(number, since)
            if last is not None and EXTENSION.match(last.extension) and self._active(last.extension):
                return Route(last.extension, crm_name or last.name, "history")
        return Route("", crm_name, "")

    def _extension_of(self, owner: str) -> str:
        e = self.directory.by_bitrix_user(owner)
        return e.extension if e is not None and e.active and EXTENSION.match(e.extension) else ""

    def _active(self, extension: str) -> bool:
        """An extension from our history, unless the directory says it left."""
        e = self.directory.get(extension)
        return e is None or e.active

    # -- the CRM, through the cache ------------------------------------------------------------
    async def _crm_answer(self, number: str, budget: float) -> CrmMatch | None:
        now = self.clock()
        hit = self._cache.get(number)
        if hit is not None and now - hit[0] <= CACHE_MAX_AGE:
            at, match = hit
            self.stats.cache_hits += 1
            if now - at > (CACHE_FRESH if match is not None else CACHE_FRESH_UNKNOWN):
                self._start(number)  # served stale now, fresh next time
            return match
        task = self._start(number)
        if task is None:
            self.stats.fallbacks += 1
            return None
        done, _ = await asyncio.wait({task}, timeout=budget)
        if not done:
            self.stats.fallbacks += 1
            log.info("agi.crm_too_slow", number=number, budget_ms=self.settings.budget_ms)
            return None
        ok, match = task.result()
        if not ok:
            self.stats.fallbacks += 1
        return match

    def _start(self, number: str) -> asyncio.Task[tuple[bool, CrmMatch | None]] | None:
        """The lookup for ``number``: the one already running, or a new one (None: too many)."""
        task = self._inflight.get(number)
        if task is not None:
            return task
        if len(self._inflight) >= MAX_INFLIGHT:
            return None
        task = asyncio.create_task(self._fetch(number), name=f"crm-lookup-{number}")
        self._inflight[number] = task
        task.add_done_callback(lambda _t: self._inflight.pop(number, None))
        return task

    async def _fetch(self, number: str) -> tuple[bool, CrmMatch | None]:
        """Ask the CRM and cache its answer; (False, None) when it could not be asked."""
        assert self.crm is not None
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT):
                match = await self.crm.lookup(number)
        except Exception as e:
            self.stats.crm_errors += 1
            log.warning("agi.crm_lookup_failed", number=number, error=f"{type(e).__name__}: {e}")
            return False, None
        self._cache[number] = (self.clock(), match)
        self._cache.move_to_end(number)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return True, match

    async def close(self) -> None:
        """Stop the background lookups (the daemon is stopping)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- what the records say about routed calls -----------------------------------------------
    def _remember(self, call_id: str, route: Route) -> None:
        now = self.clock()
        self._sweep(now)
        self._routed[call_id] = _Routed(route, now + self.max_call_age)
        self._routed.move_to_end(call_id)

    def _sweep(self, now: float) -> None:
        """Drop expired routes from the oldest end (O(1) per call; an entry whose END shortened its
        life waits for its turn here, and is ignored by ``meta_for`` meanwhile)."""
        while self._routed:
            oldest = next(iter(self._routed.values()))
            if oldest.expires >= now:
                return
            self._routed.popitem(last=False)

    def meta_for(self, record: CallRecord) -> dict[str, str]:
        """Extra meta for a record of a call this router answered (the pipeline's enricher)."""
        hit = self._routed.get(record.pbx_call_id)
        if hit is None or hit.expires < self.clock():
            return {}
        route, meta = hit.route, {}
        if route.extension:
            meta["routed_to"] = route.extension
            meta["route_source"] = route.source
            e = self.directory.get(route.extension)
            if e is not None and e.name:
                meta["routed_to_name"] = e.name
        if route.caller_name:
            meta["caller_name"] = route.caller_name  # what the handset showed
        return meta

    def on_records(self, records: list[CallRecord]) -> None:
        """A routed call ended: forget its route shortly (what follows the END still gets it)."""
        now = self.clock()
        for r in records:
            hit = self._routed.get(r.pbx_call_id)
            if hit is not None and r.event in (Event.END, Event.OUT_END):
                hit.expires = min(hit.expires, now + ROUTED_KEEP_AFTER_END)
        self._sweep(now)

    @property
    def routed_calls(self) -> int:
        return len(self._routed)

    @property
    def cached_numbers(self) -> int:
        return len(self._cache)

    @property
    def lookups_in_flight(self) -> int:
        return len(self._inflight)
