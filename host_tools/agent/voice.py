"""The Agent of the offline voice agent: the `Brain` in `llm_node`, robot RPCs on the device it talks to."""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.agents import Agent, llm

from .brain import Brain

log = logging.getLogger("lkdevice.agent")
RPC_TIMEOUT_S = 3.0


class NoModel(llm.LLM):
    """Stands where an LLM would: AgentSession replies to a user turn only when it has one.
    DeviceAgent's llm_node answers instead, so `chat` is never called."""

    @property
    def model(self) -> str:
        return "rules"

    @property
    def provider(self) -> str:
        return "lkdevice"

    def chat(self, **kwargs):  # type: ignore[override]
        raise NotImplementedError("the offline agent answers in DeviceAgent.llm_node; no model is called")


class DeviceAgent(Agent):
    def __init__(self, brain: Brain, room: rtc.Room):
        super().__init__(instructions="Rule-based offline assistant for lkdevice devices (no language model).")
        self.brain = brain
        self.room = room

    async def llm_node(self, chat_ctx: llm.ChatContext, tools, model_settings):  # type: ignore[override]
        heard = ""
        for item in reversed(chat_ctx.items):
            if getattr(item, "role", None) == "user":
                heard = item.text_content or ""
                break
        reply = self.brain.answer(heard)
        if reply.call is None:
            return reply.say or None
        call = reply.call
        target = self._device_identity()
        if target is None:
            return "There is no device here to do that."
        try:
            result = await self.room.local_participant.perform_rpc(
                destination_identity=target, method=call.method, payload=call.payload,
                response_timeout=RPC_TIMEOUT_S)
            error = None
        except rtc.RpcError as e:
            result, error = None, (int(e.code), e.message)
        log.info("rpc %s on %s: %s", call.method, target, "ok" if error is None else f"error {error[0]}")
        return self.brain.after_call(call, result, error)

    def _device_identity(self) -> str | None:
        """The participant the session listens to (the device); else the only other one."""
        try:
            linked = self.session.room_io.linked_participant
        except RuntimeError:
            linked = None
        if linked is not None:
            return linked.identity
        others = list(self.room.remote_participants)
        return others[0] if len(others) == 1 else None
