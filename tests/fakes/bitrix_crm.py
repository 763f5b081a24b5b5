"""The fake portal's CRM lookups that call routing uses: ``crm.duplicate.findbycomm`` and
``crm.contact.get`` / ``crm.company.get`` / ``crm.lead.get``, with the portal's error texts.
Parameter names are read in any case, as the portal reads them."""

from __future__ import annotations

from typing import Any

CRM_GET = {"crm.contact.get": "CONTACT", "crm.company.get": "COMPANY", "crm.lead.get": "LEAD"}
METHODS = frozenset({"crm.duplicate.findbycomm", *CRM_GET})
Entities = dict[str, dict[str, dict[str, Any]]]  # type (CONTACT, COMPANY, LEAD) -> ID -> entity


def entity(entity_id: int, phones: list[str], assigned: str, **fields: Any) -> dict[str, Any]:
    """A CRM entity as crm.*.get returns it: phone numbers as a person would type them."""
    return {
        "ID": str(entity_id),
        "ASSIGNED_BY_ID": assigned,
        "PHONE": [
            {"ID": str(i), "VALUE_TYPE": "WORK", "VALUE": v, "TYPE_ID": "PHONE"} for i, v in enumerate(phones)
        ],
        **fields,
    }


def _digits(value: object) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())


def call(crm: Entities, m: str, params: dict[str, Any], refused: type[Exception]) -> Any:
    """The result of CRM method ``m`` (lower case); ``refused(status, error, description)`` raised
    for what the portal refuses."""
    p = {k.upper(): v for k, v in params.items()}
    if m in CRM_GET:
        raw = str(p.get("ID", ""))
        if not raw.isdigit() or int(raw) <= 0:
            raise refused(400, "", "ID is not defined or invalid.")
        found = crm[CRM_GET[m]].get(raw)
        if found is None:
            raise refused(400, "", "Not found")
        return found
    kind, values, wanted_type = p.get("TYPE"), p.get("VALUES"), p.get("ENTITY_TYPE")
    if not kind:
        raise refused(400, "", "Communication type is not defined.")
    if kind not in ("PHONE", "EMAIL"):
        raise refused(400, "", f"Communication type '{kind}' is not supported in current context.")
    if not values or not isinstance(values, list):
        raise refused(400, "", "Communication values is not defined.")
    if len(values) > 20:
        raise refused(400, "", "Too many communication values.")
    wanted = {_digits(v) for v in values} - {""}
    result: dict[str, list[int]] = {}
    for name, entities in crm.items():
        if wanted_type in ("LEAD", "CONTACT", "COMPANY") and name != wanted_type:
            continue
        ids = [
            int(e["ID"])
            for e in entities.values()
            if kind == "PHONE" and any(_digits(ph["VALUE"]) in wanted for ph in e["PHONE"])
        ]
        if ids:
            result[name] = sorted(ids)[:20]
    return result or []  # nothing found: an empty list, not {}
