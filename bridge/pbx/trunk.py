"""The trunk's outbound registration (PJSIPShowRegistrationsOutbound), explained: what
"Rejected" or "Unregistered" means on a Novofon trunk and what to change.

Only the registration's name, state, server and endpoint are read: the answer also carries the
auth section (with its password), which is never looked at or printed.
"""

from __future__ import annotations

from bridge.i18n import tr
from bridge.pbx.ami_protocol import ActionResult
from bridge.preflight import Result

RELOAD = "asterisk -rx 'module reload res_pjsip.so'"


def _name(reg: str) -> str:
    return tr(f"Транк {reg}", f"Trunk {reg}")


def explain(status: str, reg: str, server: str) -> tuple[str, str]:
    """(what is wrong, the fix) for a registration that is not Registered."""
    if status == "Rejected":
        return (
            tr(
                f"{server} отказал в регистрации (Rejected: ответ 401/403 на REGISTER) — неверный SIP-логин "
                "или "
                "пароль, или логин не тот, что в client_uri/contact_user",
                f"{server} refused the registration (Rejected: 401/403 to REGISTER) — wrong SIP login or "
                "password, or client_uri/contact_user hold another login",
            ),
            tr(
                "сверьте логин и пароль SIP из личного кабинета Novofon (АТС → SIP-линии) с "
                "username/password "
                "секции auth и логин в client_uri, contact_user, from_user (novofon-bridge_pjsip.conf); "
                "затем "
                f"{RELOAD} и asterisk -rx 'pjsip send register {reg}' (после отказа повтор только через "
                "forbidden_retry_interval, 600 с)",
                "compare the SIP login and password from the Novofon cabinet (PBX → SIP lines) with "
                "username/password of the auth section and the login in client_uri, contact_user, from_user "
                f"(novofon-bridge_pjsip.conf); then {RELOAD} and asterisk -rx 'pjsip send register {reg}' "
                "(after a refusal Asterisk retries only after forbidden_retry_interval, 600 s)",
            ),
        )
    if status == "Unregistered":
        return (
            tr(
                f"не зарегистрирован на {server} (Unregistered): сервер не ответил на REGISTER или "
                "регистрация ещё не прошла",
                f"not registered at {server} (Unregistered): the server did not answer REGISTER or the "
                "registration has not happened yet",
            ),
            tr(
                "проверьте сеть: доступен ли сервер с этой машины (UDP 5060 в межсетевом экране, DNS имени "
                "sip.novofon.ru); за NAT задайте в транспорте external_signaling_address и "
                "external_media_address, а в эндпоинте rewrite_contact=yes, rtp_symmetric=yes, "
                "force_rport=yes; входящие звонки Novofon примет Asterisk, только если identify/match "
                f"содержит адреса сигнализации Novofon; затем {RELOAD}",
                "check the network: can this machine reach the server (UDP 5060 through the firewall, DNS "
                "of sip.novofon.ru); behind NAT set external_signaling_address and external_media_address "
                "on the transport and rewrite_contact=yes, rtp_symmetric=yes, force_rport=yes on the "
                "endpoint; Asterisk accepts Novofon's inbound calls only when identify/match holds "
                f"Novofon's signalling addresses; then {RELOAD}",
            ),
        )
    return (
        tr(f"регистрация в состоянии {status!r}", f"registration is {status!r}"),
        tr(
            f"посмотрите подробности: asterisk -rx 'pjsip show registration {reg}'; после правки {RELOAD}",
            f"see the details: asterisk -rx 'pjsip show registration {reg}'; after editing {RELOAD}",
        ),
    )


def registration_results(regs: ActionResult, trunk_endpoints: list[str]) -> list[Result]:
    if not regs.ok:
        return [
            Result.warning(
                tr("Транк", "Trunk"),
                tr(
                    f"не проверен: Asterisk ответил {regs.message!r}",
                    f"not checked: Asterisk answered {regs.message!r}",
                ),
                tr(
                    "загружен ли res_pjsip_outbound_registration: asterisk -rx 'module show like "
                    "registration'",
                    "is res_pjsip_outbound_registration loaded: asterisk -rx 'module show like registration'",
                ),
            )
        ]
    details = [e for e in regs.events if e.get("Event") == "OutboundRegistrationDetail"]
    if not details:
        return [
            Result.warning(
                tr("Транк", "Trunk"),
                tr("исходящих регистраций нет", "no outbound registrations"),
                tr(
                    "если Novofon пускает ваш транк по IP-адресу без регистрации, так и должно быть; иначе "
                    "добавьте type=registration (как [novofon-reg] в novofon-bridge_pjsip.conf) и "
                    f"выполните {RELOAD}",
                    "if Novofon lets your trunk in by IP address without registering, that is right; "
                    "otherwise add a type=registration (as [novofon-reg] in novofon-bridge_pjsip.conf) "
                    f"and run {RELOAD}",
                ),
            )
        ]
    matched = [d for d in details if d.get("Endpoint", "") in trunk_endpoints]
    judged = matched or details
    results = []
    for d in judged:
        reg, status, server = d.get("ObjectName", "?"), d.get("Status", "?"), d.get("ServerUri", "?")
        if status == "Registered":
            results.append(
                Result.ok(_name(reg), tr(f"зарегистрирован на {server}", f"registered at {server}"))
            )
        else:
            problem, fix = explain(status, reg, server)
            results.append(Result.error(_name(reg), problem, fix))
    for d in details:
        if matched and d not in matched:  # the office's other providers: shown, not judged
            reg, status, endpoint = d.get("ObjectName", "?"), d.get("Status", "?"), d.get("Endpoint", "")
            results.append(
                Result.ok(
                    _name(reg),
                    tr(
                        f"не транк моста (эндпоинт {endpoint or '—'}), состояние {status}",
                        f"not the bridge's trunk (endpoint {endpoint or '-'}), state {status}",
                    ),
                )
            )
    foreign = sorted({d.get("Endpoint", "") for d in details} - {""})
    if not matched and foreign:
        listed = ", ".join(trunk_endpoints)
        results.append(
            Result.warning(
                tr("Транк", "Trunk"),
                tr(
                    f"ни одна регистрация не относится к asterisk.trunk_endpoints ({listed}); эндпоинты "
                    f"регистраций: {', '.join(foreign)} — звонки через них мост не узнает как внешние",
                    f"no registration belongs to asterisk.trunk_endpoints ({listed}); their endpoints: "
                    f"{', '.join(foreign)} — the bridge will not see calls through them as external",
                ),
                tr(
                    "впишите имя эндпоинта транка Novofon в asterisk.trunk_endpoints в config.yaml",
                    "put the Novofon trunk's endpoint name into asterisk.trunk_endpoints in config.yaml",
                ),
            )
        )
    return results
