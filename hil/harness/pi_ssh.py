"""`pi:<user@host>`: a real Pi, deployed with `lkdevice deploy` and watched over ssh.

The first start deploys this checkout (`lkdevice deploy USER@HOST --config`,
the robot with the test camera, no audio and the sim drive, which logs what it
is told); every start writes the config with the token the harness minted
(0600, as deploy does) and restarts the service, its journal followed over ssh
from just before (`journalctl -f`). RSS and open handles come from the
service's main process, read in /proc over ssh. A reset and a rejoin are a
service restart (the robot leaves the room only when its process ends). The
identity is the deployed wheel's: its version and hash.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

from . import target as t
from .procinfo import git_commit
from .sim_pi import ERROR_LINE, MISSING as SIM_PI_MISSING, SimPi

MISSING = {
    t.MIC: "the Pi target runs the robot without audio: a sound card loop on the Pi is not built yet",
    t.SPEAKER: "the Pi target runs the robot without audio: a sound card loop on the Pi is not built yet",
    **{k: SIM_PI_MISSING[k] for k in (t.DATA_OUT, t.RPC_OUT, t.LED, t.HEAP)},
}
SAMPLE = ("pid=$(systemctl show -p MainPID --value {svc}); [ \"$pid\" -gt 0 ] 2>/dev/null && "
          "echo $pid $(grep VmRSS /proc/$pid/status | tr -s ' ' | cut -d' ' -f2) $(ls /proc/$pid/fd | wc -l)")


def _in_thread(coro):
    """Run a coroutine to its end on a loop of its own (make_target is called with or without a loop running)."""
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


class PiSsh(t.Target):
    capabilities = frozenset({t.JOIN, t.DATA_IN, t.RPC_IN, t.AGENT_STATE, t.RSS, t.HANDLES, t.REJOIN})
    identity_name = "robot"
    rss_of = "the robot service"

    def __init__(self, where: str, *, ssh_key: str | None = None, known_hosts: str | None = None,
                 python: str | None = None, offline: bool = False, any_arch: bool = False,
                 sample_every: float = 2.0):
        super().__init__()
        from lkdevice.host_tools.deploy import DeployError, Options, Target
        try:
            self.opts = Options(target=Target.parse(where), identity=ssh_key, known_hosts=known_hosts,
                                python=python or "python3", offline=offline, any_arch=any_arch)
            _in_thread(self._reachable())  # a wrong host, key or port: one line now, not a failed scenario later
        except DeployError as e:
            raise ValueError(str(e)) from None
        self.name = f"pi:{self.opts.target}"
        self.sample_every = sample_every
        self._deployed = False
        self._conn = None
        self._remote = None
        self._layout = None
        self._journal = None
        self._tasks: list[asyncio.Task] = []
        self._samples: deque[t.Sample] = deque(maxlen=10_000)
        # the report keeps this object: filled in once the deploy says what is on the Pi
        self._identity = t.Identity(self.name, board="robot service (--camera test, no audio, --plugin sim)",
                                    git_commit=git_commit(Path(__file__).resolve().parent))

    async def _reachable(self) -> None:
        from lkdevice.host_tools.deploy.remote import connect
        conn = await connect(self.opts)
        conn.close()

    # --- deploy, connect

    def _deploy_args(self) -> list[str]:
        o = self.opts
        args = [str(o.target), "--python", o.python]
        args += ["-i", o.identity] if o.identity else []
        args += ["--known-hosts", o.known_hosts] if o.known_hosts else []
        args += ["--offline"] if o.offline else []
        args += ["--any-arch"] if o.any_arch else []
        return args

    async def _deploy(self, config: str) -> None:
        fd, path = tempfile.mkstemp(prefix="lkd-hil-robot-", suffix=".toml")  # 0600: it holds the token
        try:
            with os.fdopen(fd, "w") as f:
                f.write(config)
            r = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "lkdevice.cli", "deploy",
                                                         *self._deploy_args(), "--config", path],
                                        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
        finally:
            os.unlink(path)
        if r.returncode != 0:
            last = (r.stderr.strip() or r.stdout.strip() or "(no output)").splitlines()[-1]
            raise t.TargetError(f"`lkdevice deploy {self.opts.target}` failed: {last}")
        self._deployed = True

    async def _connect(self) -> None:
        from lkdevice.host_tools.deploy import DeployError
        from lkdevice.host_tools.deploy.plan import Layout
        from lkdevice.host_tools.deploy.remote import Remote, _probe, connect
        try:
            self._conn = await connect(self.opts)
        except DeployError as e:
            raise t.TargetError(str(e)) from None
        self._remote = Remote(self._conn)
        probe = await _probe(self._remote, self.opts)
        self._layout = Layout(probe.home)

    def _sudo(self, cmd: str) -> str:
        from lkdevice.host_tools.deploy.plan import sh
        run = "sh -c " + sh([cmd])
        return run if self._remote.probe.root else "sudo -n " + run

    async def _what_is_deployed(self) -> None:
        lay = self._layout
        _, out, _ = await self._remote.run(
            f"cd {lay.wheels} && for w in lkdevice-*.whl; do echo $w $(sha256sum $w | cut -c1-16); done; "
            f"{lay.venv}/bin/python -c 'import lkdevice, sys; print(lkdevice.__version__, sys.version.split()[0])'; "
            "uname -m", check_=False, timeout=60)
        words = out.split()
        if len(words) >= 5:
            wheel, digest, version, python, arch = words[-5:]
            self._identity.firmware_hash = digest
            self._identity.extra.update({"wheel": wheel, "lkdevice": version, "python": python, "arch": arch})

    # --- power

    async def start(self, url: str, room: str, token: str) -> None:
        from lkdevice.host_tools.deploy.plan import render_config
        self.console = t.Console()
        self._samples.clear()
        config = render_config(url=url, token=token, camera="test", audio="none", plugins=["sim"])
        if not self._deployed:
            await self._deploy(config)
        await self._connect()
        if not self._identity.firmware_hash:
            await self._what_is_deployed()
        await self._remote.write(self._layout.config, config.encode(), mode=0o600)
        await self._follow_journal()
        await self._restart()
        self._tasks.append(asyncio.ensure_future(self._sample()))

    async def _follow_journal(self) -> None:
        svc = self._layout.service
        # on a terminal: when the connection closes, the hang-up ends journalctl on the Pi too
        self._journal = await self._conn.create_process(
            self._sudo(f"journalctl -u {svc} -f -n 0 --no-pager --output=cat"), term_type="dumb")
        console = self.console

        async def read():
            try:
                async for line in self._journal.stdout:
                    console.feed(line.rstrip("\r\n"))
            except Exception:  # the connection closed: stop() or the Pi went away
                pass
        self._tasks.append(asyncio.ensure_future(read()))
        await asyncio.sleep(0.5)  # journalctl is following before the service starts

    async def _restart(self) -> None:
        # not waiting for READY=1 (the robot in the room): how long it takes to join is the scenario's to measure
        code, out, err = await self._remote.run(f"systemctl restart --no-block {self._layout.service}", sudo=True,
                                                check_=False, timeout=150)
        if code != 0:
            raise t.TargetError(f"the robot service did not start on {self.opts.target}: "
                                + ((err or out).strip().splitlines() or ["(no output)"])[-1])

    async def _sample(self) -> None:
        cmd = SAMPLE.format(svc=self._layout.service)
        while True:
            now = time.monotonic()
            try:
                _, out, _ = await self._remote.run(cmd, check_=False, timeout=10)
                pid, rss, fds = (int(x) for x in out.split()[:3])
                self._samples.append(t.Sample(now, rss=rss * 1024, handles=fds))
            except (ValueError, asyncio.TimeoutError):
                pass  # restarting: no main process this time
            except Exception:  # the connection is gone (stop(), or the Pi away): no more samples
                return
            await asyncio.sleep(max(0.0, self.sample_every - (time.monotonic() - now)))

    async def stop(self) -> list[str]:
        if self._conn is None:
            return []
        errors = self.errors()
        code, out, err = await self._remote.run(f"systemctl stop {self._layout.service}", sudo=True, check_=False,
                                                timeout=60)
        if code != 0:
            errors.append(f"stopping the robot service failed: {(err or out).strip()[-200:]}")
        await asyncio.sleep(0.5)  # its last lines
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        errors += [line for line in self.console.lines() if ERROR_LINE.search(line)
                   and line not in errors][:20 - len(errors)]
        self.console.close()
        self._conn.close()
        self._conn = None
        return errors

    async def reset(self) -> None:
        await self._restart()

    async def rejoin(self, timeout: float) -> None:
        mark = self.console.mark()
        await self._restart()
        await self.expect(r"joined room ", timeout, since=mark)

    def errors(self) -> list[str]:
        return [line for line in self.console.lines() if ERROR_LINE.search(line)][:20]

    def describe_missing(self, capability: str) -> str:
        return MISSING.get(capability, super().describe_missing(capability))

    def mic_origin(self) -> float | None:
        return None

    def recording(self) -> t.Recording:
        return t.Recording(np.zeros(0, np.int16), 48000, 0.0)

    def identity(self) -> t.Identity:
        return self._identity

    def samples(self) -> list[t.Sample]:
        return list(self._samples)

    data_probe = SimPi.data_probe
    rpc_probe = SimPi.rpc_probe
    agent_state_line = SimPi.agent_state_line
