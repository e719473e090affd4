"""`lkdevice deploy` to a real OpenSSH server standing in for the Pi, inside the test namespace.

The "Pi" is this machine seen through sshd on 10.77.0.2, started by the test in
its own mount namespace: a user `pi` with passwordless sudo and a user `robo`
without (accounts that exist only in that namespace: nothing is added to the
machine's), homes in temporary folders, a host key and a user key made here,
/etc/systemd/system a temporary folder, and, as no systemd runs here,
`systemctl` and `journalctl` replaced by the stand-in
(tests/live/systemd_standin.py) that runs the unit deploy wrote, Type=notify
and all. The unit file is checked with the real `systemd-analyze verify`.
"""

from __future__ import annotations

import asyncio
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

pytestmark = pytest.mark.skipif(not (os.path.exists("/usr/sbin/sshd") and shutil.which("sudo")),
                                reason="no sshd or sudo: host_tools/system_deps.sh installs them")

HOST = "10.77.0.2"
PORT = 2222
STANDIN = Path(__file__).with_name("systemd_standin.py")
SERVICE = "lkdevice-robot.service"


PI_UID, ROBO_UID = 64998, 64999  # no one's on this machine: the accounts exist only in sshd's mount namespace


class FakePi:
    """sshd on 10.77.0.2 in a mount namespace that plays a Pi OS user's view of this machine."""

    def __init__(self, root: Path):
        self.root = root  # the test's own files (root's, 0700)
        self.units = root / "etc-systemd-system"
        self.user_key = root / "id_ed25519"
        self.known_hosts = root / "known_hosts"
        self.proc: subprocess.Popen | None = None
        self.shared: list[Path] = []

    def _shared_dir(self, prefix: str, uid: int = 0) -> Path:
        # what the Pi's users must reach lives outside root's 0700 pytest folder
        d = Path(tempfile.mkdtemp(prefix=prefix))
        d.chmod(0o755)
        os.chown(d, uid, uid)
        self.shared.append(d)
        return d

    def start(self) -> "FakePi":
        for d in (self.units, self.root / "bin", self.root / "sudoers.d"):
            d.mkdir(parents=True)
        self.home = self._shared_dir("lkd-pi-", PI_UID)  # `pi`: passwordless sudo, as Pi OS's first user
        self.robo = self._shared_dir("lkd-robo-", ROBO_UID)  # `robo`: no sudo
        self.state = self._shared_dir("lkd-standin-")  # the stand-in's notify sockets and journal
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        subprocess.run(keygen + ["-f", str(self.root / "host_key")], check=True)
        subprocess.run(keygen + ["-f", str(self.user_key)], check=True)
        subprocess.run(keygen + ["-f", str(self.root / "stranger_key")], check=True)
        for home, uid in ((self.home, PI_UID), (self.robo, ROBO_UID)):
            (home / ".ssh").mkdir(mode=0o700)
            shutil.copy(f"{self.user_key}.pub", home / ".ssh" / "authorized_keys")
            for f in (home / ".ssh", home / ".ssh" / "authorized_keys"):
                os.chown(f, uid, uid)
        host_pub = (self.root / "host_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[{HOST}]:{PORT} {' '.join(host_pub)}\n")
        (self.root / "passwd").write_text(Path("/etc/passwd").read_text() +
                                          f"pi:x:{PI_UID}:{PI_UID}:pi:{self.home}:/bin/bash\n"
                                          f"robo:x:{ROBO_UID}:{ROBO_UID}:robo:{self.robo}:/bin/sh\n")
        (self.root / "group").write_text(Path("/etc/group").read_text() + f"pi:x:{PI_UID}:\nrobo:x:{ROBO_UID}:\n")
        (self.root / "shadow").write_text(Path("/etc/shadow").read_text() + "pi:*:19000:0:99999:7:::\n"
                                          "robo:*:19000:0:99999:7:::\n")
        (self.root / "sudoers.d" / "lkd-pi").write_text("pi ALL=(ALL) NOPASSWD: ALL\n")
        (self.root / "sudoers.d" / "lkd-pi").chmod(0o440)
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
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
Subsystem sftp internal-sftp
""")
        binds = [(self.root / "passwd", "/etc/passwd"), (self.root / "group", "/etc/group"),
                 (self.root / "shadow", "/etc/shadow"), (self.root / "sudoers.d", "/etc/sudoers.d"),
                 (self.units, "/etc/systemd/system"), (self.root / "bin" / "systemctl", "/usr/bin/systemctl"),
                 (self.root / "bin" / "journalctl", "/usr/bin/journalctl")]
        script = ["set -e", "mount -t tmpfs lkd-run /run", "mkdir -p /run/sshd"]
        script += [f"mount --bind {src} {dst}" for src, dst in binds]
        # this machine's Python may live in /root (pyenv), which only root may enter: the Pi's users
        # see it at the same path through a /root that anyone may cross
        top = Path(sys.base_prefix).parts[:3]
        if top[:2] == ("/", "root"):
            script += [f"mount --bind /root/{top[2]} /srv", "mount -t tmpfs -o mode=755 lkd-root /root",
                       f"mkdir /root/{top[2]}", f"mount --bind /srv /root/{top[2]}"]
        script.append(f"exec /usr/sbin/sshd -D -e -f {self.root}/sshd_config")
        self.log = open(self.root / "sshd.log", "wb")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", "; ".join(script)],
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
        for d in self.shared:
            shutil.rmtree(d, ignore_errors=True)

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


async def lkdevice(*args: str, timeout: float = 180, env: dict | None = None) -> tuple[int, str, str]:
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "lkdevice.cli", *args, env=env,
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
    # a user with no key at all: no ~/.ssh, no agent
    keyless = pi.root / "keyless"
    keyless.mkdir()
    keyless_env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"} | {"HOME": str(keyless)}
    cases.append(([TARGET, "--status", "--known-hosts", str(pi.known_hosts)], "no SSH key: make one with"))
    results = await asyncio.gather(*(lkdevice("deploy", *args, timeout=60, env=keyless_env if "-i" not in args
                                              else None) for args, _ in cases))
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

    # an earlier version's wheel, left by a deploy before
    stale = pi.home / "lkdevice-robot" / "wheels" / "lkdevice-0.0.1-py3-none-any.whl"
    shutil.copy(next(stale.parent.glob("lkdevice-*.whl")), stale)

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
    assert cfg.stat().st_uid == PI_UID and (root / "venv").stat().st_uid == PI_UID
    wheels = [p.name for p in (root / "wheels").iterdir()]
    assert len(wheels) == 1 and wheels[0].startswith("lkdevice-"), wheels  # the old one is gone
    assert unit.stat().st_uid == 0  # through sudo
    assert cfg.parent.stat().st_mode & 0o077 == 0  # the secret's folder is pi's only
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
    # systemd's SIGTERM: the robot leaves the room itself
    (left,) = await peer.expect("participant_disconnected", lambda p: p.identity == "robot", timeout=15)
    assert left.disconnect_reason == rtc.DisconnectReason.CLIENT_INITIATED
    code, out, _ = await lkdevice("deploy", TARGET, "--status", *pi.base)
    assert code == 3 and "inactive (dead)" in out, out

    code, out, err = await lkdevice("deploy", TARGET, "--uninstall", *pi.base)
    assert code == 0, err
    assert not unit.exists() and not root.exists() and not cfg.exists()
    assert not (pi.units / "multi-user.target.wants" / SERVICE).exists()
