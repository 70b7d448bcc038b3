# Two commands do all the set-up on a fresh machine:
#   make run    create .venv, install, build the index if missing, serve http://127.0.0.1:7860
#   make test   create .venv, install (plus Chromium for the browser tests), run the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install browser index eval bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/rag serve

index: $(STAMP)
	$(BIN)/rag index

browser:
	@(test -x /usr/bin/chromium && fc-list 2>/dev/null | grep -qi wqy) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-wqy-zenhei >/dev/null)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

eval: $(STAMP)
	$(BIN)/rag eval

bench: $(STAMP)
	$(BIN)/python eval/bench.py

clean:
	rm -rf $(VENV) index
