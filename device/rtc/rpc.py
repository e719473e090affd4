"""RPC v1 between participants: request, ack, response, each a data packet.

The caller waits for the ack within the connection timeout, then for the
response within the caller's response timeout. The callee acks at once, runs
the handler, and answers with a payload or an RpcError.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Awaitable, Callable, Union

from livekit.protocol import models

from .errors import Disconnected, RpcError

log = logging.getLogger(__name__)

MAX_RPC_PAYLOAD = 15 * 1024
ACK_TIMEOUT = 7.0
DEFAULT_RESPONSE_TIMEOUT = 10.0
RPC_VERSION = 1
# calls to us running at once; beyond it a caller gets an error at once, nothing queues
MAX_INCOMING_CALLS = 64


@dataclass
class RpcInvocation:
    request_id: str
    caller_identity: str
    payload: str
    response_timeout: float


RpcHandler = Callable[[RpcInvocation], Union[str, Awaitable[str]]]
RpcFallback = Callable[[str, RpcInvocation], Union[str, Awaitable[str]]]
SendPacket = Callable[[models.DataPacket], Awaitable[None]]


def _reliable(dest: str, **value) -> models.DataPacket:
    return models.DataPacket(kind=models.DataPacket.Kind.RELIABLE, destination_identities=[dest], **value)


class RpcEndpoint:
    def __init__(self, send: SendPacket):
        self._send = send
        self._handlers: dict[str, RpcHandler] = {}
        self._acks: dict[str, asyncio.Future] = {}
        self._responses: dict[str, asyncio.Future] = {}
        self._callee_of: dict[str, str] = {}
        self._incoming = 0
        # for methods nobody registered, e.g. a gateway forwarding every call to its device
        self.fallback: RpcFallback | None = None

    # -- callee -------------------------------------------------------------
    def register(self, method: str, handler: RpcHandler) -> None:
        self._handlers[method] = handler

    def unregister(self, method: str) -> None:
        self._handlers.pop(method, None)

    async def handle_request(self, caller: str, req: models.RpcRequest) -> None:
        await self._send(_reliable(caller, rpc_ack=models.RpcAck(request_id=req.id)))
        if req.version != RPC_VERSION:
            err = RpcError(RpcError.UNSUPPORTED_VERSION, "unsupported RPC version")
            return await self._respond(caller, req.id, error=err)
        handler = self._handlers.get(req.method)
        if handler is None and self.fallback is not None:
            fallback, method = self.fallback, req.method
            handler = lambda inv: fallback(method, inv)  # noqa: E731
        if handler is None:
            err = RpcError(RpcError.UNSUPPORTED_METHOD, f"method {req.method!r} is not registered")
            return await self._respond(caller, req.id, error=err)
        if self._incoming >= MAX_INCOMING_CALLS:
            err = RpcError(RpcError.APPLICATION_ERROR, f"busy: {MAX_INCOMING_CALLS} calls already in flight")
            return await self._respond(caller, req.id, error=err)
        self._incoming += 1
        try:
            await self._run(caller, req, handler)
        finally:
            self._incoming -= 1

    async def _run(self, caller: str, req: models.RpcRequest, handler: RpcHandler) -> None:
        inv = RpcInvocation(req.id, caller, req.payload, req.response_timeout_ms / 1000.0)
        try:
            result = handler(inv)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                task = asyncio.ensure_future(result)
                # our own deadline, told apart from a TimeoutError the handler raises
                done, _ = await asyncio.wait({task}, timeout=max(inv.response_timeout, 0.1))
                if not done:
                    task.cancel()
                    return  # the caller has timed out already; answering would be noise
                result = task.result()
            payload = "" if result is None else str(result)
        except RpcError as err:
            return await self._respond(caller, req.id, error=err)
        except Exception:
            log.exception("RPC handler %r failed", req.method)
            err = RpcError(RpcError.APPLICATION_ERROR, "application error in method handler")
            return await self._respond(caller, req.id, error=err)
        if len(payload.encode()) > MAX_RPC_PAYLOAD:
            err = RpcError(RpcError.RESPONSE_PAYLOAD_TOO_LARGE, "response payload too large")
            return await self._respond(caller, req.id, error=err)
        await self._respond(caller, req.id, payload=payload)

    async def _respond(self, caller: str, request_id: str, *, payload: str = "", error: RpcError | None = None):
        resp = models.RpcResponse(request_id=request_id)
        if error is not None:
            resp.error.CopyFrom(models.RpcError(code=error.code, message=error.message[:256], data=error.data))
        else:
            resp.payload = payload
        try:
            await self._send(_reliable(caller, rpc_response=resp))
        except Disconnected:
            # the room closed while the handler ran (a gateway's device left): no one to answer
            log.debug("RPC %s: the room closed before the answer", request_id)

    # -- caller -------------------------------------------------------------
    async def call(self, destination: str, method: str, payload: str = "", *,
                   response_timeout: float = DEFAULT_RESPONSE_TIMEOUT) -> str:
        if len(payload.encode()) > MAX_RPC_PAYLOAD:
            raise RpcError(RpcError.REQUEST_PAYLOAD_TOO_LARGE, "request payload too large")
        request_id = str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        ack, response = loop.create_future(), loop.create_future()
        self._acks[request_id], self._responses[request_id] = ack, response
        self._callee_of[request_id] = destination
        req = models.RpcRequest(id=request_id, method=method, payload=payload,
                                response_timeout_ms=int(response_timeout * 1000), version=RPC_VERSION)
        try:
            try:
                await self._send(_reliable(destination, rpc_request=req))
            except Exception as exc:
                raise RpcError(RpcError.SEND_FAILED, f"could not send request: {exc}") from exc
            try:
                await asyncio.wait_for(asyncio.shield(ack), ACK_TIMEOUT)
            except asyncio.TimeoutError:
                raise RpcError(RpcError.CONNECTION_TIMEOUT, "no acknowledgement from the recipient") from None
            try:
                return await asyncio.wait_for(asyncio.shield(response), response_timeout)
            except asyncio.TimeoutError:
                raise RpcError(RpcError.RESPONSE_TIMEOUT, "response timed out") from None
        finally:
            self._acks.pop(request_id, None)
            self._responses.pop(request_id, None)
            self._callee_of.pop(request_id, None)

    def handle_ack(self, ack: models.RpcAck) -> None:
        fut = self._acks.get(ack.request_id)
        if fut and not fut.done():
            fut.set_result(None)

    def handle_response(self, resp: models.RpcResponse) -> None:
        ack = self._acks.get(resp.request_id)
        if ack and not ack.done():  # a response implies the ack
            ack.set_result(None)
        fut = self._responses.get(resp.request_id)
        if fut is None or fut.done():
            return
        if resp.WhichOneof("value") == "error":
            fut.set_exception(RpcError(resp.error.code, resp.error.message, resp.error.data))
        else:
            fut.set_result(resp.payload)

    def _fail(self, request_id: str, message: str) -> None:
        # fail only the future the caller is waiting on, so no exception goes unread
        ack, resp = self._acks.get(request_id), self._responses.get(request_id)
        fut = ack if ack is not None and not ack.done() else resp
        if fut is not None and not fut.done():
            fut.set_exception(RpcError(RpcError.RECIPIENT_DISCONNECTED, message))

    def participant_left(self, identity: str) -> None:
        for request_id, callee in list(self._callee_of.items()):
            if callee == identity:
                self._fail(request_id, "recipient disconnected")

    def close(self) -> None:
        for request_id in list(self._callee_of):
            self._fail(request_id, "room disconnected")
