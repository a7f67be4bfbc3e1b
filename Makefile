# Two commands set up a fresh machine by themselves: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := server,test,bench

.PHONY: serve test lint bench setup ffmpeg clean

# Until the server lands: decode a generated sample end to end and print the result.
serve: setup
	@mkdir -p .cache
	ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=1280x720 -frames:v 1 .cache/sample.jpg
	$(BIN)/dynamo-media decode .cache/sample.jpg

test: setup lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check dynamo_media tests benchmarks
	$(BIN)/ruff format --check dynamo_media tests benchmarks
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/run.py $(ARGS)

setup: ffmpeg $(STAMP)

# torchcodec loads the system's FFmpeg shared libraries (4 to 7).
ffmpeg:
	@command -v ffmpeg >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq ffmpeg; }

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
