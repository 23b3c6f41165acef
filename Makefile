# FlexMUSE developer commands. `make test` installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned exactly: a looser pin makes pip fetch a different multi-GB build.
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST_WORKERS ?= 2

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[open_clip,train,eval,test]"
	touch $(STAMP)

test: install
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(PY) -m pytest -n $(PYTEST_WORKERS) tests

demo:
	@echo "make demo arrives with the SFT training issue; until then see README.md 'Usage'." && exit 1

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
