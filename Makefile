# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CATALOG ?= ../shared/datasets/fashion-product-images-small.zip
DEMO_ARGS ?=  # e.g. DEMO_ARGS=--no-serve (stop before serving), DEMO_ARGS=--redo

.PHONY: venv demo test apt-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Fashion-MNIST (tests) and Chromium (browser test) come from Debian's packages.
apt-deps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  [ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	  if [ -n "$$missing" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; the tests that need them will be skipped"; \
	  fi; \
	fi

demo: venv
	$(VENV)/bin/stylespace demo --catalog $(CATALOG) $(DEMO_ARGS)

test: venv apt-deps
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo runs
