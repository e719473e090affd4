# Everything a fresh machine needs, in two commands: `make demo` and `make test`.
PY ?= python3
LKDEVICE = $(PY) -m lkdevice.cli
# pipefail: a failed pip install fails the target even though its output goes through grep
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: setup demo test unit hil bench clean

setup:  ## the package with test deps, and the pinned livekit-server build (cached)
	@echo "setup: pip install -e '.[test]' (the first time ~1 GB of wheels: LiveKit Agents, onnxruntime, PyAV; a few minutes)"
	@# what pip fetches, one line each with its size; nothing for what is already there
	$(PY) -m pip install --disable-pip-version-check --progress-bar off -e '.[test]' 2>&1 \
	  | grep -E --line-buffered '^(Collecting|Downloading|Installing|Successfully|ERROR|error)' || [ $${PIPESTATUS[0]} -eq 0 ]
	$(LKDEVICE) server build

demo: setup  ## local server + gateway + the offline voice agent + a simulated ESP32 asking "what time is it": the answer printed and in demo-answer.wav
	host_tools/system_deps.sh
	$(LKDEVICE) demo

test: setup  ## system packages (namespace tools, nftables, libopus), unit and live tests in a private network namespace, then the harness's ci profile on both simulated targets
	host_tools/system_deps.sh
	host_tools/isolated.sh $(PY) -m pytest -q
	PY=$(PY) hil/run-targets.sh ci build/hil-ci sim-esp32 sim-pi

hil: setup  ## the hardware-in-the-loop harness, full profile (10 min call, 100 cycles, 1 M fuzz frames) on both simulated targets at once
	host_tools/system_deps.sh
	PY=$(PY) hil/run-targets.sh full hil-report sim-esp32 sim-pi

unit:
	$(PY) -m pytest -q tests/unit

bench: setup  ## join time, audio round trip, gateway latency and capacity, robot video, firmware codec and heap (JSON)
	host_tools/isolated.sh $(PY) bench/join_time.py
	host_tools/isolated.sh $(PY) bench/audio_rtt.py
	host_tools/isolated.sh $(PY) bench/gateway_latency.py
	host_tools/isolated.sh $(PY) bench/gateway_capacity.py
	host_tools/isolated.sh $(PY) bench/robot_video.py
	host_tools/isolated.sh $(PY) bench/agent_response.py
	$(PY) bench/firmware_codec.py
	host_tools/isolated.sh $(PY) bench/firmware_heap.py
	@if [ -n "$(MPSRC)" ]; then host_tools/isolated.sh $(PY) bench/firmware_frozen_heap.py "$(MPSRC)"; \
	else echo "bench/firmware_frozen_heap.py skipped (needs a MicroPython source folder: make bench MPSRC=DIR)"; fi

clean:
	rm -rf hil-report demo-answer.wav demo-echo.wav .pytest_cache build *.egg-info
