"""AMI framing and action bookkeeping: the panoramisk faults listed in SPECS.md, each pinned."""

from __future__ import annotations

import asyncio

import pytest

from bridge.pbx.ami_protocol import AmiError, AmiProtocol, Framer, UnsafeAction, parse_message

NAME = "Иван Петров"


def test_cyrillic_split_inside_a_character_is_intact() -> None:
    msg = f"Event: Newchannel\r\nCallerIDName: {NAME}\r\nUniqueid: 1.1\r\n\r\n".encode()
    cut = msg.index(NAME.encode()) + 1  # in the middle of "И" (two bytes in UTF-8)
    framer = Framer()
    assert framer.feed(msg[:cut]) == []
    (block,) = framer.feed(msg[cut:])
    assert parse_message(block)["CallerIDName"] == NAME


def test_banner_split_across_reads() -> None:
    framer = Framer()
    assert framer.feed(b"Asterisk Call") == []
    assert framer.feed(b" Manager/11.0.0\r\nResponse: Success\r\n\r\n") == [b"Response: Success"]
    assert framer.banner == "Asterisk Call Manager/11.0.0"


def test_lf_lf_inside_a_message_does_not_swallow_the_next_one() -> None:
    data = b"Event: A\r\nX: 1\n\nEvent: B\r\n\r\nEvent: C\r\n\r\n"
    blocks = Framer().feed(data)
    assert [parse_message(b)["Event"] for b in blocks] == ["A", "C"]
    assert parse_message(blocks[0])["X"] == "1\n\nEvent: B"  # kept, not lost silently


def test_repeated_headers_are_kept() -> None:
    msg = parse_message(b"Event: X\r\nChanVariable: A=1\r\nChanVariable: B=2")
    assert msg["ChanVariable"] == "A=1\nB=2"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True


async def test_handler_error_does_not_drop_the_connection() -> None:
    seen: list[str] = []

    def handler(msg: dict[str, str]) -> None:
        seen.append(msg["Event"])
        if msg["Event"] == "Boom":
            raise RuntimeError("bug in a handler")

    proto = AmiProtocol(handler)
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(b"Event: Boom\r\n\r\nEvent: Newchannel\r\n\r\n")
    assert seen == ["Boom", "Newchannel"]
    assert proto.handler_errors == 1
    assert not transport.closed and not proto.closed.done()


async def test_list_action_completes_on_eventlist_complete_not_on_a_guess() -> None:
    proto = AmiProtocol(lambda m: None)
    proto.connection_made(FakeTransport())
    fut = proto.send_action("CoreShowChannels")
    proto.data_received(b"Response: Success\r\nActionID: nb-1\r\nEventList: start\r\n\r\n")
    proto.data_received(b"Event: CoreShowChannel\r\nActionID: nb-1\r\nChannel: PJSIP/101-1\r\n\r\n")
    assert not fut.done()
    proto.data_received(b"Event: CoreShowChannelsComplete\r\nActionID: nb-1\r\nEventList: Complete\r\n\r\n")
    result = await fut
    assert result.ok and [e["Channel"] for e in result.events] == ["PJSIP/101-1"]


async def test_uninteresting_events_are_skipped_before_parsing() -> None:
    seen: list[str] = []
    proto = AmiProtocol(lambda m: seen.append(m["Event"]), events={"Hangup"})
    proto.connection_made(FakeTransport())
    proto.data_received(b"Event: VarSet\r\n\r\nEvent: Hangup\r\n\r\n")
    assert seen == ["Hangup"]


async def test_pending_actions_fail_when_the_connection_drops() -> None:
    proto = AmiProtocol(lambda m: None)
    proto.connection_made(FakeTransport())
    fut = proto.send_action("Ping")
    proto.connection_lost(None)
    try:
        await fut
    except AmiError as e:
        assert "lost" in str(e)
    else:
        raise AssertionError("the pending action should have failed")


# -- defence in depth: nothing with a control character is ever written -------------------------


@pytest.mark.parametrize(
    ("action", "fields"),
    [
        ("Originate", {"Channel": "PJSIP/101\r\nAction: Originate\r\nApplication: System"}),
        ("Originate", {"Exten": "79001234567\n"}),
        ("Originate", {"Exten": "79001234567\r"}),
        ("Originate", {"CallerID": "Иван\x00"}),
        ("Originate", {"CallerID": "\x1b[31mred"}),
        ("Originate", {"CallerID": "x\x7f"}),
        ("Originate", {"CallerID": "x\x85"}),  # C1 NEL
        ("Originate", {"CallerID": "x\u2028y"}),  # Unicode line separator
        ("Originate", {"Variable": "A=1\r\nAction: Command"}),  # "\n" splits variables; "\r" never
        ("Originate", {"Channel\r\nAction: Command\r\nX": "PJSIP/101"}),  # in a key
        ("Originate", {"Chan nel": "PJSIP/101"}),
        ("Originate", {"Channel:": "PJSIP/101"}),
        ("Originate\r\nAction: Command", {}),  # in the action's name
        ("", {}),
    ],
)
async def test_an_action_with_a_control_character_is_refused_before_anything_is_written(
    action: str, fields: dict[str, str]
) -> None:
    proto = AmiProtocol(lambda m: None)
    transport = FakeTransport()
    proto.connection_made(transport)
    with pytest.raises(UnsafeAction) as err:
        proto.send_action(action, fields)
    assert isinstance(err.value, AmiError)
    assert transport.written == [] and proto._pending == {}
    assert "\r" not in str(err.value) and "\n" not in str(err.value)


async def test_the_login_secret_is_never_quoted_in_the_refusal() -> None:
    proto = AmiProtocol(lambda m: None)
    proto.connection_made(FakeTransport())
    with pytest.raises(UnsafeAction) as err:
        proto.send_action("Login", {"Username": "bridge", "Secret": "top-secret-value\r\n"})
    assert "top-secret-value" not in str(err.value) and "Secret" in str(err.value)


async def test_several_variables_still_go_one_per_line() -> None:
    proto = AmiProtocol(lambda m: None)
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.send_action("Originate", {"Channel": "PJSIP/101", "Variable": "A=1\nB=Иван"})
    lines = ["Action: Originate", "ActionID: nb-1", "Channel: PJSIP/101", "Variable: A=1", "Variable: B=Иван"]
    assert transport.written == ["\r\n".join([*lines, "", ""]).encode()]
