"""Bitrix24's answer to "whose client is this number": crm.duplicate.findbycomm, then the entity's
ASSIGNED_BY_ID and name — through the real REST client against the (strict) fake portal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.errors import PermanentFailure
from bridge.http.client import Http
from bridge.integrations.bitrix24.client import BitrixClient
from bridge.integrations.bitrix24.crm_lookup import BitrixResponsible, entity_name, phone_variants
from bridge.integrations.bitrix24.settings import Bitrix24Settings
from bridge.outbox.state import StateStore
from bridge.outbox.store import OutboxStore
from bridge.pbx.routing import CrmMatch
from tests.fakes.bitrix import FakeBitrix


@pytest.fixture
async def portal(tmp_path: Path) -> AsyncIterator[tuple[FakeBitrix, BitrixClient]]:
    bx = FakeBitrix()
    await bx.start()
    store, http = OutboxStore(tmp_path / "o.sqlite3"), Http()
    settings = Bitrix24Settings(enabled=True, webhook_url=bx.webhook_url, rate=1000, burst=1000)
    try:
        yield bx, BitrixClient(settings, http, StateStore(store.db))
    finally:
        await http.close()
        store.close()
        await bx.stop()


async def test_a_contact_typed_with_8_and_dashes_is_found_by_the_normalised_number(
    portal: tuple[FakeBitrix, BitrixClient],
) -> None:
    bx, client = portal
    bx.add_crm("CONTACT", 5, ["8 (916) 111-00-01"], "7", NAME="Анна", LAST_NAME="Смирнова")
    match = await BitrixResponsible(client, "7").lookup("79161110001")
    assert match == CrmMatch("7", "Анна Смирнова", "CONTACT 5")
    method, params = bx.log[0]
    assert method == "crm.duplicate.findbycomm"
    assert params == {"type": "PHONE", "values": ["79161110001", "+79161110001", "89161110001"]}
    assert bx.log[1] == ("crm.contact.get", {"id": "5"})


async def test_a_contact_comes_before_a_company_and_a_lead_with_the_same_number(
    portal: tuple[FakeBitrix, BitrixClient],
) -> None:
    bx, client = portal
    bx.add_crm("LEAD", 1, ["+79161110001"], "9", TITLE="Входящий звонок", NAME="Аня")
    bx.add_crm("COMPANY", 2, ["+79161110001"], "8", TITLE="ООО Ромашка")
    lookup = BitrixResponsible(client, "7")
    assert await lookup.lookup("79161110001") == CrmMatch("8", "ООО Ромашка", "COMPANY 2")
    bx.add_crm("CONTACT", 3, ["+79161110001"], "7", NAME="Анна")
    assert await lookup.lookup("79161110001") == CrmMatch("7", "Анна", "CONTACT 3")


async def test_an_entity_deleted_since_indexing_is_skipped(portal: tuple[FakeBitrix, BitrixClient]) -> None:
    bx, client = portal
    bx.add_crm("CONTACT", 3, ["+79161110001"], "7", NAME="Анна")
    bx.add_crm("LEAD", 4, ["+79161110001"], "9", NAME="Лид")
    del bx.crm["CONTACT"]["3"]  # crm.contact.get now answers "Not found"
    bx.add_crm("CONTACT", 6, ["+79160000000"], "7")  # another contact, another number
    assert await BitrixResponsible(client, "7").lookup("79161110001") == CrmMatch("9", "Лид", "LEAD 4")


async def test_nobody_with_this_number_is_none(portal: tuple[FakeBitrix, BitrixClient]) -> None:
    _, client = portal
    assert await BitrixResponsible(client, "7").lookup("79169990009") is None


async def test_the_fake_portal_is_as_strict_as_the_real_one(portal: tuple[FakeBitrix, BitrixClient]) -> None:
    _, client = portal
    for params, says in [
        ({"values": ["1"]}, "Communication type is not defined"),
        ({"type": "FAX", "values": ["1"]}, "'FAX' is not supported"),
        ({"type": "PHONE"}, "Communication values is not defined"),
        ({"type": "PHONE", "values": [str(i) for i in range(21)]}, "Too many"),
    ]:
        with pytest.raises(PermanentFailure, match=says):
            await client.call("crm.duplicate.findbycomm", params)
    assert await client.call("crm.duplicate.findbycomm", {"TYPE": "PHONE", "VALUES": ["1"]}) == []
    with pytest.raises(PermanentFailure, match="ID is not defined or invalid"):
        await client.call("crm.contact.get", {"id": "x"})
    with pytest.raises(PermanentFailure, match="Not found"):
        await client.call("crm.lead.get", {"ID": 77})


def test_names_and_number_variants() -> None:
    assert entity_name("CONTACT", {"NAME": " Анна ", "LAST_NAME": None}) == "Анна"
    assert entity_name("LEAD", {"TITLE": "Звонок с сайта"}) == ""  # a lead's title is not a person
    assert entity_name("COMPANY", {"TITLE": "ООО Ромашка"}) == "ООО Ромашка"
    assert phone_variants("4915112345678", "49") == ["4915112345678", "+4915112345678"]
