"""The client's responsible manager in Bitrix24's CRM, for call routing (bridge/pbx/routing.py).

``crm.duplicate.findbycomm`` (type PHONE) finds the leads, contacts and companies holding the
caller's number; the first contact (else company, else lead) is read with ``crm.<entity>.get``
for its ``ASSIGNED_BY_ID`` and its name. The router maps that user to an extension through the
directory, caches the answer and never lets a slow portal hold a call.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import PermanentFailure
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.pbx.routing import CrmMatch

ENTITIES = ("CONTACT", "COMPANY", "LEAD")  # who is asked first when the number is on several
GET_METHOD = {"CONTACT": "crm.contact.get", "COMPANY": "crm.company.get", "LEAD": "crm.lead.get"}
MAX_VALUES = 20  # crm.duplicate.findbycomm takes at most 20 values


def phone_variants(number: str, country_code: str) -> list[str]:
    """How the number may have been typed into the CRM: 79161234567, +79161234567, 89161234567."""
    variants = [number, f"+{number}"]
    if country_code == "7" and len(number) == 11 and number.startswith("7"):
        variants.append("8" + number[1:])
    return variants[:MAX_VALUES]


def entity_name(kind: str, entity: dict[str, Any]) -> str:
    """A person's "NAME LAST_NAME"; a company's TITLE (a lead's TITLE is a deal name, not a name)."""
    if kind == "COMPANY":
        return str(entity.get("TITLE") or "").strip()
    parts = (entity.get("NAME"), entity.get("LAST_NAME"))
    return " ".join(str(p).strip() for p in parts if p and str(p).strip())


class BitrixResponsible:
    """bridge.pbx.routing.ResponsibleLookup over the Bitrix24 REST client."""

    name = "bitrix24"

    def __init__(self, client: BitrixClient, country_code: str) -> None:
        self._client = client
        self._country_code = country_code

    async def lookup(self, number: str) -> CrmMatch | None:
        found = await self._client.call(
            "crm.duplicate.findbycomm",
            {"type": "PHONE", "values": phone_variants(number, self._country_code)},
        )
        ids = found if isinstance(found, dict) else {}  # nothing found comes as an empty list: []
        for kind in ENTITIES:
            for entity_id in [str(i) for i in ids.get(kind) or [] if str(i).isdigit()][:3]:
                try:
                    entity = await self._client.call(GET_METHOD[kind], {"id": entity_id})
                except PermanentFailure:  # deleted since it was indexed, or not ours to read
                    continue
                if isinstance(entity, dict):
                    owner = str(entity.get("ASSIGNED_BY_ID") or "")
                    return CrmMatch(owner, entity_name(kind, entity), f"{kind} {entity_id}")
        return None
