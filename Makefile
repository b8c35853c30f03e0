# rumor: `make test` sets everything up on a fresh clone (only python3 needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
ETCD := /usr/bin/etcd
NFT := /usr/sbin/nft
DEMO_ARGS ?=

.PHONY: all install test lint proto demo docs chromium etcd netns-tools bench fuzz clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools examples
	$(VENV)/bin/ruff format --check src tests tools examples

test: $(STAMP) chromium etcd netns-tools
	$(VENV)/bin/ruff check src tests tools examples
	$(PY) -m pytest

# The browser test drives Debian's chromium through Playwright (which downloads no browser of its own):
# installed here when missing, which needs root; otherwise the test is skipped (a failure under CI=true).
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: $(CHROMIUM) is missing and this is not root: the browser test will be skipped" \
	      "(install it with: sudo apt-get install chromium)"; \
	  fi; \
	fi

# The etcd ordering tests run a real etcd cluster: Debian's etcd-server (etcd 3.4), installed here when missing, which
# needs root; otherwise those tests are skipped (a failure under CI=true).
etcd:
	@if [ ! -x $(ETCD) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's etcd-server for the etcd ordering tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; \
	  else \
	    echo "note: $(ETCD) is missing and this is not root: the etcd ordering tests will be skipped" \
	      "(install it with: sudo apt-get install etcd-server)"; \
	  fi; \
	fi

# The fault tests on several hosts (tests/faults) give each node a network namespace on a bridge (iproute2's ip)
# and cut partitions with nftables rules inside the namespaces (nft): installed here when missing, which needs
# root; the tests need root anyway, and are skipped without it (a failure under CI=true).
netns-tools:
	@if [ ! -x $(NFT) ] || ! command -v ip >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's nftables and iproute2 for the fault tests on several hosts"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables iproute2 >/dev/null; \
	  else \
	    echo "note: nft or ip is missing and this is not root: the fault tests on several hosts will be skipped" \
	      "(install them with: sudo apt-get install nftables iproute2)"; \
	  fi; \
	fi

proto: $(STAMP)
	$(PY) tools/genproto.py

# A live network of 2 orgs × 4 peers in ./rumor-network with load and the dashboard (its URL is printed);
# Ctrl-C stops it, and the next `make demo` resumes it. Options: make demo DEMO_ARGS="--rate 5".
demo: $(STAMP)
	$(VENV)/bin/rumor network up $(DEMO_ARGS)

# The figures 1-9 defined in bench/results/README.md (about 35 min on 2 cores, plus about 10 for figures 5-8): the simulator's sim-100
# and sim-1000 in both dissemination modes (figures 1-4); real peer processes on loopback, N = 8 and 16, 10 KB /
# 100 KB / 1 MB, both modes, interleaved with py-libp2p gossipsub (figures 1-4 and the comparison; libp2p goes into
# bench/.venv-libp2p); on loopback too, crash detection and false dead verdicts under CPU stress, join convergence
# (N = 8 and 16), catch-up after 1,000 missed blocks and the sustained block rate (N = 8) (figures 5-8); one gossip
# connection against raw loopback TCP (figure 9); a profile of the simulator, and py-spy profiles of real peers
# at 24 blocks/s (bench/profile_peer.py; py-spy is installed into the venv here). Tables on stdout; JSON, Markdown and
# PNG plots under bench/results/, and bench/results/README.md rendered from them by bench/report.py. BENCH_SCENARIOS=sim-100 skips sim-1000.
# bench/ordering.py (about 5 min): ordering throughput, solo against the etcd ordering service, and cutter failover.
BENCH_SCENARIOS ?= sim-100,sim-1000
bench: $(STAMP) etcd
	$(VENV)/bin/pip install -q py-spy
	$(PY) bench/sim.py --scenarios $(BENCH_SCENARIOS) --jobs 2
	$(PY) bench/gossipsub.py
	$(PY) bench/loopback_ops.py
	$(PY) bench/comm.py --rounds 3 --json bench/results/comm.json
	$(PY) bench/profile_sim.py --preset sim-100 --seconds 10 --out bench/results/profile-sim.txt
	$(PY) bench/profile_peer.py
	$(PY) bench/profile_peer.py --rate 56 --out bench/results/profile-peer-saturated.txt
	$(PY) bench/ordering.py
	$(PY) bench/report.py

# The long fuzz run: 1,000,000 mutated inputs over every target of tests/fuzz (the wire decoder, each message
# handler of the core, blocks, config blocks and updates, policies, identities) on 2 processes, about 8 minutes on
# 2 cores; prints inputs/s, crashes and hangs per target and exits 1 on any. Figures in docs/fuzzing.md.
# FUZZ_ARGS="--inputs 20000" for a short run, "--targets wire,block" for some targets, "--seed 7" for other inputs.
FUZZ_ARGS ?=
fuzz: $(STAMP)
	$(PY) tools/fuzz.py --json fuzz-results.json $(FUZZ_ARGS)

docs: $(STAMP)
	$(PY) -m rumor.ops.configdoc docs/configuration.md
	$(PY) -m rumor.ops.configdoc --orderer docs/orderer-configuration.md

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
