"""Camera sources: a synthetic test pattern, a USB camera (v4l2 through PyAV), picamera2.

Each gives `av.VideoFrame`s in yuv420p with pts in 1/90000 through `await
next_frame()`, paced by the camera. The test pattern writes a frame counter and
its capture time (wall clock, ms) into the picture as a grid of big black and
white blocks with a checksum: it survives lossy coding, and `read_pattern`
gets both back from a decoded picture's luma.
"""

from __future__ import annotations

import asyncio
import fractions
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import av
import numpy as np

TIME_BASE = fractions.Fraction(1, 90000)

# the code: 24-bit counter, 32-bit capture time in ms, 8-bit checksum, in 4 rows of 16 blocks
_COLS, _ROWS = 16, 4
_BITS = _COLS * _ROWS
_CODE_HEIGHT = 0.5  # the top half of the picture; the rest moves, so the encoder has work
_BLACK, _WHITE = 16, 235


@dataclass(frozen=True)
class PatternStamp:
    counter: int       # frame number, modulo 2**24
    capture_ms: int    # wall clock at capture, ms modulo 2**32

    def age_ms(self, now: float | None = None) -> float:
        """Milliseconds from capture to `now` (time.time()), across the 2**32 wrap."""
        now_ms = int((time.time() if now is None else now) * 1000)
        return float((now_ms - self.capture_ms) % (1 << 32))


def _checksum(value: int) -> int:
    # a byte-wise sum with a rotate: any single flipped block changes it
    c = 0x5A
    for i in range(7):
        c = ((c << 1) | (c >> 7)) & 0xFF
        c ^= (value >> (8 * i)) & 0xFF
    return c


def _encode_bits(counter: int, capture_ms: int) -> np.ndarray:
    value = (counter & 0xFFFFFF) | ((capture_ms & 0xFFFFFFFF) << 24)
    word = value | (_checksum(value) << 56)
    return np.array([(word >> i) & 1 for i in range(_BITS)], dtype=np.uint8).reshape(_ROWS, _COLS)


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    code_h = int(height * _CODE_HEIGHT)
    ys = (np.arange(_ROWS + 1) * code_h) // _ROWS
    xs = (np.arange(_COLS + 1) * width) // _COLS
    return ys, xs


def draw_pattern(luma: np.ndarray, counter: int, capture_ms: int) -> None:
    """Write the stamp into a luma plane (h x w, uint8) in place."""
    h, w = luma.shape
    ys, xs = _grid(w, h)
    bits = _encode_bits(counter, capture_ms)
    block = np.where(bits, _WHITE, _BLACK).astype(np.uint8)
    code = np.repeat(np.repeat(block, np.diff(ys), axis=0), np.diff(xs), axis=1)
    luma[:ys[-1], :xs[-1]] = code


def read_pattern(luma: np.ndarray) -> PatternStamp | None:
    """The stamp in a decoded picture's luma plane, or None if it does not check out."""
    luma = np.asarray(luma)
    h, w = luma.shape
    ys, xs = _grid(w, h)
    word = 0
    for r in range(_ROWS):
        y0, y1 = ys[r], ys[r + 1]
        my = max(1, (y1 - y0) // 4)  # the middle half of each block: edges ring after coding
        for c in range(_COLS):
            x0, x1 = xs[c], xs[c + 1]
            mx = max(1, (x1 - x0) // 4)
            mean = luma[y0 + my:y1 - my, x0 + mx:x1 - mx].mean()
            if mean > (_BLACK + _WHITE) / 2:
                word |= 1 << (r * _COLS + c)
    value = word & ((1 << 56) - 1)
    if (word >> 56) != _checksum(value):
        return None
    return PatternStamp(counter=value & 0xFFFFFF, capture_ms=value >> 24)


class FrameSource(Protocol):
    width: int
    height: int
    fps: float

    async def next_frame(self) -> av.VideoFrame: ...

    def close(self) -> None: ...


class TestPattern:
    """The synthetic camera: a stamped picture every 1/fps of wall time."""

    __test__ = False  # not a pytest class

    def __init__(self, width: int, height: int, fps: float, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        if width < 64 or height < 32 or width % 2 or height % 2:
            raise ValueError(f"test pattern needs an even size of at least 64x32, not {width}x{height}")
        self.width, self.height, self.fps = width, height, fps
        self._clock, self._wall = clock, wall
        self.frames = 0
        self.render_cpu_s = 0.0  # what a real camera would not cost
        self._start: float | None = None
        self._luma = np.full((height, width), 128, dtype=np.uint8)
        self._chroma = np.full((height // 2, width // 2), 128, dtype=np.uint8)
        self._ramp = (np.arange(width, dtype=np.uint16) * 255 // max(1, width - 1)).astype(np.uint8)

    def render(self, counter: int, capture_ms: int) -> av.VideoFrame:
        h, w = self.height, self.width
        code_h = int(h * _CODE_HEIGHT)
        # a ramp scrolling one step per frame below the code
        self._luma[code_h:] = np.roll(self._ramp, (counter * 4) % w)[None, :]
        draw_pattern(self._luma, counter, capture_ms)
        frame = av.VideoFrame(w, h, "yuv420p")
        frame.planes[0].update(self._luma)
        frame.planes[1].update(self._chroma)
        frame.planes[2].update(self._chroma)
        return frame

    async def next_frame(self) -> av.VideoFrame:
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self.frames / self.fps
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 1.0:  # fell far behind (a paused loop): skip ahead, do not burst
            self._start = now - self.frames / self.fps
        t0 = time.thread_time()
        frame = self.render(self.frames, int(self._wall() * 1000))
        self.render_cpu_s += time.thread_time() - t0
        frame.pts = int(self.frames * 90000 / self.fps)
        frame.time_base = TIME_BASE
        self.frames += 1
        return frame

    def close(self) -> None:
        pass


class _ThreadedSource:
    """A camera read in a thread; the loop gets the newest frame (older ones are dropped)."""

    def __init__(self, width: int, height: int, fps: float):
        self.width, self.height, self.fps = width, height, fps
        self.frames = 0
        self.dropped = 0
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[av.VideoFrame | BaseException] = asyncio.Queue(maxsize=2)
        self._stop = threading.Event()
        self._t0: float | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=type(self).__name__)

    def _start(self) -> None:
        self._thread.start()

    def _deliver(self, item) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    def _hand_over(self, item) -> None:
        self._loop.call_soon_threadsafe(self._deliver, item)

    def _run(self) -> None:
        try:
            self._capture()
        except BaseException as exc:  # the loop side raises it
            self._hand_over(exc)

    def _capture(self) -> None:
        raise NotImplementedError

    async def next_frame(self) -> av.VideoFrame:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise RuntimeError(f"camera stopped: {item}") from item
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        item.pts = int((now - self._t0) * 90000)
        item.time_base = TIME_BASE
        self.frames += 1
        return item

    def close(self) -> None:
        self._stop.set()


class V4l2Camera(_ThreadedSource):
    """A USB camera through PyAV's v4l2 input."""

    def __init__(self, device: str, width: int, height: int, fps: float):
        super().__init__(width, height, fps)
        self.device = device
        self._container = av.open(device, format="v4l2",
                                  options={"video_size": f"{width}x{height}", "framerate": str(fps)})
        self._start()

    def _capture(self) -> None:
        try:
            for frame in self._container.decode(video=0):
                if self._stop.is_set():
                    break
                if frame.format.name != "yuv420p" or frame.width != self.width or frame.height != self.height:
                    frame = frame.reformat(self.width, self.height, "yuv420p")
                self._hand_over(frame)
        finally:
            self._container.close()


class Picamera2Camera(_ThreadedSource):
    """Raw frames from a Raspberry Pi camera (the software-encoding path)."""

    def __init__(self, width: int, height: int, fps: float):
        super().__init__(width, height, fps)
        from picamera2 import Picamera2  # only on a Pi

        self._cam = Picamera2()
        # RGB888 (bgr24 in memory): its rows may be padded, which a slice handles; a
        # padded YUV420 buffer would need each plane cut out by hand
        config = self._cam.create_video_configuration(main={"size": (width, height), "format": "RGB888"},
                                                      controls={"FrameRate": fps})
        self._cam.configure(config)
        self._cam.start()
        self._start()

    def _capture(self) -> None:
        try:
            while not self._stop.is_set():
                array = self._cam.capture_array("main")
                frame = av.VideoFrame.from_ndarray(array[:, : self.width, :3], format="bgr24")
                self._hand_over(frame.reformat(format="yuv420p"))
        finally:
            self._cam.stop()
            self._cam.close()


def open_camera(camera: str, width: int, height: int, fps: float) -> FrameSource:
    """A raw-frame source for `VideoOptions.camera` ("test", "picamera2", "v4l2:/dev/videoN")."""
    if camera == "test":
        return TestPattern(width, height, fps)
    if camera == "picamera2":
        return Picamera2Camera(width, height, fps)
    if camera.startswith("v4l2:"):
        return V4l2Camera(camera[len("v4l2:"):], width, height, fps)
    raise ValueError(f"unknown camera {camera!r} (test, picamera2, v4l2:/dev/videoN)")
