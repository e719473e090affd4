"""`lkdevice deploy` to a real OpenSSH server standing in for the Pi, inside the test namespace.

The "Pi" is this machine seen through sshd on 10.77.0.2, started by the test in
its own mount namespace: a user `pi` (root's uid, so nothing is added to the
machine's accounts) whose home is a temporary folder, a host key and a user key
made here, /etc/systemd/system a temporary folder, and, as no systemd runs
here, `systemctl` and `journalctl` replaced by the stand-in
(tests/live/systemd_standin.py) that runs the unit deploy wrote, Type=notify
and all. The unit file is checked with the real `systemd-analyze verify`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from livekit import rtc

from .conftest import token

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"),
                                reason="no sshd: host_tools/system_deps.sh installs openssh-server")

HOST = "10.77.0.2"
PORT = 2222
STANDIN = Path(__file__).with_name("systemd_standin.py")
SERVICE = "lkdevice-robot.service"
HAS_ROBOT = importlib.util.find_spec("lkdevice.cli.robot") is not None


class FakePi:
    def __init__(self, root: Path):
        self.root = root
        self.home = root / "home" / "pi"
        self.units = root / "etc-systemd-system"
        self.state = root / "standin"
        self.user_key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "FakePi":
        for d in (self.home / ".ssh", self.units, self.state, self.root / "bin"):
            d.mkdir(parents=True)
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run(keygen + ["-f", str(self.root / "host_key")], check=True)
        subprocess.run(keygen + ["-f", str(self.user_key)], check=True)
        subprocess.run(keygen + ["-f", str(self.root / "stranger_key")], check=True)
        shutil.copy(f"{self.user_key}.pub", self.home / ".ssh" / "authorized_keys")
        host_pub = (self.root / "host_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[{HOST}]:{PORT} {' '.join(host_pub)}\n")
        # and `robo`, an account with no sudo (its uid is no one's on this machine); sshd reads its keys
        # as robo, so they sit in a folder robo can read
        self.robo = Path(tempfile.mkdtemp(prefix="lkd-robo-"))
        self.robo.chmod(0o755)
        shutil.copy(f"{self.user_key}.pub", self.robo / "authorized_keys")
        (self.robo / "authorized_keys").chmod(0o644)
        (self.root / "passwd").write_text(Path("/etc/passwd").read_text() + f"pi:x:0:0:pi:{self.home}:/bin/bash\n"
                                          f"robo:x:64999:64999:robo:{self.robo}:/bin/sh\n")
        (self.root / "shadow").write_text(Path("/etc/shadow").read_text() + "pi:*:19000:0:99999:7:::\n"
                                          "robo:*:19000:0:99999:7:::\n")
        for tool in ("systemctl", "journalctl"):
            path = self.root / "bin" / tool
            path.write_text(f"#!/bin/sh\nexec {sys.executable} {STANDIN} --state {self.state} "
                            f"--units /etc/systemd/system {tool} \"$@\"\n")
            path.chmod(0o755)
        (self.root / "sshd_config").write_text(f"""\
Port {PORT}
ListenAddress {HOST}
HostKey {self.root / 'host_key'}
PidFile {self.root / 'sshd.pid'}
AuthorizedKeysFile {self.home / '.ssh' / 'authorized_keys'} {self.robo / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
        binds = [(self.root / "passwd", "/etc/passwd"), (self.root / "shadow", "/etc/shadow"),
                 (self.units, "/etc/systemd/system"), (self.root / "bin" / "systemctl", "/usr/bin/systemctl"),
                 (self.root / "bin" / "journalctl", "/usr/bin/journalctl")]
        script = "set -e; mount -t tmpfs lkd-run /run; mkdir -p /run/sshd; " + "; ".join(
            f"mount --bind {src} {dst}" for src, dst in binds) + f"; exec /usr/sbin/sshd -D -e -f {self.root}/sshd_config"
        self.log = open(self.root / "sshd.log", "wb")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "sshd.log").read_text()
            try:
                socket.create_connection((HOST, PORT), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("sshd did not listen: " + (self.root / "sshd.log").read_text())

    def stop(self) -> None:
        for f in self.state.glob("*.json"):
            pid = json.loads(f.read_text()).get("supervisor")
            if pid:
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
        if self.proc:
            self.proc.terminate()
            self.proc.wait(5)
            self.log.close()
        shutil.rmtree(self.robo, ignore_errors=True)

    def standin_state(self) -> dict:
        try:
            return json.loads((self.state / f"{SERVICE}.json").read_text())
        except FileNotFoundError:
            return {}

    @property
    def base(self) -> list[str]:
        return ["-i", str(self.user_key), "--known-hosts", str(self.known_hosts)]


@pytest.fixture(scope="module")
def pi(tmp_path_factory):
    if os.environ.get("LKDEVICE_ISOLATED") != "1":
        pytest.fail("live tests run inside host_tools/isolated.sh")
    fake = FakePi(tmp_path_factory.mktemp("pi")).start()
    yield fake
    fake.stop()


async def lkdevice(*args: str, timeout: float = 180) -> tuple[int, str, str]:
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "lkdevice.cli", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    print(f"lkdevice {' '.join(args[:2])}: {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return proc.returncode, out.decode(), err.decode()


TARGET = f"pi@{HOST}:{PORT}"


async def test_user_mistakes_are_one_line_each(pi):
    cases = [
        (["pi@nosuch.invalid", "--status"], "no such host: nosuch.invalid"),
        ([TARGET, "--status", "-i", str(pi.root / "stranger_key"), "--known-hosts", str(pi.known_hosts)],
         "refused"),
        ([TARGET, "--status", "-i", str(pi.root / "missing_key"), "--known-hosts", str(pi.known_hosts)],
         "no such key file"),
        ([TARGET, "--status", "-i", str(pi.user_key), "--known-hosts", os.devnull], "host key is not trusted"),
        ([f"pi@{HOST}:2223", "--status", *pi.base], "refused the connection"),
        # this "Pi" is an x86_64 PC: deploy says so before it changes anything
        ([TARGET, "--config", str(write_config(pi.root / "c.toml", "ws://x", "t")), *pi.base],
         "not a Raspberry Pi (armv7l or aarch64)"),
        ([f"robo@{HOST}:{PORT}", "--config", str(pi.root / "c.toml"), "--any-arch", *pi.base],
         "robo cannot sudo without a password"),
        # caught here, before anything is sent
        ([TARGET, "--config", str(write_text(pi.root / "bad.toml", "[server\n")), *pi.base], "not valid TOML"),
    ]
    results = await asyncio.gather(*(lkdevice("deploy", *args, timeout=60) for args, _ in cases))
    for (args, expected), (code, out, err) in zip(cases, results):
        assert code == 2, (args, out, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, (args, err)
        assert "Traceback" not in out + err
    assert not (pi.home / "lkdevice-robot").exists()


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_config(path: Path, url: str, tok: str) -> Path:
    path.write_text(f'[server]\nurl = "{url}"\ntoken = "{tok}"\n\n[audio]\nbackend = "none"\n\n'
                    f'[camera]\nsource = "none"\n')
    return path


async def test_deploy_runs_the_robot_as_a_service_until_uninstalled(pi, server, room_name, peers):
    secret = token("robot", room_name)
    config = write_config(pi.root / "robot.toml", server.url, secret)
    # Debian's own Python has none of lkdevice's dependencies: offline, deploy names one and stops
    code, out, err = await lkdevice("deploy", TARGET, "--config", str(config), *pi.base, "--any-arch", "--offline",
                                    "--python", "/usr/bin/python3")
    assert code == 2 and err.startswith("error: offline install: the Pi has no ") and err.count("\n") == 1, err
    assert "in its system packages" in err and not (pi.units / SERVICE).exists()

    # a short watchdog, so the test sees the robot outlive a few of its periods
    code, out, err = await lkdevice("deploy", TARGET, "--config", str(config), *pi.base, "--any-arch", "--offline",
                                    "--python", sys.executable, "--watchdog", "2")
    assert secret not in out + err
    assert "Traceback" not in out + err

    # what deploy left on the Pi
    root = pi.home / "lkdevice-robot"
    unit = pi.units / SERVICE
    cfg = pi.home / ".config" / "lkdevice" / "robot.toml"
    assert cfg.read_text() == config.read_text() and cfg.stat().st_mode & 0o777 == 0o600
    assert "include-system-site-packages = true" in (root / "venv" / "pyvenv.cfg").read_text()
    where = subprocess.run([str(root / "venv" / "bin" / "python"), "-c", "import lkdevice; print(lkdevice.__file__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(root / "venv")), where  # the wheel, not this checkout
    text = unit.read_text()
    for line in ("Type=notify", "Restart=always", "WatchdogSec=2", "User=pi",
                 f"ExecStart={root}/venv/bin/lkdevice robot --config {cfg}"):
        assert line in text.splitlines(), line
    assert (pi.units / "multi-user.target.wants" / SERVICE).is_symlink()  # enabled: starts at boot
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    state = pi.standin_state()
    assert state["argv"] == [f"{root}/venv/bin/lkdevice", "robot", "--config", str(cfg)]

    if not HAS_ROBOT:
        # `lkdevice robot` is not on main yet: the deployed lkdevice runs and refuses the subcommand, and
        # deploy says the service did not start, in one line, after its status and log lines
        assert code == 2, out + err
        assert err.startswith("error: the robot service did not start") and err.count("\n") == 1, err
        assert "invalid choice: 'robot'" in out, out
        code, out, _ = await lkdevice("deploy", TARGET, "--status", *pi.base)
        assert code == 3 and "activating (auto-restart)" in out and "invalid choice: 'robot'" in out, out
    else:
        assert code == 0, out + err
        assert "Active: active (running)" in out, out
        # READY=1 came once the robot was in the room: the agent joining now finds it there
        peer = await peers("agent", server.url, room_name)
        if "robot" not in {p.identity for p in peer.room.remote_participants.values()}:
            await peer.expect("participant_connected", lambda p: p.identity == "robot", timeout=10)
        # the robot pings systemd's watchdog: three periods on, it is the same process, still in the room
        await asyncio.sleep(6)
        assert pi.standin_state()["starts"] == 1 and pi.standin_state()["state"] == "active"
        assert "robot" in {p.identity for p in peer.room.remote_participants.values()}
        assert not peer.saw("participant_disconnected")
        code, out, _ = await lkdevice("deploy", TARGET, "--status", *pi.base)
        assert code == 0 and "Active: active (running)" in out, out

    code, out, _ = await lkdevice("deploy", TARGET, "--logs", "--lines", "50", *pi.base)
    assert code == 0 and f"Starting {SERVICE}" in out and "lkdevice[" in out, out
    assert secret not in out

    code, out, err = await lkdevice("deploy", TARGET, "--stop", *pi.base)
    assert code == 0, err
    assert pi.standin_state()["state"] == "inactive"
    if HAS_ROBOT:
        # systemd's SIGTERM: the robot leaves the room itself
        (left,) = await peer.expect("participant_disconnected", lambda p: p.identity == "robot", timeout=15)
        assert left.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
    code, out, _ = await lkdevice("deploy", TARGET, "--status", *pi.base)
    assert code == 3 and "inactive (dead)" in out, out

    code, out, err = await lkdevice("deploy", TARGET, "--uninstall", *pi.base)
    assert code == 0, err
    assert not unit.exists() and not root.exists() and not cfg.exists()
    assert not (pi.units / "multi-user.target.wants" / SERVICE).exists()
