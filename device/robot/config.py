"""The robot's config file (TOML), checked key by key; command-line flags override it.

    [server]
    url = "wss://example.livekit.cloud"
    # one token source: token, token_file (read again at every connect), or
    # token_url (`lkdevice token-server`: X-Device-Id and the device key as Bearer)
    token_url = "https://tokens.example.com/token"
    device_id = "b827eb4c1e01"        # hex, as the token server expects
    device_key_file = "/etc/lkdevice/device_key"

    [audio]
    backend = "sounddevice"      # sounddevice, wav, none
    input_device = "USB"         # name (or part of it) or index; default: the system's
    output_device = "USB"
    half_duplex = true           # mic muted while the agent speaks

    [camera]
    source = "picamera2"         # test, picamera2, v4l2:/dev/video0, none
    codec = "auto"               # vp8, h264, passthrough, auto
    size = "640x480"
    fps = 30
    bitrate_kbps = 1000

    [plugins]
    load = ["sim"]               # "sim", "module:object" or an entry point name
    watchdog_s = 0.5             # motors stop when no command came for this long
    [plugins.sim]                # settings handed to the plugin named sim
    battery = 0.8

A mistake in the file is one line naming the key (`ConfigError`), never a traceback.
"""

from __future__ import annotations

import re

try:
    import tomllib
except ImportError:  # Python 3.10 (the Pi runs 3.11's)
    import tomli as tomllib
from dataclasses import dataclass, field, replace
from typing import Any

from .audio import BACKENDS, AudioOptions
from .options import VIDEO_CODECS, VideoOptions


class ConfigError(ValueError):
    """One line: where, which key, what is wrong."""


@dataclass
class TokenConfig:
    token: str | None = None
    token_file: str | None = None
    token_url: str | None = None
    device_id: str | None = None
    device_key: str | None = None
    device_key_file: str | None = None


@dataclass
class RobotConfig:
    url: str | None = None
    tokens: TokenConfig = field(default_factory=TokenConfig)
    room: str | None = None  # expected room (checked against the token); the dev server's room
    identity: str = "robot"  # for the dev server's self-minted token
    audio: AudioOptions = field(default_factory=AudioOptions)
    video: VideoOptions = field(default_factory=lambda: VideoOptions(camera="none"))
    plugins: list[str] = field(default_factory=list)
    plugin_settings: dict[str, dict] = field(default_factory=dict)
    watchdog_s: float = 0.5
    log_json: bool = False
    duration: float | None = None  # None: run until stopped


_SIZE = re.compile(r"(\d{2,5})x(\d{2,5})")


def parse_size(text: str) -> tuple[int, int]:
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not WIDTHxHEIGHT (e.g. 640x480)")
    return int(m.group(1)), int(m.group(2))


def check_camera(camera: str) -> str:
    if camera in ("test", "picamera2", "none") or (camera.startswith("v4l2:") and len(camera) > 5):
        return camera
    raise ValueError(f"{camera!r} is not one of test, picamera2, v4l2:/dev/videoN, none")


class _Table:
    """Reads one table's keys with their types, and refuses keys it does not know."""

    def __init__(self, path: str, name: str, data: Any):
        self.path, self.name = path, name
        if not isinstance(data, dict):
            raise self.error(None, "must be a table")
        self.data = data
        self.used: set[str] = set()

    def error(self, key: str | None, what: str) -> ConfigError:
        where = ".".join(k for k in (self.name, key) if k)
        return ConfigError(f"{self.path}: {where}: {what}")

    def get(self, key: str, types: type | tuple, default: Any = None) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        types = types if isinstance(types, tuple) else (types,)
        if isinstance(value, bool) and bool not in types:
            value = None  # TOML true is not a number here
        if not isinstance(value, types):
            names = " or ".join({int: "an integer", float: "a number", str: "a string", bool: "true or false",
                                 list: "a list"}[t] for t in types)
            raise self.error(key, f"must be {names}, not {self.data[key]!r}")
        return value

    def table(self, key: str) -> "_Table":
        self.used.add(key)
        return _Table(self.path, ".".join(k for k in (self.name, key) if k), self.data.get(key, {}))

    def done(self, extra: set[str] = frozenset()) -> None:
        for key in self.data:
            if key not in self.used and key not in extra:
                raise self.error(key, "unknown key")


def parse(text: str, path: str = "robot.toml") -> RobotConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    top = _Table(path, "", raw)
    cfg = RobotConfig()

    s = top.table("server")
    cfg.url = s.get("url", str)
    cfg.room = s.get("room", str)
    cfg.identity = s.get("identity", str, cfg.identity)
    t = TokenConfig(token=s.get("token", str), token_file=s.get("token_file", str),
                    token_url=s.get("token_url", str), device_id=s.get("device_id", str),
                    device_key=s.get("device_key", str), device_key_file=s.get("device_key_file", str))
    given = [k for k in ("token", "token_file", "token_url") if getattr(t, k)]
    if len(given) > 1:
        raise s.error(given[1], f"give one token source, not {' and '.join(given)}")
    if t.token_url:
        if not t.token_url.startswith(("http://", "https://")):
            raise s.error("token_url", f"must be an http:// or https:// URL, not {t.token_url!r}")
        if not t.device_id:
            raise s.error("device_id", "token_url needs the device_id it sends as X-Device-Id")
        if not (t.device_key or t.device_key_file):
            raise s.error("device_key", "token_url needs device_key or device_key_file (sent as Bearer)")
    if cfg.url and not cfg.url.startswith(("ws://", "wss://", "http://", "https://")):
        raise s.error("url", f"must be a ws://, wss://, http:// or https:// URL, not {cfg.url!r}")
    if cfg.url and not given:
        raise s.error("url", "needs a token source: token, token_file or token_url")
    cfg.tokens = t
    s.done()

    a = top.table("audio")
    backend = a.get("backend", str, "none")
    if backend not in BACKENDS:
        raise a.error("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
    opts = AudioOptions(backend=backend, half_duplex=a.get("half_duplex", bool, False),
                        input_device=a.get("input_device", (str, int)), output_device=a.get("output_device", (str, int)),
                        input_rate=a.get("input_rate", int), output_rate=a.get("output_rate", int),
                        block_ms=a.get("block_ms", int, 20), play=a.get("play", str), record=a.get("record", str))
    for key in ("input_rate", "output_rate"):
        rate = getattr(opts, key)
        if rate is not None and not 8000 <= rate <= 192000:
            raise a.error(key, f"{rate} Hz is not a sample rate (8000 to 192000)")
    if not 5 <= opts.block_ms <= 100:
        raise a.error("block_ms", f"{opts.block_ms} is not between 5 and 100")
    cfg.audio = opts
    a.done()

    c = top.table("camera")
    video = VideoOptions(camera="none")
    camera = c.get("source", str, "none")
    try:
        camera = check_camera(camera)
    except ValueError as exc:
        raise c.error("source", str(exc)) from None
    codec = c.get("codec", str, video.codec)
    if codec not in VIDEO_CODECS:
        raise c.error("codec", f"{codec!r} is not one of {', '.join(VIDEO_CODECS)}")
    width, height = video.width, video.height
    size = c.get("size", str)
    if size is not None:
        try:
            width, height = parse_size(size)
        except ValueError as exc:
            raise c.error("size", str(exc)) from None
    fps = c.get("fps", int, video.fps)
    if not 1 <= fps <= 120:
        raise c.error("fps", f"{fps} is not between 1 and 120")
    bitrate = c.get("bitrate_kbps", int, video.bitrate_kbps)
    if not 50 <= bitrate <= 50000:
        raise c.error("bitrate_kbps", f"{bitrate} is not between 50 and 50000")
    cfg.video = VideoOptions(camera=camera, codec=codec, width=width, height=height, fps=fps, bitrate_kbps=bitrate)
    c.done()

    p = top.table("plugins")
    load = p.get("load", list, [])
    if not all(isinstance(x, str) and x for x in load):
        raise p.error("load", "must be a list of plugin names (\"sim\", \"module:object\" or an entry point)")
    cfg.plugins = list(load)
    watchdog = p.get("watchdog_s", (int, float), cfg.watchdog_s)
    if not 0.05 <= watchdog <= 60:
        raise p.error("watchdog_s", f"{watchdog} is not between 0.05 and 60 seconds")
    cfg.watchdog_s = float(watchdog)
    settings = {}
    for name, value in p.data.items():
        if name in ("load", "watchdog_s"):
            continue
        if not isinstance(value, dict):
            raise p.error(name, "unknown key (plugin settings go in a table: [plugins.NAME])")
        settings[name] = value
    cfg.plugin_settings = settings
    p.done(set(settings))

    svc = top.table("service")
    cfg.log_json = svc.get("log_json", bool, False)
    svc.done()
    top.done()
    return cfg


def load(path: str) -> RobotConfig:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse(text, path)


def apply_flags(cfg: RobotConfig, args) -> RobotConfig:
    """Command-line flags win over the file; a flag left out keeps the file's value.

    Raises ValueError with the flag's name for a bad value."""
    cfg = replace(cfg)
    if getattr(args, "url", None):
        cfg.url = args.url
    if getattr(args, "token", None):
        cfg.tokens = TokenConfig(token=args.token)
    if getattr(args, "room", None):
        cfg.room = args.room
    if getattr(args, "identity", None):
        cfg.identity = args.identity
    video = cfg.video
    if getattr(args, "camera", None):
        video = replace(video, camera=_flag("--camera", check_camera, args.camera))
    if getattr(args, "video_codec", None):
        video = replace(video, codec=args.video_codec)
    if getattr(args, "size", None):
        w, h = _flag("--size", parse_size, args.size)
        video = replace(video, width=w, height=h)
    if getattr(args, "fps", None):
        video = replace(video, fps=args.fps)
    if getattr(args, "bitrate", None):
        video = replace(video, bitrate_kbps=args.bitrate)
    cfg.video = video
    audio = cfg.audio
    if getattr(args, "audio", None):
        audio = replace(audio, backend=args.audio)
    for key in ("play", "record", "input_device", "output_device"):
        if getattr(args, key, None) is not None:
            audio = replace(audio, **{key: getattr(args, key)})
    if getattr(args, "half_duplex", False):
        audio = replace(audio, half_duplex=True)
    if (audio.play or audio.record) and not getattr(args, "audio", None) and audio.backend == "none":
        audio = replace(audio, backend="wav")  # --play/--record alone mean the WAV backend
    cfg.audio = audio
    if getattr(args, "plugin", None):
        cfg.plugins = list(args.plugin)
    if getattr(args, "watchdog", None) is not None:
        cfg.watchdog_s = args.watchdog
    if getattr(args, "log_json", False):
        cfg.log_json = True
    if getattr(args, "duration", None) is not None:
        cfg.duration = args.duration
    return cfg


def _flag(name: str, check, value):
    try:
        return check(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
