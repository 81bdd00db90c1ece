# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Every install step is idempotent (a stamp file per step) and pinned.
SHELL := /bin/bash
PY ?= python3.11
DEPS := .deps
VENV := $(DEPS)/venv
SHARED_CRDSRV := ../shared/tools/kube-crd-apiserver/crdsrv.xz
ANVIL_VERSION := 1.7.1

.PHONY: deps test demo bench soak clean-deps
deps: $(DEPS)/apt.stamp $(VENV)/.stamp $(DEPS)/litellm/.stamp $(DEPS)/hermes/.stamp $(DEPS)/node/.stamp $(DEPS)/bin/crdsrv

$(DEPS)/apt.stamp:
	mkdir -p $(DEPS)
	command -v etcd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server openssl xz-utils >/dev/null; }
	touch $@

$(VENV)/.stamp: requirements/dev.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements/dev.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(DEPS)/litellm/.stamp: requirements/litellm.txt
	test -x $(DEPS)/litellm/bin/python || $(PY) -m venv $(DEPS)/litellm
	$(DEPS)/litellm/bin/pip install -q --disable-pip-version-check -r requirements/litellm.txt
	touch $@

$(DEPS)/hermes/.stamp: requirements/hermes.txt
	test -x $(DEPS)/hermes/bin/python || $(PY) -m venv $(DEPS)/hermes
	$(DEPS)/hermes/bin/pip install -q --disable-pip-version-check -r requirements/hermes.txt
	touch $@

$(DEPS)/node/.stamp:
	mkdir -p $(DEPS)/node
	cd $(DEPS)/node && { test -f package.json || npm init -y >/dev/null; } && npm install --silent --no-audit --no-fund @foundry-rs/anvil-linux-amd64@$(ANVIL_VERSION)
	touch $@

# crdsrv: the prebuilt binary from shared/ when present, else the project's own copy of the recipe.
$(DEPS)/bin/crdsrv:
	mkdir -p $(DEPS)/bin
	if [ -f $(SHARED_CRDSRV) ]; then xz -dc $(SHARED_CRDSRV) > $@.tmp; \
	else bash devstack/crdsrv/build.sh $(DEPS)/crdsrv-build $@.tmp; fi
	chmod +x $@.tmp && mv $@.tmp $@

test: deps
	$(VENV)/bin/python -m pytest -q tests

demo: deps
	$(VENV)/bin/python -m devstack demo --dir $(DEPS)/demo-stack

# Every benchmark runs, each printing its figures and its verdict, even when an earlier one misses its
# target; the exit status reports any miss.
BENCHES := presign adopt buy_e2e scale
bench: deps
	rc=0; for b in $(BENCHES); do echo "== bench/$$b.py"; $(VENV)/bin/python bench/$$b.py || rc=1; done; exit $$rc

# Fault injection at full size on a devstack of its own (not part of `make test`, which runs a few
# dozen of the same runs): >= 500 SIGKILLs and >= 50 SIGTERMs at random points, concurrent writers.
soak: deps
	$(VENV)/bin/python -m soak

clean-deps:
	rm -rf $(DEPS)
