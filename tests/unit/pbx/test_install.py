"""novofon-bridge asterisk install/uninstall on a temporary /etc/asterisk that has a life of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.pbx import install
from bridge.pbx.conf import BEGIN, END, parse, walk
from bridge.pbx.install import InstallError
from bridge.pbx.snippets import Secrets

SNIPPETS = Path(__file__).resolve().parents[3] / "asterisk-conf"
SECRETS = Secrets("ami-Secret-123", "ari-Password-456")

# An office's configuration: other transports, templates, endpoints, contexts and users; an include;
# a cp1251 comment, CRLF line ends and a file without a final newline, all of which must survive.
OFFICE = {
    "pjsip.conf": (
        b"; \xcd\xe0\xf1\xf2\xf0\xee\xe9\xea\xe8 \xee\xf4\xe8\xf1\xe0 (cp1251)\n"
        b"[transport-udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n\n"
        b"[phone](!)\ntype=endpoint\ncontext=from-internal\n\n"
        b"[101](phone)\naors=101\n[101]\ntype=aor\nmax_contacts=1\n\n"
        b"; our old provider, kept by the office\n[novofon-reg]\ntype=endpoint\ncontext=old\n\n"
        b"#include pjsip_phones.conf\n"
    ),
    "pjsip_phones.conf": b"[102](phone)\naors=102\n[102]\ntype=aor\nmax_contacts=1",
    "extensions.conf": (
        b"[general]\r\nstatic=yes\r\n\r\n[globals]\r\nOFFICE=1\r\n\r\n"
        b"[from-internal]\r\nexten => _XXX,1,Dial(PJSIP/${EXTEN})\r\n\r\n"
        b"[outgoing]\r\nexten => _X.,1,Dial(PJSIP/${EXTEN}@other)\r\n"
    ),
    "manager.conf": (
        b"[general]\nenabled = yes\nport = 5038\nbindaddr = 0.0.0.0\ntimestampevents = yes\n\n"
        b"[admin]\nsecret = admin-secret\nread = all\nwrite = all\n"
    ),
    "http.conf": b"[general]\nenabled=yes\nbindaddr=127.0.0.1\nbindport=8088\n",
}


def office(etc: Path, files: dict[str, bytes] = OFFICE) -> dict[str, bytes]:
    etc.mkdir(exist_ok=True)
    for name, data in files.items():
        (etc / name).write_bytes(data)
    return snapshot(etc)


def snapshot(etc: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in etc.iterdir() if p.is_file()}


def do_install(etc: Path, freepbx: bool = False) -> install.Plan:
    plan = install.plan_install(etc, freepbx, SECRETS, SNIPPETS)
    install.apply(plan, "20250101-120000")
    return plan


def do_uninstall(etc: Path) -> install.Plan:
    plan = install.plan_uninstall(etc)
    install.apply(plan, "20250101-130000")
    return plan


def test_install_only_appends_and_uninstall_restores_every_byte(tmp_path: Path) -> None:
    before = office(tmp_path)
    plan = do_install(tmp_path)
    after = snapshot(tmp_path)
    for name, data in before.items():
        if name == "pjsip_phones.conf" or name == "http.conf":
            assert after[name] == data  # not touched at all
            continue
        assert after[name].startswith(data + b"\n"), name  # every existing byte, then our block
        added = after[name][len(data) + 1 :].decode()
        assert added.startswith(BEGIN) and added.endswith(END + "\n")
        assert f'#include "novofon-bridge_{name.removesuffix(".conf")}.conf"' in added
    assert set(after) - set(before) == {
        "novofon-bridge_pjsip.conf",
        "novofon-bridge_extensions.conf",
        "novofon-bridge_manager.conf",
        "novofon-bridge_ari.conf",
        "ari.conf",
    }
    assert plan.reloads == [
        "module reload res_pjsip.so",
        "dialplan reload",
        "manager reload",
        "module reload res_ari.so",
    ]

    do_uninstall(tmp_path)
    assert snapshot(tmp_path) == before  # byte for byte, and the files install created are gone


def test_second_install_changes_nothing(tmp_path: Path) -> None:
    office(tmp_path)
    do_install(tmp_path)
    after = snapshot(tmp_path)
    plan = install.plan_install(tmp_path, False, SECRETS, SNIPPETS)
    assert plan.changes == [] and plan.reloads == []
    install.apply(plan, "20250101-120001")
    assert snapshot(tmp_path) == after


def test_snippet_the_admin_edited_survives_a_second_install(tmp_path: Path) -> None:
    office(tmp_path)
    do_install(tmp_path)
    pjsip = tmp_path / "novofon-bridge_pjsip.conf"
    pjsip.write_text(pjsip.read_text().replace("YOUR_SIP_LOGIN_HERE", "712345"))
    assert install.plan_install(tmp_path, False, SECRETS, SNIPPETS).changes == []


def test_every_touched_file_is_backed_up_first(tmp_path: Path) -> None:
    before = office(tmp_path)
    (tmp_path / "manager.conf").chmod(0o640)
    do_install(tmp_path)
    backup = tmp_path / install.BACKUP_DIR / "20250101-120000"
    assert {p.name: p.read_bytes() for p in backup.iterdir()} == {
        n: before[n] for n in ("pjsip.conf", "extensions.conf", "manager.conf")
    }
    assert (tmp_path / "manager.conf").stat().st_mode & 0o777 == 0o640  # mode kept
    assert (tmp_path / "novofon-bridge_manager.conf").stat().st_mode & 0o777 == 0o640  # holds a secret
    do_uninstall(tmp_path)
    removed = tmp_path / install.BACKUP_DIR / "20250101-130000"
    assert (removed / "novofon-bridge_manager.conf").is_file()  # the admin's edits are kept too


def test_section_names_already_in_use_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    files = dict(OFFICE)
    files["pjsip.conf"] = OFFICE["pjsip.conf"] + b"\n[novofon]\ntype=endpoint\ncontext=mine\n"
    outgoing = b"[novofon-outgoing]\r\nexten => _X.,1,Hangup()\r\n"
    files["extensions.conf"] = OFFICE["extensions.conf"] + outgoing
    shipped_user = (SNIPPETS / "novofon-bridge_manager.conf").read_text().split("[novofon-bridge]\n", 1)[1]
    user = shipped_user.replace("CHANGE_ME_AMI_SECRET", SECRETS.ami_secret)
    files["manager.conf"] = OFFICE["manager.conf"] + b"\n[novofon-bridge]\n" + user.encode()
    before = office(tmp_path, files)
    with pytest.raises(InstallError) as e:
        install.plan_install(tmp_path, False, SECRETS, SNIPPETS)
    message = str(e.value)
    assert "pjsip.conf:24: раздел [novofon] (type=endpoint) с другим содержимым" in message
    assert "extensions.conf:12: раздел [novofon-outgoing] с другим содержимым" in message
    assert "manager.conf:12: такой же раздел [novofon-bridge]" in message
    assert "[novofon-reg]" not in message  # the office's endpoint of that name is another type
    assert "Ничего не изменено" in message
    assert snapshot(tmp_path) == before


def test_modules_are_switched_on_only_when_they_are_off(tmp_path: Path) -> None:
    files = dict(OFFICE)
    files["manager.conf"] = b"[general]\nenabled = no\nbindaddr = 0.0.0.0\n\n[admin]\nsecret = x\n"
    files["http.conf"] = b"[general]\n;enabled=yes\n"
    office(tmp_path, files)
    do_install(tmp_path)
    manager = parse((tmp_path / "novofon-bridge_manager.conf").read_text(), tmp_path / "m").sections
    assert manager[0].name == "general" and manager[0].adds  # added to the office's [general]
    assert manager[0].get("enabled") == "yes" and manager[0].get("bindaddr") == "127.0.0.1"
    http = parse((tmp_path / "novofon-bridge_http.conf").read_text(), tmp_path / "h").sections
    assert [s.name for s in http] == ["general"] and http[0].get("enabled") == "yes"
    ari = parse((tmp_path / "novofon-bridge_ari.conf").read_text(), tmp_path / "a").sections
    assert [s.name for s in ari] == ["novofon-bridge"]  # ARI runs unless switched off


def test_a_module_file_that_does_not_exist_gets_a_section_of_its_own(tmp_path: Path) -> None:
    files = {k: v for k, v in OFFICE.items() if k != "manager.conf"}
    office(tmp_path, files)
    do_install(tmp_path)
    manager = parse((tmp_path / "novofon-bridge_manager.conf").read_text(), tmp_path / "m").sections
    assert (manager[0].name, manager[0].options) == ("general", ())  # [general], not [general](+)
    do_uninstall(tmp_path)
    assert not (tmp_path / "manager.conf").exists()


def test_the_ami_user_takes_its_privileges_from_the_one_template(tmp_path: Path) -> None:
    office(tmp_path)
    do_install(tmp_path)
    sections = [s for _, p in walk(tmp_path, "manager.conf", read) for s in p.sections]
    user = next(s for s in sections if s.name == "novofon-bridge")
    shipped = next(
        s
        for s in parse((SNIPPETS / "novofon-bridge_manager.conf").read_text(), SNIPPETS).sections
        if s.name == "novofon-bridge"
    )
    assert user.get("secret") == SECRETS.ami_secret
    assert [kv for kv in user.body if kv[0] != "secret"] == [kv for kv in shipped.body if kv[0] != "secret"]
    classes = {c.strip() for key in ("read", "write") for c in (user.get(key) or "").split(",")}
    assert not classes & {"command", "all", "config"}
    assert user.get("permit") == "127.0.0.1/255.255.255.255"


def test_the_trunk_uses_the_offices_udp_transport_by_name(tmp_path: Path) -> None:
    office(tmp_path)
    do_install(tmp_path)
    sections = parse((tmp_path / "novofon-bridge_pjsip.conf").read_text(), tmp_path).sections
    assert {s.get("type"): s.get("transport") for s in sections if s.get("transport")} == {
        "registration": "transport-udp",
        "endpoint": "transport-udp",
    }
    other = tmp_path / "other"
    office(other, {**OFFICE, "pjsip.conf": b"[101]\ntype=endpoint\n"})
    plan = install.plan_install(other, False, SECRETS, SNIPPETS)
    assert any("нет ни одного транспорта" in n for n in plan.notes)
    install.apply(plan)
    text = (other / "novofon-bridge_pjsip.conf").read_text()
    assert "\n;transport=CHANGE_ME_UDP_TRANSPORT\n" in text and "\ntransport=" not in text


def test_an_include_the_admin_already_wrote_is_not_added_twice(tmp_path: Path) -> None:
    files = dict(OFFICE)
    files["pjsip.conf"] = OFFICE["pjsip.conf"] + b'#include "novofon-bridge_pjsip.conf"\n'
    office(tmp_path, files)
    plan = install.plan_install(tmp_path, False, SECRETS, SNIPPETS)
    assert [c.path.name for c in plan.changes if c.kind == "pjsip"] == ["novofon-bridge_pjsip.conf"]


def test_lines_the_admin_adds_after_install_survive_uninstall(tmp_path: Path) -> None:
    before = office(tmp_path)
    do_install(tmp_path)
    with (tmp_path / "pjsip.conf").open("ab") as f:
        f.write(b"[103](phone)\n")
    do_uninstall(tmp_path)
    assert (tmp_path / "pjsip.conf").read_bytes() == before["pjsip.conf"] + b"[103](phone)\n"


def test_dry_run_plan_diff_hides_the_secrets(tmp_path: Path) -> None:
    office(tmp_path)
    plan = install.plan_install(tmp_path, False, SECRETS, SNIPPETS)
    diff = plan.diff([SECRETS.ami_secret, SECRETS.ari_password])
    assert f"+++ {tmp_path / 'pjsip.conf'}" in diff and '+#include "novofon-bridge_pjsip.conf"' in diff
    assert "--- /dev/null" in diff and "+secret = ********" in diff
    assert SECRETS.ami_secret not in diff and SECRETS.ari_password not in diff


def test_a_secret_asterisk_cannot_read_is_refused(tmp_path: Path) -> None:
    office(tmp_path)
    with pytest.raises(InstallError, match="AMI_SECRET"):
        install.plan_install(tmp_path, False, Secrets("abc;def", "x"), SNIPPETS)


def read(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


# -- FreePBX ---------------------------------------------------------------------------------------

PJSIP_TYPES = ("registration", "auth", "aor", "endpoint", "identify")
FREEPBX = {
    "pjsip.conf": b"".join(f"#include pjsip.{t}.conf\n".encode() for t in ("transports", *PJSIP_TYPES)),
    "pjsip.transports.conf": b"[0.0.0.0-udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n",
    **{f"pjsip.{t}.conf": f"#include pjsip.{t}_custom.conf\n".encode() for t in PJSIP_TYPES},
    "pjsip.endpoint.conf": (
        b"#include pjsip.endpoint_custom.conf\n\n[101]\ntype=endpoint\ncontext=from-internal\n"
    ),
    "pjsip.endpoint_custom.conf": b"; the admin's own\n[101](+)\nrewrite_contact=yes\n",
    "pjsip.aor_custom.conf": b"",
    "extensions.conf": b"#include extensions_custom.conf\n[from-internal]\nexten => 1,1,Answer()\n",
    "extensions_custom.conf": b"[from-internal-custom]\nexten => 2,1,Answer()",
    "manager.conf": (
        b"[general]\nenabled = yes\nbindaddr = 127.0.0.1\ntimestampevents = yes\n[admin]\nsecret = amp111\n"
        b"#include manager_additional.conf\n#include manager_custom.conf\n"
    ),
    "manager_custom.conf": b"",
    "ari.conf": b"[general]\n#include ari_general_custom.conf\n\n#include ari_additional_custom.conf\n",
}


def test_freepbx_mode_writes_only_the_custom_files(tmp_path: Path) -> None:
    before = office(tmp_path, FREEPBX)
    do_install(tmp_path, freepbx=True)
    after = snapshot(tmp_path)
    changed = {n for n in after if before.get(n) != after[n]}
    assert changed == {
        *(f"pjsip.{t}_custom.conf" for t in PJSIP_TYPES),
        "extensions_custom.conf",
        "manager_custom.conf",
        "ari_additional_custom.conf",
    }
    for name in changed & set(before):
        assert after[name].startswith(before[name])
    for t in PJSIP_TYPES:  # each object in the file FreePBX reserves for its type
        sections = parse(after[f"pjsip.{t}_custom.conf"].decode(), tmp_path).sections
        assert {s.get("type") for s in sections if s.ours} == {t}
    endpoint = parse(after["pjsip.endpoint_custom.conf"].decode(), tmp_path).sections[-1]
    assert (endpoint.name, endpoint.get("context")) == ("novofon", "from-pstn")  # FreePBX's inbound routes
    assert endpoint.get("transport") == "0.0.0.0-udp"
    contexts = [s.name for s in parse(after["extensions_custom.conf"].decode(), tmp_path).sections if s.ours]
    assert "novofon-outgoing" in contexts
    assert "from-novofon" not in contexts and "novofon-routes" not in contexts
    manager = parse(after["manager_custom.conf"].decode(), tmp_path).sections
    assert [s.name for s in manager] == ["novofon-bridge"]  # FreePBX runs AMI already: no [general]
    assert not any(n.startswith("novofon-bridge_") for n in after)

    # The admin puts the SIP password into the block; uninstall still gives back every byte.
    auth = tmp_path / "pjsip.auth_custom.conf"
    auth.write_text(auth.read_text().replace("YOUR_SIP_PASSWORD_HERE", "s3cret"))
    assert install.plan_install(tmp_path, True, SECRETS, SNIPPETS).changes == []  # idempotent
    do_uninstall(tmp_path)
    assert snapshot(tmp_path) == before


def test_freepbx_mode_on_a_plain_asterisk_is_refused(tmp_path: Path) -> None:
    before = office(tmp_path)
    with pytest.raises(InstallError, match="не похоже на FreePBX"):
        install.plan_install(tmp_path, True, SECRETS, SNIPPETS)
    assert snapshot(tmp_path) == before


def test_the_two_modes_never_mix(tmp_path: Path) -> None:
    office(tmp_path, FREEPBX)
    do_install(tmp_path, freepbx=True)
    with pytest.raises(InstallError, match="uninstall"):
        install.plan_install(tmp_path, False, SECRETS, SNIPPETS)
