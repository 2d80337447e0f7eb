# advlora: set-up, demo and tests. Every target creates or reuses the virtual environment at .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.advlora-installed
FONT := /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf
# CPU wheels of torch lie on some machines under /opt/wheels; pip finds them there before any index.
WHEELS := $(wildcard /opt/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)

.PHONY: setup demo test lint docs font chromium clean-venv

setup: $(STAMP) font chromium

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, exactly pinned, so that nothing later can pull a CUDA build.
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt torch==2.13.0
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

font:
	@if [ -f "$(FONT)" ] || fc-list 2>/dev/null | grep -qi "Noto Color Emoji"; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq fonts-noto-color-emoji >/dev/null; \
	else echo "advlora: install the Noto Color Emoji font (package fonts-noto-color-emoji) or pass --font PATH" >&2; exit 2; fi

# headless Chromium and its driver: the leaderboard's browser test (tests/experiments/test_leaderboard.py) and screenshot
chromium:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "advlora: install Chromium and chromedriver (Debian: chromium chromium-driver) for the leaderboard's browser test" >&2; fi

demo: setup
	$(VENV)/bin/advlora demo --out runs/demo

test: setup
	$(PY) -m pytest -q

# ruff (pinned in constraints.txt, a dev dependency); the rules are pyproject.toml's [tool.ruff]
lint: setup
	$(VENV)/bin/ruff check src tests scripts

# docs/results.md and the README's tables from docs/results/*.json; docs/cli.md from the parsers; the embedded
# leaderboard docs/leaderboard/ (and its screenshot) from the results files under docs/leaderboard-data/.
docs: setup
	$(PY) scripts/gen_results.py
	$(PY) scripts/gen_cli_reference.py
	$(PY) scripts/gen_leaderboard.py

clean-venv:
	rm -rf $(VENV)
