"""A minimal Diameter peer for the tests: builds CER, DWR, DPA and CCRs with our own codec and
reads framed answers. Shared by the in-process server tests and the daemon tests."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from ocs.diameter import codec
from ocs.diameter.codec import (
    FLAG_REQUEST,
    FLAG_RETRANSMIT,
    Message,
    avp_address,
    avp_grouped,
    avp_u32,
    avp_u64,
    avp_utf8,
    encode_avp,
    encode_message,
    parse_message,
)
from ocs.diameter.framer import Framer

_ids = itertools.count(1000)


def next_id() -> int:
    return next(_ids) & 0xFFFFFFFF


def cer(
    host: str = "pcef.localdomain",
    realm: str = "localdomain",
    *,
    apps: Sequence[int] = (4,),
    hop_by_hop: int | None = None,
) -> bytes:
    ident = hop_by_hop if hop_by_hop is not None else next_id()
    avps = [
        encode_avp(codec.AVP_ORIGIN_HOST, host.encode()),
        encode_avp(codec.AVP_ORIGIN_REALM, realm.encode()),
        avp_address(codec.AVP_HOST_IP_ADDRESS, "127.0.0.1"),
        avp_u32(codec.AVP_VENDOR_ID, 0),
        avp_utf8(codec.AVP_PRODUCT_NAME, "test-peer", mandatory=False),
        *(avp_u32(codec.AVP_AUTH_APPLICATION_ID, app) for app in apps),
    ]
    return encode_message(
        command_code=codec.CMD_CAPABILITIES_EXCHANGE,
        application_id=0,
        hop_by_hop=ident,
        end_to_end=ident,
        avps=avps,
        flags=FLAG_REQUEST,
    )


def base_request(command: int, host: str = "pcef.localdomain", realm: str = "localdomain") -> bytes:
    ident = next_id()
    return encode_message(
        command_code=command,
        application_id=0,
        hop_by_hop=ident,
        end_to_end=ident,
        avps=[
            encode_avp(codec.AVP_ORIGIN_HOST, host.encode()),
            encode_avp(codec.AVP_ORIGIN_REALM, realm.encode()),
        ],
        flags=FLAG_REQUEST,
    )


def answer_to(request: bytes, result_code: int = 2001, host: str = "pcef.localdomain") -> bytes:
    header = codec.peek_header(request)
    return codec.encode_with_header(
        codec.answer_header_for(header),
        [
            avp_u32(codec.AVP_RESULT_CODE, result_code),
            encode_avp(codec.AVP_ORIGIN_HOST, host.encode()),
            encode_avp(codec.AVP_ORIGIN_REALM, b"localdomain"),
        ],
    )


def units(
    code: int, *, time_s: int | None = None, octets: int | None = None, events: int | None = None
) -> bytes:
    members = []
    if time_s is not None:
        members.append(avp_u32(codec.AVP_CC_TIME, time_s))
    if octets is not None:
        members.append(avp_u64(codec.AVP_CC_TOTAL_OCTETS, octets))
    if events is not None:
        members.append(avp_u64(codec.AVP_CC_SERVICE_SPECIFIC_UNITS, events))
    return avp_grouped(code, members)


def mscc(rating_group: int, *, requested: bytes | None = None, used: bytes | None = None) -> bytes:
    members = [avp_u32(codec.AVP_RATING_GROUP, rating_group)]
    if requested is not None:
        members.insert(0, requested)
    if used is not None:
        members.insert(0, used)
    return avp_grouped(codec.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL, members)


def ccr(
    session_id: str,
    request_type: int,
    number: int,
    *,
    user: str | None = None,
    e164: str | None = None,
    imsi: str | None = None,
    requested: bytes | None = None,
    used: bytes | None = None,
    multiple: Sequence[bytes] = (),
    action: int | None = None,
    host: str = "pcef.localdomain",
    realm: str = "localdomain",
    hop_by_hop: int | None = None,
    end_to_end: int | None = None,
    retransmit: bool = False,
    called: str | None = None,
) -> bytes:
    """A Credit-Control-Request (RFC 4006 §3.1); ``called``: a Called-Party-Address in
    Service-Information / IMS-Information (TS 32.299), the number rating by destination uses."""
    hbh = hop_by_hop if hop_by_hop is not None else next_id()
    avps = [
        avp_utf8(codec.AVP_SESSION_ID, session_id),
        encode_avp(codec.AVP_ORIGIN_HOST, host.encode()),
        encode_avp(codec.AVP_ORIGIN_REALM, realm.encode()),
        encode_avp(codec.AVP_DESTINATION_REALM, b"localdomain"),
        avp_u32(codec.AVP_AUTH_APPLICATION_ID, 4),
        avp_utf8(codec.AVP_SERVICE_CONTEXT_ID, "32260@3gpp.org"),
        avp_u32(codec.AVP_CC_REQUEST_TYPE, request_type),
        avp_u32(codec.AVP_CC_REQUEST_NUMBER, number),
    ]
    if user is not None:
        avps.append(avp_utf8(codec.AVP_USER_NAME, user))
    for id_type, value in ((0, e164), (1, imsi)):
        if value is not None:
            avps.append(
                avp_grouped(
                    codec.AVP_SUBSCRIPTION_ID,
                    [
                        avp_u32(codec.AVP_SUBSCRIPTION_ID_TYPE, id_type),
                        avp_utf8(codec.AVP_SUBSCRIPTION_ID_DATA, value),
                    ],
                )
            )
    if action is not None:
        avps.append(avp_u32(codec.AVP_REQUESTED_ACTION, action))
    if requested is not None:
        avps.append(requested)
    if used is not None:
        avps.append(used)
    avps.extend(multiple)
    if called is not None:
        v = codec.VENDOR_3GPP
        address = codec.encode_avp(832, called.encode(), vendor_id=v)
        ims = codec.encode_avp(876, address, vendor_id=v)
        avps.append(codec.encode_avp(873, ims, vendor_id=v))
    return encode_message(
        command_code=codec.CMD_CREDIT_CONTROL,
        application_id=4,
        hop_by_hop=hbh,
        end_to_end=end_to_end if end_to_end is not None else hbh,
        avps=avps,
        flags=FLAG_REQUEST | codec.FLAG_PROXIABLE | (FLAG_RETRANSMIT if retransmit else 0),
    )


def result_code(message: Message) -> int | None:
    avp = message.find(codec.AVP_RESULT_CODE)
    return avp.as_u32() if avp is not None else None


def granted(message: Message) -> dict[int, int]:
    """Top-level Granted-Service-Unit members: {AVP code: value}."""
    avp = message.find(codec.AVP_GRANTED_SERVICE_UNIT)
    if avp is None:
        return {}
    return {m.code: int.from_bytes(m.data, "big") for m in avp.grouped()}


def mscc_answers(message: Message) -> list[dict[str, object]]:
    found = []
    for avp in message.find_all(codec.AVP_MULTIPLE_SERVICES_CREDIT_CONTROL):
        entry: dict[str, object] = {}
        for member in avp.grouped():
            if member.code == codec.AVP_RATING_GROUP:
                entry["rating_group"] = member.as_u32()
            elif member.code == codec.AVP_RESULT_CODE:
                entry["result_code"] = member.as_u32()
            elif member.code == codec.AVP_VALIDITY_TIME:
                entry["validity_time"] = member.as_u32()
            elif member.code == codec.AVP_GRANTED_SERVICE_UNIT:
                entry["granted"] = {m.code: int.from_bytes(m.data, "big") for m in member.grouped()}
        found.append(entry)
    return found


class Peer:
    """One TCP connection to a Diameter server, with a framer for what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = Framer(1 << 20)
        self.inbox: list[bytes] = []

    @classmethod
    async def connect(cls, host: str, port: int) -> Peer:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def receive(self, wait_s: float = 3.0) -> Message | None:
        """The next message, or None if the connection closed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not self.inbox:
            chunk = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
            if not chunk:
                return None
            self.inbox.extend(self.framer.feed(chunk))
        return parse_message(self.inbox.pop(0))

    async def request(self, data: bytes, wait_s: float = 3.0) -> Message:
        await self.send(data)
        answer = await self.receive(wait_s)
        assert answer is not None, "connection closed before the answer"
        return answer

    async def closed(self, wait_s: float = 3.0) -> bool:
        """True once the server closed the connection (anything sent meanwhile is skipped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        try:
            while True:
                chunk = await asyncio.wait_for(self.reader.read(65536), deadline - loop.time())
                if not chunk:
                    return True
        except (ConnectionError, TimeoutError):
            return isinstance(self.reader.exception(), ConnectionError)

    async def open(self, host: str = "pcef.localdomain") -> Message:
        answer = await self.request(cer(host))
        assert result_code(answer) == 2001, answer
        return answer

    def close(self) -> None:
        self.writer.close()
