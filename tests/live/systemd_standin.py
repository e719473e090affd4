"""A test fake for a machine with no systemd running: `systemctl` and `journalctl` for one kind of unit.

It reads the real unit file that `lkdevice deploy` wrote and runs its
ExecStart as systemd would for Type=notify: a supervisor process holds the
NOTIFY_SOCKET (READY=1 makes the unit active, WATCHDOG=1 feeds WatchdogSec,
a missed watchdog is SIGABRT), Restart=always with RestartSec, SIGTERM on
stop then SIGKILL after TimeoutStopSec, stdout and stderr into a journal file.
Only what the deploy and its test use; the state lives in --state DIR.

    python systemd_standin.py --state DIR --units DIR systemctl start NAME
"""

from __future__ import annotations

import argparse
import configparser
import grp
import json
import os
import pwd
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


class Unit:
    def __init__(self, units: Path, name: str):
        self.name = name if name.endswith(".service") else f"{name}.service"
        self.path = units / self.name
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str
        self.exists = self.path.exists()
        if self.exists:
            cp.read(self.path)
        self.unit = dict(cp["Unit"]) if cp.has_section("Unit") else {}
        self.service = dict(cp["Service"]) if cp.has_section("Service") else {}
        self.wants = units / "multi-user.target.wants" / self.name

    def sec(self, key: str, default: float) -> float:
        v = self.service.get(key, "")
        return float(v.rstrip("s")) if v else default

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.service["ExecStart"])


class State:
    def __init__(self, root: Path, unit: Unit):
        self.path = root / f"{unit.name}.json"
        self.journal = root / f"{unit.name}.journal"
        self.notify = root / f"{unit.name}.notify"

    def read(self) -> dict:
        try:
            st = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {"state": "inactive"}
        if st.get("state") != "inactive" and not _alive(st.get("supervisor", 0)):
            st["state"] = "failed" if st.get("state") != "inactive" else "inactive"
        return st

    def write(self, **kw) -> None:
        st = self.read() if self.path.exists() else {}
        st.update(kw)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(st))
        tmp.replace(self.path)

    def log(self, who: str, line: str) -> None:
        stamp = time.strftime("%b %d %H:%M:%S")
        with open(self.journal, "a") as f:
            f.write(f"{stamp} {socket.gethostname()} {who}: {line}\n")


def _alive(pid: int) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def supervise(unit: Unit, state: State) -> int:
    stopping = threading.Event()
    proc: list[subprocess.Popen] = []

    def on_term(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    if state.notify.exists():
        state.notify.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(state.notify))
    os.chmod(state.notify, 0o666)  # as /run/systemd/notify: a service running as its User= may send
    sock.settimeout(0.1)
    watchdog = unit.sec("WatchdogSec", 0)
    user = unit.service.get("User")
    desc = unit.unit.get("Description", unit.name)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "NOTIFY_SOCKET": str(state.notify)}
    ids: dict = {}
    if user:
        pw = pwd.getpwnam(user)
        env.update(HOME=pw.pw_dir, USER=user, LOGNAME=user, SHELL=pw.pw_shell)
        if os.getuid() == 0:
            ids = {"user": pw.pw_uid, "group": pw.pw_gid,
                   "extra_groups": [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]}
    for item in shlex.split(unit.service.get("Environment", "")):
        k, _, v = item.partition("=")
        env[k] = v
    if watchdog:
        env["WATCHDOG_USEC"] = str(int(watchdog * 1e6))
    state.write(state="activating", supervisor=os.getpid(), since=time.time(), argv=unit.argv, starts=0,
                status="")
    starts = 0
    while not stopping.is_set():
        starts += 1
        state.log("systemd[1]", f"Starting {unit.name} - {desc}...")
        child = subprocess.Popen(unit.argv, env=env, cwd=unit.service.get("WorkingDirectory") or "/",
                                 **ids, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        proc[:] = [child]
        name = os.path.basename(unit.argv[0])
        reader = threading.Thread(target=_pump, args=(child, state, f"{name}[{child.pid}]"), daemon=True)
        reader.start()
        state.write(state="activating", main_pid=child.pid, starts=starts)
        last_ping = time.monotonic()
        active = False
        while child.poll() is None and not stopping.is_set():
            try:
                msg = sock.recv(4096).decode(errors="replace")
            except socket.timeout:
                msg = ""
            for line in msg.splitlines():
                key, _, value = line.partition("=")
                if key == "READY" and value == "1" and not active:
                    # as systemd (service_enter_start_post): the watchdog runs from READY=1 on
                    active = True
                    last_ping = time.monotonic()
                    state.write(state="active", since=time.time())
                    state.log("systemd[1]", f"Started {unit.name} - {desc}.")
                elif key == "WATCHDOG" and value == "1":
                    last_ping = time.monotonic()
                elif key == "STATUS":
                    state.write(status=value)
                elif key == "STOPPING" and value == "1":
                    state.write(state="deactivating")
            if watchdog and active and time.monotonic() - last_ping > watchdog:
                state.log("systemd[1]", f"{unit.name}: Watchdog timeout (limit {watchdog:g}s)!")
                child.send_signal(signal.SIGABRT)
                child.wait()
        if stopping.is_set():
            break
        reader.join(2)
        state.log("systemd[1]", f"{unit.name}: Main process exited, status={child.returncode}")
        state.write(state="activating", sub="auto-restart", failed_start=not active, last_exit=child.returncode)
        deadline = time.monotonic() + unit.sec("RestartSec", 0.1)
        while time.monotonic() < deadline and not stopping.is_set():
            time.sleep(0.05)
    if proc and proc[0].poll() is None:
        state.log("systemd[1]", f"Stopping {unit.name} - {desc}...")
        proc[0].send_signal(signal.SIGTERM)
        try:
            proc[0].wait(unit.sec("TimeoutStopSec", 90))
        except subprocess.TimeoutExpired:
            state.log("systemd[1]", f"{unit.name}: State 'stop-sigterm' timed out. Killing.")
            proc[0].kill()
            proc[0].wait()
        state.log("systemd[1]", f"Stopped {unit.name} - {desc}.")
    state.write(state="inactive", main_pid=0, supervisor=0, sub="")
    sock.close()
    state.notify.unlink(missing_ok=True)
    return 0


def _pump(child: subprocess.Popen, state: State, who: str) -> None:
    for raw in child.stdout:
        state.log(who, raw.decode(errors="replace").rstrip("\n"))


def start(args, unit: Unit, state: State, block: bool = True) -> int:
    if not unit.exists:
        print(f"Failed to start {unit.name}: Unit {unit.name} not found.", file=sys.stderr)
        return 5
    if state.read()["state"] in ("active", "activating"):
        return 0
    state.path.unlink(missing_ok=True)
    me = [sys.executable, os.path.abspath(__file__), "--state", args.state, "--units", args.units]
    subprocess.Popen(me + ["systemctl", "supervise", unit.name], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not block:
        return 0  # --no-block: the job queued, not waited for (READY=1 comes later, or never)
    deadline = time.monotonic() + unit.sec("TimeoutStartSec", 90)
    while time.monotonic() < deadline:
        st = state.read() if state.path.exists() else {"state": "activating"}
        if st["state"] == "active":
            return 0
        if st.get("failed_start") or st["state"] in ("failed", "inactive"):
            break
        time.sleep(0.05)
    print(f"Job for {unit.name} failed because the control process exited with error code.\n"
          f"See \"systemctl status {unit.name}\" and \"journalctl -xeu {unit.name}\" for details.", file=sys.stderr)
    return 1


def stop(unit: Unit, state: State) -> int:
    st = state.read()
    pid = st.get("supervisor", 0)
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + unit.sec("TimeoutStopSec", 90) + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return 0


def status(unit: Unit, state: State, lines: int) -> int:
    if not unit.exists:
        print(f"Unit {unit.name} could not be found.", file=sys.stderr)
        return 4
    st = state.read()
    enabled = "enabled" if unit.wants.exists() else "disabled"
    active = {"active": "active (running)", "activating": f"activating ({st.get('sub') or 'start'})",
              "deactivating": "deactivating (stop-sigterm)", "failed": "failed"}.get(st["state"], "inactive (dead)")
    since = time.strftime(" since %a %Y-%m-%d %H:%M:%S UTC", time.gmtime(st["since"])) if st.get("since") else ""
    print(f"● {unit.name} - {unit.unit.get('Description', unit.name)}")
    print(f"     Loaded: loaded ({unit.path}; {enabled}; preset: enabled)")
    print(f"     Active: {active}{since if st['state'] != 'inactive' else ''}")
    if st.get("main_pid") and st["state"] != "inactive":
        print(f"   Main PID: {st['main_pid']} ({os.path.basename(st.get('argv', ['?'])[0])})")
    if st.get("status"):
        print(f"     Status: \"{st['status']}\"")
    if lines:
        print()
        journal(unit, state, lines)
    return 0 if st["state"] == "active" else 3


def journal(unit: Unit, state: State, lines: int) -> int:
    try:
        text = state.journal.read_text().splitlines()
    except OSError:
        print("-- No entries --")
        return 0
    for line in text[-lines:] if lines else text:
        print(line)
    return 0


def follow(state: State, lines: int) -> int:
    """journalctl -f: the last `lines` lines, then each new one as it comes, until killed."""
    state.journal.touch()
    with open(state.journal) as f:
        old = f.read().splitlines()
        for line in old[-lines:] if lines else []:
            print(line, flush=True)
        while True:
            line = f.readline()
            if line:
                print(line.rstrip("\n"), flush=True)
            else:
                time.sleep(0.1)


def show(unit: Unit, state: State, prop: str, value_only: bool) -> int:
    """systemctl show -p MainPID (what the harness reads /proc with); 0 when not running, as systemd."""
    st = state.read()
    values = {"MainPID": st.get("main_pid", 0) if st["state"] != "inactive" else 0, "ActiveState": st["state"],
              "NRestarts": max(0, st.get("starts", 1) - 1)}
    if prop not in values:
        print(f"stand-in systemctl: show -p {prop} is not supported", file=sys.stderr)
        return 1
    print(values[prop] if value_only else f"{prop}={values[prop]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--state", required=True)
    p.add_argument("--units", required=True)
    p.add_argument("tool")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    root = Path(args.state)
    root.mkdir(parents=True, exist_ok=True)
    flags = [a for a in args.rest if a.startswith("-")]
    words = [a for a in args.rest if not a.startswith("-")]
    lines = 10
    for i, a in enumerate(args.rest):
        if a.startswith("--lines="):
            lines = int(a.split("=", 1)[1])
        elif a in ("-n", "--lines") and i + 1 < len(args.rest):
            lines = int(args.rest[i + 1])
            words.remove(args.rest[i + 1])
    if args.tool == "journalctl":
        name = args.rest[args.rest.index("-u") + 1]
        words = [w for w in words if w != name]
        unit = Unit(Path(args.units), name)
        if "-f" in flags or "--follow" in flags:
            return follow(State(root, unit), lines)
        return journal(unit, State(root, unit), lines)
    if "--version" in flags:
        print("systemd 252 (lkdevice test stand-in)")
        return 0
    prop = None
    if "-p" in args.rest:
        prop = args.rest[args.rest.index("-p") + 1]
        words.remove(prop)
    verb, names = (words[0], words[1:]) if words else ("list-units", [])
    if verb == "daemon-reload":
        return 0
    code = 0
    for name in names:
        unit = Unit(Path(args.units), name)
        state = State(root, unit)
        if verb == "supervise":
            return supervise(unit, state)
        if verb == "enable":
            if not unit.exists:
                print(f"Failed to enable unit: Unit file {unit.name} does not exist.", file=sys.stderr)
                return 1
            unit.wants.parent.mkdir(exist_ok=True)
            if not unit.wants.exists():
                unit.wants.symlink_to(unit.path)
                print(f"Created symlink {unit.wants} → {unit.path}.")
            if "--now" in flags:
                code = code or start(args, unit, state)
        elif verb == "disable":
            if "--now" in flags:
                stop(unit, state)
            if unit.wants.is_symlink():
                unit.wants.unlink()
                print(f"Removed \"{unit.wants}\".")
        elif verb == "start":
            code = code or start(args, unit, state, block="--no-block" not in flags)
        elif verb == "restart":
            stop(unit, state)
            code = code or start(args, unit, state, block="--no-block" not in flags)
        elif verb == "stop":
            stop(unit, state)
        elif verb == "is-active":
            st = state.read()["state"]
            print(st)
            code = code or (0 if st == "active" else 3)
        elif verb == "show" and prop:
            code = code or show(unit, state, prop, "--value" in flags)
        elif verb == "status":
            code = code or status(unit, state, lines)
        else:
            print(f"stand-in systemctl: {verb} is not supported", file=sys.stderr)
            return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
