"""`lkdevice doctor`: what a user gets wrong between a board, its gateway and LiveKit, said in words.

Each check gives one `Finding` (ok, or a problem with what to do). The
judgements (a TLS mismatch, a certificate error, a token's claims, a board's
MicroPython) are plain functions of what the probes saw; the probes (DNS, TCP,
TLS, a WebSocket handshake, LiveKit's /rtc/v1/validate, the board's raw REPL)
are thin. A token is never printed: only its identity, room, grants and times.
"""

from __future__ import annotations

import ast
import asyncio
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

MIN_MICROPYTHON = (1, 22, 0)  # the firmware's floor (asyncio as the firmware uses it): firmware/README.md
TIMEOUT = 5.0
EXPIRES_SOON = 15 * 60.0      # a token with less left than this cannot carry a board through a rejoin
DEVICE_GRANTS = ("roomJoin", "canPublish", "canSubscribe", "canPublishData")


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"{'ok' if self.ok else 'PROBLEM':8} {self.check}: {self.message}"


def ok(check: str, message: str) -> Finding:
    return Finding(check, True, message)


def problem(check: str, message: str) -> Finding:
    return Finding(check, False, message)


# -- the gateway URL ---------------------------------------------------------------

@dataclass(frozen=True)
class GatewayUrl:
    scheme: str
    host: str
    port: int
    path: str
    query: str

    @property
    def tls(self) -> bool:
        return self.scheme == "wss"

    def with_(self, scheme: str | None = None, path: str | None = None) -> str:
        scheme = scheme or self.scheme
        host = f"[{self.host}]" if ":" in self.host else self.host
        q = f"?{self.query}" if self.query else ""
        return f"{scheme}://{host}:{self.port}{path if path is not None else self.path}{q}"


def parse_gateway_url(url: str) -> GatewayUrl:
    """Raises ValueError with the fix in words."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("http", "https"):
        fixed = ("wss" if parts.scheme == "https" else "ws") + url[len(parts.scheme):]
        raise ValueError(f"{url} is an http URL; the board speaks WebSocket: use {fixed}")
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r} is not a ws:// or wss:// URL (like ws://192.168.1.20:8765/v1/device)")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host name")
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise ValueError(f"{url!r} has a port that is not a number") from None
    return GatewayUrl(parts.scheme, parts.hostname, port, parts.path or "/", parts.query)


def judge_tls(url: GatewayUrl, server_speaks_tls: bool) -> Finding:
    if url.tls and not server_speaks_tls:
        return problem("ws/wss", f"the gateway at {url.host}:{url.port} does not speak TLS: use "
                                 f"{url.with_('ws')} (or start the gateway with --tls-cert and --tls-key for wss)")
    if not url.tls and server_speaks_tls:
        return problem("ws/wss", f"the gateway at {url.host}:{url.port} speaks TLS: use {url.with_('wss')}")
    return ok("ws/wss", "wss:// to a TLS gateway" if url.tls else "ws:// to a plain gateway (no TLS: "
              "fine on a LAN you trust)")


# OpenSSL verify codes (x509_vfy.h)
_HOST_MISMATCH = (62, 64)           # hostname, IP address
# self-signed leaf or chain, no local issuer, leaf signature, no issuer certificate, and a signature
# failure (a CA of the same name that did not sign it)
_UNTRUSTED = (18, 19, 20, 21, 2, 7)
_EXPIRED, _NOT_YET = 10, 9


def judge_certificate(url: GatewayUrl, error: ssl.SSLCertVerificationError | None, names: list[str],
                      ca: str | None) -> Finding:
    trust = f"the board's CA ({ca})" if ca else "this computer's trusted CAs (pass the board's CA with --ca)"
    if error is None:
        return ok("certificate", f"valid for {url.host}, signed by {trust}")
    code = getattr(error, "verify_code", None)
    if code in _HOST_MISMATCH:
        shown = ", ".join(names) or "other names"
        return problem("certificate", f"the gateway's certificate is for {shown}, not {url.host}: connect with "
                                      f"one of those names, or make a certificate that names {url.host}")
    if code in _UNTRUSTED:
        return problem("certificate", f"the gateway's certificate is not signed by {trust}: give the board "
                                      "the CA that signed it (provision --ca), or sign the gateway's "
                                      "certificate with the board's CA")
    if code == _EXPIRED:
        return problem("certificate", "the gateway's certificate has expired: make a new one")
    if code == _NOT_YET:
        return problem("certificate", "the gateway's certificate is not valid yet: check this computer's and "
                                      "the board's clocks")
    reason = getattr(error, "verify_message", None) or str(error)
    return problem("certificate", f"the gateway's certificate was refused ({reason})")


def judge_path(url: GatewayUrl, status: int | None, body: str) -> Finding:
    if status is None:
        return ok("path", f"{url.path} answers the device protocol")
    if status == 404:
        served = _served_path(body)
        if served:
            return problem("path", f"the gateway answers 404 for {url.path}; it serves the device protocol at "
                                   f"{served}: use {url.with_(path=served)}")
        return problem("path", f"{url.host}:{url.port} answers 404 for {url.path}, and is not an lkdevice "
                               "gateway that says where it serves (is the port right?)")
    detail = f": {body.strip()[:120]}" if body.strip() else ""
    return problem("path", f"the gateway refused the WebSocket for {url.path} with HTTP {status}{detail}")


def _served_path(body: str) -> str | None:
    # the gateway's 404 says "the device protocol is served at /v1/device"
    marker = "served at "
    if marker in body:
        return body.split(marker, 1)[1].split()[0].strip()
    return None


def _cert_names(der: bytes | None) -> list[str]:
    if not der:
        return []
    try:
        from cryptography import x509
        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            return [str(n) for n in san.get_values_for_type(x509.DNSName)] + \
                   [str(n) for n in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            return [a.value for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]
    except Exception:
        return []


def _probe_tls(host: str, port: int, timeout: float) -> tuple[bool, bytes | None]:
    """Does the server answer a TLS handshake? And its certificate, unverified."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                return True, tls.getpeercert(binary_form=True)
        except (ssl.SSLError, ConnectionError, OSError):
            return False, None


def _verify_tls(host: str, port: int, ca: str | None, timeout: float) -> ssl.SSLCertVerificationError | None:
    ctx = ssl.create_default_context(cafile=ca)
    with socket.create_connection((host, port), timeout) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=host):
                return None
        except ssl.SSLCertVerificationError as exc:
            return exc


async def _websocket_status(uri: str, ctx: ssl.SSLContext | None, timeout: float) -> tuple[int | None, str]:
    """None when the WebSocket opened; else the HTTP status and body the gateway answered with."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus
    try:
        ws = await asyncio.wait_for(connect(uri, ssl=ctx, open_timeout=None, ping_interval=None,
                                            compression=None), timeout)
    except InvalidStatus as exc:
        return exc.response.status_code, (exc.response.body or b"").decode(errors="replace")
    await ws.close()
    return None, ""


def check_gateway(url_text: str, ca: str | None = None, timeout: float = TIMEOUT) -> list[Finding]:
    try:
        url = parse_gateway_url(url_text)
    except ValueError as exc:
        return [problem("gateway URL", str(exc))]
    where = f"{url.host}:{url.port}"
    try:
        socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return [problem("reachable", f"the host name {url.host} does not resolve ({exc.strerror}): check its "
                                     "spelling, or use the gateway computer's IP address")]
    try:
        speaks_tls, der = _probe_tls(url.host, url.port, timeout)
    except ConnectionRefusedError:
        return [problem("reachable", f"nothing listens on {where} (connection refused): is `lkdevice gateway` "
                                     "running there, and is the port its --listen port?")]
    except (socket.timeout, TimeoutError):
        return [problem("reachable", f"no answer from {where} within {timeout:.0f} s: a firewall, or the wrong "
                                     "address (is the gateway listening on 0.0.0.0 or only 127.0.0.1?)")]
    except OSError as exc:
        return [problem("reachable", f"cannot reach {where}: {exc.strerror or exc}")]
    findings = [ok("reachable", f"{where} accepts connections"), judge_tls(url, speaks_tls)]
    ctx = None
    if speaks_tls:  # judged even when the URL said ws://, so that one run tells everything
        try:
            error = _verify_tls(url.host, url.port, ca, timeout)
        except FileNotFoundError:
            findings.append(problem("certificate", f"cannot read the CA file {ca}"))
            return findings
        except (OSError, ssl.SSLError) as exc:
            findings.append(problem("certificate", f"the TLS handshake failed: {exc}"))
            return findings
        findings.append(judge_certificate(url, error, _cert_names(der), ca))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # the path is judged whatever the certificate
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    uri = url.with_("wss" if speaks_tls else "ws")
    try:
        status, body = asyncio.run(_websocket_status(uri, ctx, timeout))
    except (asyncio.TimeoutError, TimeoutError):
        findings.append(problem("path", f"{where} accepted the connection but did not answer the WebSocket "
                                        f"handshake within {timeout:.0f} s: is it the gateway's port?"))
        return findings
    except Exception as exc:  # a server that is not HTTP at all
        findings.append(problem("path", f"{where} is not a WebSocket server ({type(exc).__name__}: "
                                        f"{str(exc)[:100]}): is it the gateway's port?"))
        return findings
    findings.append(judge_path(url, status, body))
    return findings


# -- the token ---------------------------------------------------------------------

def token_claims(token: str) -> dict:
    """The claims, read without the secret (the doctor has none). Raises ValueError."""
    import jwt
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise ValueError("the token is not a JWT (a LiveKit access token is three base64 parts joined by "
                         "dots): copy it again, whole") from None
    if not isinstance(claims, dict):
        raise ValueError("the token's payload is not a JSON object")
    return claims


def judge_claims(claims: dict, now: float) -> list[Finding]:
    out = []
    video = claims.get("video") if isinstance(claims.get("video"), dict) else {}
    missing = []
    for grant in DEVICE_GRANTS:
        # LiveKit reads an absent canPublish/canSubscribe/canPublishData as allowed; roomJoin must be set
        value = video.get(grant, grant != "roomJoin")
        if value is not True:
            missing.append(grant)
    if not video.get("room"):
        missing.append("a room name")
    sources = video.get("canPublishSources")
    if sources and "microphone" not in sources:
        missing.append("microphone in canPublishSources")
    who = f"identity {claims.get('sub')!r}" if claims.get("sub") else "no identity"
    if not claims.get("sub"):
        out.append(problem("token grants", "the token has no identity (sub): LiveKit refuses it; mint it with "
                                           "an identity for the board"))
    if missing:
        out.append(problem("token grants", f"the token ({who}) lacks {', '.join(missing)}, which a device needs: "
                                           "mint one with roomJoin, canPublish, canSubscribe and canPublishData "
                                           "for its room (lkdevice token --identity ... --room ...)"))
    elif claims.get("sub"):
        out.append(ok("token grants", f"{who} may join room {video['room']!r}, publish, subscribe and send data"))
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, (int, float)):
        out.append(problem("token expiry", "the token has no expiry (exp): LiveKit refuses it"))
    elif exp <= now:
        out.append(problem("token expiry", f"the token expired {_ago(now - exp)} ago ({_utc(exp)}): mint a new "
                                           "one, or give the board a token_url"))
    elif exp - now < EXPIRES_SOON:
        out.append(problem("token expiry", f"the token expires in {_ago(exp - now)} ({_utc(exp)}): a board that "
                                           "rejoins after that is refused; mint one with a longer ttl or use "
                                           "a token_url"))
    else:
        out.append(ok("token expiry", f"valid for {_ago(exp - now)} more ({_utc(exp)})"))
    if isinstance(nbf, (int, float)) and nbf > now + 60:
        out.append(problem("token expiry", f"the token is not valid for another {_ago(nbf - now)} (nbf): check "
                                           "the clock of the computer that minted it"))
    return out


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def check_token(token: str, now: float | None = None) -> list[Finding]:
    try:
        claims = token_claims(token)
    except ValueError as exc:
        return [problem("token", str(exc))]
    return judge_claims(claims, time.time() if now is None else now)


def _refusal_advice(reason: str) -> str:
    low = reason.lower()
    if "signature" in low:
        return "it was signed with another API secret than this server's; mint it with this server's key and secret"
    if "expired" in low:
        return "mint a new one"
    if "api key" in low or "apikey" in low or "key" in low and "not found" in low:
        return "its API key (iss) is not one this server knows"
    return "mint a new one with this server's API key and secret"


def check_livekit(livekit_url: str, token: str, timeout: float = TIMEOUT) -> Finding:
    """Ask the server itself: /rtc/v1/validate answers 200, or the reason it refuses the token."""
    from lkdevice.rtc.errors import redact_tokens
    from lkdevice.rtc.signaling import JoinOptions, join_query, validate_url
    try:
        url = validate_url(livekit_url)
    except ValueError as exc:
        return problem("LiveKit", str(exc))
    req = urllib.request.Request(f"{url}?{join_query(JoinOptions())}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body = r.status, r.read(2048).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(2048).decode(errors="replace")
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        return problem("LiveKit", f"cannot reach {livekit_url}: {reason}")
    except (socket.timeout, TimeoutError):
        return problem("LiveKit", f"no answer from {livekit_url} within {timeout:.0f} s")
    reason = redact_tokens(body.strip())[:200]
    if status == 200:
        return ok("LiveKit", f"{livekit_url} accepts the token")
    if status in (401, 403):
        return problem("LiveKit", f"{livekit_url} refuses the token (HTTP {status}): {reason or 'no reason given'}"
                                  f": {_refusal_advice(reason)}")
    if status == 404:
        return problem("LiveKit", f"{livekit_url} answers 404 for /rtc/v1/validate: is it a LiveKit server "
                                  "recent enough for /rtc/v1, as the gateway needs?")
    return problem("LiveKit", f"{livekit_url} answered HTTP {status}: {reason or 'no reason given'}")


# -- the board ---------------------------------------------------------------------

@dataclass(frozen=True)
class BoardInfo:
    version: tuple[int, ...]
    machine: str
    platform: str

    @property
    def chip(self) -> str:
        """As board files spell it: 'esp32s3' from '... with ESP32S3'; 'sim' for the unix port."""
        if self.platform == "linux":
            return "sim"
        if " with " in self.machine:
            return self.machine.rsplit(" with ", 1)[1].strip().lower().replace("-", "")
        return self.platform


PROBE = ("import sys\n"
         "print(repr((tuple(sys.implementation.version[:3]), getattr(sys.implementation, '_machine', ''), "
         "sys.platform)))\n")


def parse_probe(text: str) -> BoardInfo:
    version, machine, platform = ast.literal_eval(text.strip().splitlines()[-1])
    return BoardInfo(tuple(version), str(machine), str(platform))


def judge_board(info: BoardInfo, board: dict | None) -> list[Finding]:
    shown = ".".join(map(str, info.version))
    out = []
    if info.version < MIN_MICROPYTHON:
        want = ".".join(map(str, MIN_MICROPYTHON))
        out.append(problem("MicroPython", f"the board runs MicroPython {shown}; the firmware needs {want} or "
                                          "newer: lkdevice flash --board ... (it says which image to get)"))
    else:
        out.append(ok("MicroPython", f"{shown} on {info.machine or info.platform}"))
    if board is not None:
        want = board.get("chip")
        if info.chip != want:
            out.append(problem("chip", f"the board on the port is {info.chip} ({info.machine}), but board file "
                                       f"{board.get('name')!r} is for {want}: pick the board file for this board"))
        else:
            out.append(ok("chip", f"{info.chip}, as board file {board.get('name')!r} says"))
    return out


class RawRepl:
    """MicroPython's raw REPL over a serial port: Ctrl-C, Ctrl-A, code, Ctrl-D; output and error end in 0x04."""

    BANNER = b"raw REPL; CTRL-B to exit\r\n>"

    def __init__(self, port: str, timeout: float = 3.0):
        import serial  # the caller has checked that pyserial is there
        self.timeout = timeout
        self.serial = serial.serial_for_url(port, baudrate=115200, timeout=0.1, write_timeout=timeout,
                                            exclusive=True)
        self._buf = bytearray()

    def _read_until(self, marker: bytes, timeout: float) -> bytes:
        """Bytes up to and including `marker`; what came after it stays for the next read."""
        deadline = time.monotonic() + timeout
        while marker not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError(bytes(self._buf[-200:]))
            self._buf += self.serial.read(max(1, self.serial.in_waiting))
            if len(self._buf) > 65536:  # a board printing without end is not answering us
                del self._buf[:-4096]
        end = self._buf.index(marker) + len(marker)
        data = bytes(self._buf[:end])
        del self._buf[:end]
        return data

    def enter(self) -> None:
        self.serial.write(b"\r\x03\x03")  # stop what runs (the firmware, if it does)
        time.sleep(0.2)
        self.serial.reset_input_buffer()
        self._buf.clear()
        self.serial.write(b"\r\x01")
        self._read_until(self.BANNER, self.timeout)

    def run(self, code: str) -> str:
        self.serial.write(code.encode() + b"\x04")
        self._read_until(b"OK", self.timeout)
        out = self._read_until(b"\x04", self.timeout)[:-1]
        err = self._read_until(b"\x04", self.timeout)[:-1]
        self._read_until(b">", self.timeout)
        if err.strip():
            raise RuntimeError(err.decode(errors="replace").strip().splitlines()[-1])
        return out.decode(errors="replace")

    def leave(self) -> None:
        # back to the friendly REPL, then a soft reset: the firmware's main.py runs again (and sets its
        # watchdog anew; the probe took well under its 10 s)
        self.serial.write(b"\x02\x04")
        self.serial.flush()

    def close(self) -> None:
        self.serial.close()


def check_board(port: str | None, board: dict | None, timeout: float = 3.0) -> list[Finding]:
    from .flash import FlashError, list_ports, pick_port, port_trouble
    if port is None:
        try:
            port = pick_port(list_ports())
        except FlashError as exc:
            return [problem("board", str(exc))]
    try:
        import serial  # noqa: F401
    except ImportError:
        return [problem("board", "pyserial is not installed: pip install 'lkdevice[board]'")]
    try:
        repl = RawRepl(port, timeout)
    except Exception as exc:  # serial.SerialException: no such port, busy, no permission
        return [problem("board", port_trouble(port, str(exc)))]
    try:
        try:
            repl.enter()
            text = repl.run(PROBE)
        except TimeoutError:
            return [problem("board", f"no MicroPython REPL answered on {port}: is MicroPython flashed "
                                     "(lkdevice flash), is the port the board's, and is nothing else using it?")]
        except RuntimeError as exc:
            return [problem("board", f"the board on {port} could not run the probe: {exc}")]
        try:
            info = parse_probe(text)
        except (ValueError, SyntaxError, IndexError):
            return [problem("board", f"the board on {port} answered something that is not MicroPython's: "
                                     f"{text.strip()[:80]!r}")]
        repl.leave()
    finally:
        repl.close()
    return [ok("board", f"MicroPython answers on {port}")] + judge_board(info, board)


# -- the command -------------------------------------------------------------------

def run(args) -> int:
    findings: list[Finding] = []
    board = None
    if args.board:
        from .flash import FlashError, load_board
        try:
            board = load_board(args.board)
        except FlashError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.ca:
        try:
            ssl.create_default_context(cafile=args.ca)
        except (OSError, ssl.SSLError) as exc:
            print(f"error: cannot use {args.ca} as the board's CA: {getattr(exc, 'strerror', None) or exc}",
                  file=sys.stderr)
            return 2
    if args.livekit_url and not args.token:
        print("error: --livekit-url needs --token (the board's token, which the server is asked about)",
              file=sys.stderr)
        return 2
    if not (args.gateway or args.token or args.board or args.port):
        print("error: nothing to check: give --gateway URL, --livekit-url URL --token T, --token T, "
              "--board NAME and/or --port P", file=sys.stderr)
        return 2
    sections = []
    if args.gateway:
        sections.append(lambda: check_gateway(args.gateway, args.ca))
    if args.token:
        sections.append(lambda: check_token(args.token))
    if args.livekit_url and args.token:
        sections.append(lambda: [check_livekit(args.livekit_url, args.token)])
    if args.board or args.port:
        sections.append(lambda: check_board(args.port, board))
    for section in sections:
        for f in section():
            print(f.line(), flush=True)
            findings.append(f)
    bad = sum(not f.ok for f in findings)
    print(f"{bad} problem{'s' if bad != 1 else ''} found" if bad else "all good")
    return 1 if bad else 0
