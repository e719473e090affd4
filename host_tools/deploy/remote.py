"""`lkdevice deploy`: the robot onto a Pi over SSH (asyncssh), as a systemd service.

asyncssh rather than paramiko: it is asyncio like the rest of lkdevice, one
pure-Python package over `cryptography` (paramiko adds bcrypt and PyNaCl), and
reads ~/.ssh/config, known_hosts and the ssh-agent as OpenSSH does.
Files go over the exec channel's stdin (`cat > file` under `umask 077`), so a
Pi without an SFTP server works too and a secret is never readable by others,
not even for a moment.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .plan import (PROBE, DeployError, Layout, Probe, Target, check, check_config, check_devices, config_tables,
                   pip_install, render_unit, sh)

CONNECT_TIMEOUT = 15.0
COMMAND_TIMEOUT = 900.0  # pip on a Pi 3 building nothing still takes minutes


@dataclass
class Options:
    target: Target
    identity: str | None = None
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts, as ssh
    python: str = "python3"
    offline: bool = False
    extra_index: list[str] = field(default_factory=list)
    any_arch: bool = False
    log_lines: int = 20
    wheel: str | None = None
    watchdog_s: int = 30


def _import_asyncssh():
    try:
        import asyncssh
    except ModuleNotFoundError:
        raise DeployError("deploy needs asyncssh: pip install 'lkdevice[deploy]'") from None
    return asyncssh


async def connect(opts: Options):
    asyncssh = _import_asyncssh()
    t = opts.target
    kw: dict = {"username": t.user, "port": t.port, "connect_timeout": CONNECT_TIMEOUT}
    if opts.identity:
        if not os.path.exists(opts.identity):
            raise DeployError(f"no such key file: {opts.identity}")
        kw["client_keys"] = [opts.identity]
        kw["agent_path"] = None
    if opts.known_hosts:
        kw["known_hosts"] = opts.known_hosts
    try:
        return await asyncssh.connect(t.host, **kw)
    except socket.gaierror:
        raise DeployError(f"no such host: {t.host}") from None
    except asyncssh.PermissionDenied:
        if not opts.identity and not os.environ.get("SSH_AUTH_SOCK") and not _default_keys():
            raise DeployError(f"no SSH key: make one with `ssh-keygen -t ed25519` and copy it with "
                              f"`ssh-copy-id {t}`") from None
        which = opts.identity or "your keys"
        raise DeployError(f"{t} refused {which} (authentication failed): copy the key with "
                          f"`ssh-copy-id {t}`") from None
    except asyncssh.HostKeyNotVerifiable as exc:
        raise DeployError(f"{t.host}'s host key is not trusted ({exc.reason}): `ssh {t}` once to accept it, "
                          "or give --known-hosts FILE") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise DeployError(f"no answer from {t.host}:{t.port} within {CONNECT_TIMEOUT:.0f} s") from None
    except ConnectionRefusedError:
        raise DeployError(f"{t.host}:{t.port} refused the connection: is sshd running? "
                          "(Raspberry Pi Imager: enable SSH; or `sudo raspi-config`)") from None
    except OSError as exc:
        raise DeployError(f"cannot reach {t.host}:{t.port}: {exc.strerror or exc}") from None
    except asyncssh.Error as exc:
        raise DeployError(f"ssh to {t}: {exc.reason}") from None


def _default_keys() -> list[str]:
    d = Path.home() / ".ssh"
    return [str(d / n) for n in ("id_ed25519", "id_ecdsa", "id_rsa") if (d / n).exists()]


class Remote:
    """Commands and files on the Pi; privileged ones through sudo when we are not root."""

    def __init__(self, conn, probe: Probe | None = None):
        self.conn = conn
        self.probe = probe

    async def run(self, cmd: str, *, input: bytes | None = None, check_: bool = True, sudo: bool = False,
                  timeout: float = COMMAND_TIMEOUT) -> tuple[int, str, str]:
        # POSIX sh whatever the user's login shell (fish, zsh...)
        run = "sh -c " + sh([cmd])
        if sudo and self.probe is not None and not self.probe.root:
            run = "sudo -n " + run
        r = await self.conn.run(run, input=input, encoding=None, timeout=timeout)
        out = (r.stdout or b"").decode(errors="replace")
        err = (r.stderr or b"").decode(errors="replace")
        code = r.exit_status if r.exit_status is not None else 255
        if check_ and code != 0:
            raise DeployError(f"on the Pi, `{_short(cmd)}` failed ({code}): {_last_line(err or out)}")
        return code, out, err

    async def write(self, path: str, data: bytes, *, mode: int, sudo: bool = False) -> None:
        """Write atomically (temp file then rename), created with `mode` (never wider first)."""
        d = os.path.dirname(path)
        umask = 0o777 & ~mode
        # folders keep their x bits (a file's umask would take them); a secret's folder is the user's only
        dir_umask = 0o077 if not mode & 0o077 else 0o022
        cmd = (f"(umask {dir_umask:03o} && mkdir -p {sh([d])}) && umask {umask:03o} && cat > {sh([path + '.new'])} && "
               f"chmod {mode:o} {sh([path + '.new'])} && mv -f {sh([path + '.new'])} {sh([path])}")
        await self.run(cmd, input=data, sudo=sudo)


def _short(cmd: str) -> str:
    return cmd if len(cmd) < 80 else cmd[:77] + "..."


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


# every folder pyproject.toml maps a package from ([tool.setuptools.package-dir]): the wheel's sources
SOURCE_DIRS = ("device", "host_tools", "hil/harness")


def build_wheel(out_dir: str) -> str:
    """The project's wheel, built here from this checkout with its own build backend (no network)."""
    src = Path(__file__).resolve().parents[2]
    if not (src / "pyproject.toml").exists():
        raise DeployError("this lkdevice is not a source checkout: build a wheel elsewhere and give --wheel FILE")
    with tempfile.TemporaryDirectory(prefix="lkdevice-wheel-") as tmp:
        # a clean copy: an old build/ in the checkout would ship modules since deleted
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(src / name, tmp)
        for name in SOURCE_DIRS:
            shutil.copytree(src / name, Path(tmp) / name, ignore=ignore)
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", out_dir, tmp], capture_output=True, text=True)
        if r.returncode != 0:
            raise DeployError(f"building the wheel failed: {_last_line(r.stderr or r.stdout)} "
                              "(the host needs setuptools>=70.1: pip install 'lkdevice[deploy]')")
    wheels = sorted(Path(out_dir).glob("lkdevice-*.whl"))
    if not wheels:
        raise DeployError("building the wheel made no lkdevice-*.whl")
    return str(wheels[-1])


Say = Callable[[str], None]


async def _probe(remote: Remote, opts: Options) -> Probe:
    _, out, _ = await remote.run(PROBE.replace("{python}", sh([opts.python])), check_=False, timeout=60)
    probe = Probe.parse(out)
    remote.probe = probe
    return probe


async def deploy(opts: Options, config_text: str, config_source: str, say: Say) -> int:
    check_config(config_text, config_source)
    conn = await connect(opts)
    async with conn:
        remote = Remote(conn)
        probe = await _probe(remote, opts)
        for w in check(probe, opts.target, opts.python, any_arch=opts.any_arch) + \
                check_devices(probe, config_tables(config_text), offline=opts.offline):
            say(f"warning: {w}")
        layout = Layout(probe.home)
        say(f"{opts.target}: {probe.os or 'linux'} {probe.os_version} {probe.arch}, Python {probe.python}")

        with tempfile.TemporaryDirectory(prefix="lkdevice-deploy-") as tmp:
            wheel = opts.wheel or build_wheel(tmp)
            name = os.path.basename(wheel)
            say(f"copying {name}")
            # one wheel kept: the one installed (each deploy would otherwise leave one more)
            await remote.run(f"rm -rf {sh([layout.wheels])}")
            await remote.write(f"{layout.wheels}/{name}", Path(wheel).read_bytes(), mode=0o644)

        # a venv that sees the system's packages: Pi OS's picamera2 (and, offline, apt's numpy, av...)
        await remote.run(venv_command(opts.python, layout.venv))
        say(f"installing into {layout.venv}" + (" (offline: --no-index, the Pi's own packages)"
                                                 if opts.offline else ""))
        for cmd in pip_install(layout, name, offline=opts.offline, extra_index=opts.extra_index):
            code, out, err = await remote.run(sh(cmd), check_=False)
            if code != 0:
                raise DeployError(_pip_failure(out + err, opts.offline))

        await remote.write(layout.config, config_text.encode(), mode=0o600)
        say(f"config {layout.config} (mode 0600; its secrets not shown)")
        unit = render_unit(layout, probe.user, watchdog_s=opts.watchdog_s)
        await remote.write(layout.unit, unit.encode(), mode=0o644, sudo=True)
        say(f"unit {layout.unit}")
        code, out, err = await remote.run("command -v systemd-analyze >/dev/null && "
                                          f"systemd-analyze verify {sh([layout.unit])} || true", check_=False,
                                          timeout=60)
        for line in (out + err).splitlines():
            if line.strip():
                say(f"systemd-analyze: {line.strip()}")

        svc = layout.service
        await remote.run("systemctl daemon-reload", sudo=True)
        await remote.run(f"systemctl enable {svc} 2>&1", sudo=True)
        code, _, err = await remote.run(f"systemctl restart {svc}", sudo=True, check_=False, timeout=150)
        await _show(remote, layout, opts.log_lines, say)
        if code != 0:
            raise DeployError("the robot service did not start: its status and log lines are above "
                              "(fix the config, then deploy again)")
        say(f"{svc} is running; it starts at every boot (lkdevice deploy {opts.target} --status|--logs|--stop)")
    return 0


# which interpreter a venv runs on: a venv from another Python (--python changed, Pi OS moved to
# a new Python) is made again rather than reused
_BASE = "import sys; print(sys.base_prefix, sys.version_info[:2])"


def venv_command(python: str, venv: str) -> str:
    vpy = f"{venv}/bin/python"
    return (f"want=$({sh([python, '-c', _BASE])}) && have=$({sh([vpy, '-c', _BASE])} 2>/dev/null); "
            f"[ \"$want\" = \"$have\" ] || {{ rm -rf {sh([venv])} && "
            f"{sh([python, '-m', 'venv', '--system-site-packages', venv])}; }}")


def _pip_failure(text: str, offline: bool) -> str:
    for line in reversed(text.splitlines()):
        if "No matching distribution found for" in line:
            dep = line.rsplit(" ", 1)[-1]
            if offline:
                return (f"offline install: the Pi has no {dep} in its system packages (apt install python3-..., "
                        "or deploy without --offline)")
            return f"pip found no {dep} for the Pi: on armv7 add --extra-index-url (piwheels); see docs/deploy.md"
    return f"pip install on the Pi failed: {_last_line(text)}"


async def _show(remote: Remote, layout: Layout, lines: int, say: Say) -> int:
    code, out, _ = await remote.run(f"systemctl status --no-pager --lines=0 {layout.service}", sudo=True,
                                    check_=False, timeout=30)
    for line in out.rstrip().splitlines():
        say(line)
    await _logs(remote, layout, lines, say)
    return code


async def _logs(remote: Remote, layout: Layout, lines: int, say: Say) -> None:
    _, out, _ = await remote.run(f"journalctl -u {layout.service} -n {int(lines)} --no-pager", sudo=True,
                                 check_=False, timeout=30)
    for line in out.rstrip().splitlines():
        say(line)


async def manage(opts: Options, action: str, say: Say) -> int:
    """--status, --logs, --stop, --uninstall."""
    conn = await connect(opts)
    async with conn:
        remote = Remote(conn)
        probe = await _probe(remote, opts)
        layout = Layout(probe.home)
        svc = layout.service
        if action == "status":
            code = await _show(remote, layout, opts.log_lines, say)
            return 0 if code == 0 else 3
        if action == "logs":
            await _logs(remote, layout, opts.log_lines, say)
            return 0
        if action == "stop":
            await remote.run(f"systemctl stop {svc}", sudo=True, timeout=60)
            say(f"{svc} stopped (still enabled: it starts again at boot; --uninstall removes it)")
            return 0
        if action == "uninstall":
            await remote.run(f"systemctl disable --now {svc} 2>&1 || true", sudo=True, check_=False, timeout=60)
            await remote.run(f"rm -f {sh([layout.unit])} && systemctl daemon-reload", sudo=True)
            await remote.run(f"rm -rf {sh([layout.root])} {sh([layout.config])}")
            say(f"{svc} removed: unit {layout.unit}, {layout.root} (venv, wheels), config {layout.config}")
            return 0
    raise ValueError(action)
