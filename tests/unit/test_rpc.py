"""device/rpc.py: two RpcEndpoints talking over a simulated data channel."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Callable

import pytest
from livekit.protocol import models

from lkdevice.rtc import rpc
from lkdevice.rtc.errors import RpcError
from lkdevice.rtc.rpc import MAX_RPC_PAYLOAD, RPC_VERSION, RpcEndpoint, RpcInvocation


class Wire:
    """Routes each packet, serialized and parsed again, to the endpoint it is addressed to."""

    def __init__(self) -> None:
        self.endpoints: dict[str, RpcEndpoint] = {}
        self.sent: list[tuple[str, models.DataPacket]] = []
        self.drop: Callable[[str, models.DataPacket], bool] = lambda sender, packet: False
        self.tasks: set[asyncio.Task] = set()

    def endpoint(self, identity: str) -> RpcEndpoint:
        async def send(packet: models.DataPacket) -> None:
            data = packet.SerializeToString()
            received = models.DataPacket()
            received.ParseFromString(data)
            received.participant_identity = identity  # the server stamps the sender
            self.sent.append((identity, received))
            if self.drop(identity, received):
                return
            for dest in received.destination_identities:
                target = self.endpoints.get(dest)
                if target is not None:
                    task = asyncio.get_running_loop().create_task(self._deliver(target, received))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

        ep = self.endpoints[identity] = RpcEndpoint(send)
        return ep

    @staticmethod
    async def _deliver(target: RpcEndpoint, packet: models.DataPacket) -> None:
        kind = packet.WhichOneof("value")
        if kind == "rpc_request":
            await target.handle_request(packet.participant_identity, packet.rpc_request)
        elif kind == "rpc_ack":
            target.handle_ack(packet.rpc_ack)
        elif kind == "rpc_response":
            target.handle_response(packet.rpc_response)

    def kinds(self, sender: str | None = None) -> list[str]:
        return [p.WhichOneof("value") for s, p in self.sent if sender is None or s == sender]

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


@pytest.fixture
async def wire():
    w = Wire()
    yield w
    for t in list(w.tasks):
        t.cancel()
    await asyncio.gather(*list(w.tasks), return_exceptions=True)


@pytest.fixture
def pair(wire):
    return wire.endpoint("device"), wire.endpoint("agent")


async def test_sync_handler_value_is_returned(pair, wire):
    device, agent = pair
    seen: list[RpcInvocation] = []

    def greet(inv: RpcInvocation) -> str:
        seen.append(inv)
        return f"hello {inv.payload}"

    agent.register("greet", greet)
    assert await device.call("agent", "greet", "robot", response_timeout=3.0) == "hello robot"
    (inv,) = seen
    assert inv.caller_identity == "device"
    assert inv.payload == "robot"
    assert inv.response_timeout == pytest.approx(3.0)
    assert inv.request_id
    await wire.settle()
    assert wire.kinds("device") == ["rpc_request"]
    assert wire.kinds("agent") == ["rpc_ack", "rpc_response"]


async def test_request_is_reliable_and_addressed(pair, wire):
    device, agent = pair
    agent.register("m", lambda inv: "ok")
    await device.call("agent", "m", "p")
    _, req_packet = wire.sent[0]
    assert req_packet.kind == models.DataPacket.Kind.RELIABLE
    assert list(req_packet.destination_identities) == ["agent"]
    req = req_packet.rpc_request
    assert (req.method, req.payload, req.version) == ("m", "p", RPC_VERSION)
    for _, packet in wire.sent[1:]:
        assert list(packet.destination_identities) == ["device"]
        assert packet.kind == models.DataPacket.Kind.RELIABLE


async def test_async_handler_value_is_returned(pair):
    device, agent = pair

    async def slow_echo(inv: RpcInvocation) -> str:
        await asyncio.sleep(0.01)
        return inv.payload.upper()

    agent.register("echo", slow_echo)
    assert await device.call("agent", "echo", "abc") == "ABC"


async def test_handler_returning_none_or_non_string(pair):
    device, agent = pair
    agent.register("none", lambda inv: None)
    agent.register("num", lambda inv: 42)
    assert await device.call("agent", "none") == ""
    assert await device.call("agent", "num") == "42"


async def test_concurrent_calls_get_their_own_answers(pair):
    device, agent = pair

    async def delayed(inv: RpcInvocation) -> str:
        await asyncio.sleep(float(inv.payload))
        return inv.payload

    agent.register("wait", delayed)
    results = await asyncio.gather(*(device.call("agent", "wait", d) for d in ("0.05", "0.01", "0.03")))
    assert results == ["0.05", "0.01", "0.03"]


async def test_calls_in_both_directions(pair):
    device, agent = pair
    device.register("where", lambda inv: "kitchen")
    agent.register("who", lambda inv: "agent")
    assert await agent.call("device", "where") == "kitchen"
    assert await device.call("agent", "who") == "agent"


async def test_rpc_error_propagates_code_message_and_data(pair):
    device, agent = pair

    def refuse(inv):
        raise RpcError(2001, "arm is busy", data='{"retry_in": 3}')

    agent.register("move", refuse)
    with pytest.raises(RpcError) as info:
        await device.call("agent", "move", "left")
    assert info.value.code == 2001
    assert info.value.message == "arm is busy"
    assert info.value.data == '{"retry_in": 3}'


async def test_async_handler_rpc_error(pair):
    device, agent = pair

    async def refuse(inv):
        await asyncio.sleep(0)
        raise RpcError(2002, "no")

    agent.register("m", refuse)
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m")
    assert (info.value.code, info.value.message, info.value.data) == (2002, "no", "")


async def test_long_error_message_is_truncated(pair):
    device, agent = pair

    def refuse(inv):
        raise RpcError(2003, "x" * 1000)

    agent.register("m", refuse)
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m")
    assert info.value.code == 2003
    assert info.value.message == "x" * 256


async def test_other_exception_is_application_error(pair, caplog):
    device, agent = pair

    def broken(inv):
        raise KeyError("secret internal detail")

    agent.register("m", broken)
    with caplog.at_level("ERROR", logger="lkdevice.rtc.rpc"):
        with pytest.raises(RpcError) as info:
            await device.call("agent", "m")
    assert info.value.code == RpcError.APPLICATION_ERROR == 1500
    assert "secret internal detail" not in info.value.message  # internals stay on the callee
    assert any("failed" in r.getMessage() for r in caplog.records)


async def test_async_exception_is_application_error(pair):
    device, agent = pair

    async def broken(inv):
        await asyncio.sleep(0)
        raise ValueError("bad")

    agent.register("m", broken)
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m")
    assert info.value.code == 1500


async def test_handler_raising_timeout_error_is_application_error(pair):
    device, agent = pair

    def broken(inv):
        raise TimeoutError("database did not answer")

    agent.register("m", broken)
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m", response_timeout=0.3)
    assert info.value.code == RpcError.APPLICATION_ERROR


async def test_unknown_method_is_unsupported(pair):
    device, agent = pair
    with pytest.raises(RpcError) as info:
        await device.call("agent", "nope")
    assert info.value.code == RpcError.UNSUPPORTED_METHOD == 1400


async def test_unregistered_method_is_unsupported(pair):
    device, agent = pair
    agent.register("m", lambda inv: "ok")
    assert await device.call("agent", "m") == "ok"
    agent.unregister("m")
    agent.unregister("never-registered")  # harmless
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m")
    assert info.value.code == 1400


async def test_unsupported_version(wire):
    agent = wire.endpoint("agent")
    device = wire.endpoint("device")  # noqa: F841 - receives the answer
    agent.register("m", lambda inv: "ok")
    req = models.RpcRequest(id="r1", method="m", payload="", response_timeout_ms=1000, version=2)
    await agent.handle_request("device", req)
    kinds = wire.kinds("agent")
    assert kinds == ["rpc_ack", "rpc_response"]
    resp = wire.sent[-1][1].rpc_response
    assert resp.request_id == "r1"
    assert resp.error.code == RpcError.UNSUPPORTED_VERSION == 1404


async def test_no_ack_is_connection_timeout(pair, wire, monkeypatch):
    monkeypatch.setattr(rpc, "ACK_TIMEOUT", 0.05)
    device, agent = pair
    wire.drop = lambda sender, packet: sender == "device"  # the request never arrives
    start = time.monotonic()
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m", response_timeout=5.0)
    assert info.value.code == RpcError.CONNECTION_TIMEOUT == 1501
    assert time.monotonic() - start < 1.0  # did not wait for the response timeout
    assert wire.kinds() == ["rpc_request"]


async def test_call_to_absent_participant_is_connection_timeout(wire, monkeypatch):
    monkeypatch.setattr(rpc, "ACK_TIMEOUT", 0.05)
    device = wire.endpoint("device")
    with pytest.raises(RpcError) as info:
        await device.call("nobody", "m")
    assert info.value.code == 1501


async def test_ack_but_slow_response_is_response_timeout(pair, wire, monkeypatch):
    monkeypatch.setattr(rpc, "ACK_TIMEOUT", 0.5)
    device, agent = pair

    async def slow(inv):
        await asyncio.sleep(2.0)
        return "late"

    agent.register("m", slow)
    start = time.monotonic()
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m", response_timeout=0.1)
    assert info.value.code == RpcError.RESPONSE_TIMEOUT == 1502
    assert time.monotonic() - start < 1.0
    await asyncio.sleep(0.15)
    await wire.settle()
    assert wire.kinds("agent") == ["rpc_ack"]  # the callee gave up too, no late answer


async def test_response_without_ack_still_completes(pair, wire):
    device, agent = pair
    wire.drop = lambda sender, packet: packet.WhichOneof("value") == "rpc_ack"
    agent.register("m", lambda inv: "ok")
    assert await device.call("agent", "m") == "ok"


async def test_request_payload_too_large(pair, wire):
    device, agent = pair
    agent.register("m", lambda inv: "ok")
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m", "x" * (MAX_RPC_PAYLOAD + 1))
    assert info.value.code == RpcError.REQUEST_PAYLOAD_TOO_LARGE == 1402
    # the limit is in UTF-8 bytes, not characters
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m", "é" * (MAX_RPC_PAYLOAD // 2 + 1))
    assert info.value.code == 1402
    assert wire.sent == []  # nothing went out
    assert await device.call("agent", "m", "x" * MAX_RPC_PAYLOAD) == "ok"


async def test_response_payload_too_large(pair):
    device, agent = pair
    agent.register("m", lambda inv: "y" * (MAX_RPC_PAYLOAD + 1))
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m")
    assert info.value.code == RpcError.RESPONSE_PAYLOAD_TOO_LARGE == 1504


async def test_send_failure(wire):
    async def broken_send(packet):
        raise ConnectionError("data channel closed")

    device = RpcEndpoint(broken_send)
    with pytest.raises(RpcError) as info:
        await device.call("agent", "m")
    assert info.value.code == RpcError.SEND_FAILED == 1505
    assert "data channel closed" in info.value.message


async def test_participant_left_while_waiting_for_ack(pair, wire, monkeypatch, loop_errors):
    monkeypatch.setattr(rpc, "ACK_TIMEOUT", 5.0)
    device, agent = pair
    wire.drop = lambda sender, packet: sender == "device"
    call = asyncio.ensure_future(device.call("agent", "m"))
    await asyncio.sleep(0.02)
    device.participant_left("someone-else")
    await asyncio.sleep(0.01)
    assert not call.done()
    device.participant_left("agent")
    with pytest.raises(RpcError) as info:
        await asyncio.wait_for(call, 1.0)
    assert info.value.code == RpcError.RECIPIENT_DISCONNECTED == 1503
    del call
    await _collect_garbage()  # let unretrieved-exception warnings surface, if any


async def test_participant_left_while_waiting_for_response(pair, wire, loop_errors):
    device, agent = pair
    started = asyncio.Event()

    async def slow(inv):
        started.set()
        await asyncio.sleep(5.0)
        return "late"

    agent.register("m", slow)
    call = asyncio.ensure_future(device.call("agent", "m", response_timeout=5.0))
    await asyncio.wait_for(started.wait(), 1.0)
    await asyncio.sleep(0.01)  # let the ack arrive
    device.participant_left("agent")
    with pytest.raises(RpcError) as info:
        await asyncio.wait_for(call, 1.0)
    assert info.value.code == 1503
    del call
    await _collect_garbage()


async def test_close_fails_pending_calls(pair, wire, loop_errors):
    device, agent = pair
    wire.drop = lambda sender, packet: sender == "device"
    call = asyncio.ensure_future(device.call("agent", "m"))
    await asyncio.sleep(0.01)
    device.close()
    with pytest.raises(RpcError) as info:
        await asyncio.wait_for(call, 1.0)
    assert info.value.code == 1503
    del call
    await _collect_garbage()


async def test_late_or_unknown_responses_are_ignored(wire, loop_errors):
    """A response after the caller gave up, a repeated one, or one nobody asked for
    changes nothing: no exception, no error left for the loop, the next call gets its own answer."""
    device = wire.endpoint("device")
    agent = wire.endpoint("agent")
    agent.register("echo", lambda inv: inv.payload)
    wire.drop = lambda sender, packet: sender == "agent" and packet.WhichOneof("value") == "rpc_response"
    with pytest.raises(RpcError) as info:
        await device.call("agent", "echo", "late", response_timeout=0.2)
    assert info.value.code == RpcError.RESPONSE_TIMEOUT
    timed_out = next(p.rpc_request.id for s, p in wire.sent if p.WhichOneof("value") == "rpc_request")
    wire.drop = lambda sender, packet: False

    device.handle_ack(models.RpcAck(request_id=timed_out))
    device.handle_response(models.RpcResponse(request_id=timed_out, payload="late"))
    device.handle_ack(models.RpcAck(request_id="unknown"))
    device.handle_response(models.RpcResponse(request_id="unknown", payload="x"))
    device.handle_response(models.RpcResponse(request_id="unknown", error=models.RpcError(code=1500)))

    assert await device.call("agent", "echo", "fresh") == "fresh"
    answered = [p.rpc_response for s, p in wire.sent if p.WhichOneof("value") == "rpc_response"]
    device.handle_response(answered[-1])  # the same answer again
    device.handle_ack(models.RpcAck(request_id=answered[-1].request_id))
    assert await device.call("agent", "echo", "again") == "again"
    await _collect_garbage()
    assert loop_errors == []


@pytest.fixture
async def loop_errors():
    """What asyncio reports to the loop's exception handler (e.g. "Future exception was never retrieved")."""
    loop = asyncio.get_running_loop()
    await _collect_garbage()  # earlier tests' leftovers are not ours
    previous = loop.get_exception_handler()
    errors: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(f"{ctx.get('message')}: {ctx.get('exception')!r}"))
    yield errors
    loop.set_exception_handler(previous)


async def _collect_garbage() -> None:
    for _ in range(3):
        gc.collect()
        await asyncio.sleep(0)


@pytest.mark.parametrize("how", ["participant_left", "close"])
async def test_abandoned_call_leaves_no_unretrieved_exception(wire, loop_errors, how):
    device = wire.endpoint("device")  # nobody answers
    call = asyncio.ensure_future(device.call("agent", "m"))
    await asyncio.sleep(0.01)
    if how == "participant_left":
        device.participant_left("agent")
    else:
        device.close()
    with pytest.raises(RpcError):
        await call
    del call
    await _collect_garbage()
    assert loop_errors == []


async def test_a_flood_of_calls_is_answered_busy_beyond_the_limit_not_queued():
    """A participant that fires calls faster than the handler ends them cannot grow our state without bound."""
    wire = Wire()
    caller, callee = wire.endpoint("caller"), wire.endpoint("device")
    release = asyncio.Event()
    running = 0

    async def slow(inv: RpcInvocation) -> str:
        nonlocal running
        running += 1
        await release.wait()
        return "done"

    callee.register("slow", slow)
    n = rpc.MAX_INCOMING_CALLS + 5
    calls = [asyncio.ensure_future(caller.call("device", "slow", "", response_timeout=5)) for _ in range(n)]
    for _ in range(100):
        await asyncio.sleep(0.01)
        if sum(c.done() for c in calls) >= 5:
            break
    assert running == rpc.MAX_INCOMING_CALLS
    busy = [c for c in calls if c.done()]
    assert len(busy) == 5
    for c in busy:
        assert isinstance(c.exception(), RpcError) and "in flight" in c.exception().message
    release.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(r == "done" for r in results) == rpc.MAX_INCOMING_CALLS
    await wire.settle()


async def test_a_call_whose_room_closed_before_the_answer_ends_quietly():
    """The gateway forwards a call to its device, the device leaves, the room is closed: the
    handler's error has no one to go to, and handle_request must not raise (it ran as a task of
    its own: an unretrieved exception, a traceback in the gateway's log)."""
    from lkdevice.rtc.errors import Disconnected
    sent: list[str] = []
    room_open = asyncio.Event()
    room_open.set()

    async def send(packet: models.DataPacket) -> None:
        if not room_open.is_set():
            raise Disconnected("CLIENT_INITIATED")
        sent.append(packet.WhichOneof("value"))

    async def device_leaves(inv: RpcInvocation) -> str:
        room_open.clear()  # the device's session ends and the gateway leaves the room meanwhile
        raise RpcError(1503, "device left")

    gateway = RpcEndpoint(send)
    gateway.register("lkdevice.info", device_leaves)
    req = models.RpcRequest(id="r1", method="lkdevice.info", payload="", response_timeout_ms=1000,
                            version=RPC_VERSION)
    await gateway.handle_request("agent", req)  # no Disconnected out of it
    assert sent == ["rpc_ack"]
