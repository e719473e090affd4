"""A robot plugin loaded by `module:object` in the tests: a horn, and what the agent is doing."""

from __future__ import annotations

import asyncio

from lkdevice.robot.commands import Command, PayloadError, Plugin, PluginAPI, number


class Horn(Plugin):
    name = "horn"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.honks = 0
        self.states: list[tuple[str, str]] = []
        self.transcripts: list[tuple[str, str, bool]] = []

    def setup(self, api: PluginAPI) -> None:
        api.rpc("honk", self.honk)
        api.rpc("horn.heard", self.heard)
        api.rpc("horn.hang", self.hang)
        api.topic("horn", self.honk)

    async def honk(self, cmd: Command) -> dict:
        times = number(cmd.params(("times",)), "times", 1, int(self.settings.get("max_times", 3)), 1)
        if times != int(times):
            raise PayloadError("times must be a whole number")
        self.honks += int(times)
        return {"honked": int(times), "total": self.honks}

    def heard(self, cmd: Command) -> dict:
        return {"states": self.states[-5:], "transcripts": self.transcripts[-5:]}

    async def hang(self, cmd: Command) -> str:
        await asyncio.sleep(3600)
        return "never"

    def agent_state(self, identity: str, state: str) -> None:
        self.states.append((identity, state))
        del self.states[:-16]  # bounded: the last few are what a horn cares about

    def transcript(self, identity: str, text: str, final: bool) -> None:
        self.transcripts.append((identity, text, final))
        del self.transcripts[:-16]


def make_horn(settings):
    return Horn(settings)


not_a_plugin = 42
