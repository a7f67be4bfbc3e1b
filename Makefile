# Two commands set up a fresh machine by themselves: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
EXTRAS := server,dynamo,test,backend

.PHONY: serve test lint bench fuzz setup system clean

# The OpenAI-compatible frontend on 127.0.0.1:8000 and two reference workers, on Dynamo's
# runtime (file discovery in a private directory). ARGS passes options through and wins:
# make serve ARGS="--port 9000 --workers 4"; the plain HTTP hop to one backend:
# make serve ARGS="--transport http"
serve: setup
	$(BIN)/dynamo-media serve --transport dynamo --workers 2 $(ARGS)

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check dynamo_media tests benchmarks
	$(BIN)/ruff format --check dynamo_media tests benchmarks
	$(BIN)/mypy

# Mutated media through the public decoders in worker processes (tests/fuzz; issue #13).
# Findings go to .cache/fuzz; ARGS passes options through: make fuzz ARGS="--count 100000"
fuzz: setup
	$(BIN)/python -m tests.fuzz $(ARGS)

# The peers (OpenCV, PyAV, decord, soundfile) are installed for benchmarks only.
bench: setup $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run $(ARGS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS),bench]'
	touch $(BENCH_STAMP)

setup: system $(STAMP)

# System packages, from Debian, only when missing: FFmpeg's shared libraries (4 to 7), which
# torchcodec loads; etcd (discovery) and NATS (request plane) for the multi-node test on loopback
# (tests/test_dynamo_multinode.py). Debian puts nats-server in /usr/sbin.
system:
	@command -v ffmpeg >/dev/null && command -v etcd >/dev/null \
	  && PATH="$$PATH:/usr/sbin" command -v nats-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $$SUDO apt-get install -y -qq ffmpeg etcd-server nats-server; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	# dynamo.frontend (processor mode); --no-deps: ai-dynamo's deps include a placeholder
	$(BIN)/python -m pip install -q --no-deps ai-dynamo==1.6.1 pyyaml msgspec
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
