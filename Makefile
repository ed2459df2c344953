# The two set-up commands (see README): `make run` and `make test`. Each installs what
# is missing first. `make bench` runs the benchmark report; `make deb` builds the
# collector's and the agent's Debian packages.

SHELL := /bin/bash
CARGO := PATH="$$HOME/.cargo/bin:$$PATH" cargo

.PHONY: run ui test bench deb types

## Build and run Procyon on this machine: the desktop app when there is a display,
## else the collector with its dashboard at http://127.0.0.1:7450/ (the first start
## prints the admin password).
run: ui
	@if [ -n "$${DISPLAY:-}$${WAYLAND_DISPLAY:-}" ]; then \
	  scripts/deps.sh desktop && $(CARGO) run --release --features desktop --bin procyon -- desktop; \
	else \
	  echo "No display: starting the collector; open its address in a browser."; \
	  $(CARGO) run --release --bin procyon -- serve; \
	fi

## The dashboard, built into ui/dist (embedded in the binary).
ui:
	@scripts/deps.sh build
	cd ui && npm ci --no-audit --no-fund && npm run build

## Every check and test: formatting, lints, unit and integration tests (the Debian
## packages among them, made from the test build's binaries), the dashboard's
## unit tests and its end-to-end test in headless Chromium, and the desktop app's window
## under Xvfb, driven over WebDriver. Property tests start from a fixed seed, so a run
## can be repeated; set PROPTEST_RNG_SEED to another number to explore further.
test:
	@scripts/deps.sh test
	cd ui && npm ci --no-audit --no-fund && npm run check && npm test && npm run build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	PROPTEST_RNG_SEED=$${PROPTEST_RNG_SEED:-20261207} $(CARGO) test --workspace --all-features
	node --test --test-concurrency=1 tests/browser/*.test.mjs
	xvfb-run -a -s "-screen 0 1400x900x24" dbus-run-session -- node --test tests/desktop/e2e.test.mjs

## The benchmark report: every performance figure next to its peer (ratios) and its
## budget, side by side on this machine; also written to target/bench/report.json.
## Sampler and agent CPU and memory, uplink bytes, storage, collector ingest and live
## fan-out, the desktop app, the dashboard's frame times and bundle size.
bench: ui
	@scripts/deps.sh bench
	PATH="$$HOME/.cargo/bin:$$PATH" bash bench/run.sh

## The Debian packages of the collector (procyon) and the agent (procyon-agent), from
## release builds, into target/debian/: each with its systemd unit, default settings,
## man pages and shell completions. Install one with
## `sudo apt install ./target/debian/procyon_*.deb` (see the README's Install section).
deb: ui
	@scripts/deps.sh deb
	PATH="$$HOME/.cargo/bin:$$PATH" scripts/deb.sh

## Regenerate the dashboard's TypeScript types from src-tauri/src/model.rs.
types:
	UPDATE_TYPES=1 $(CARGO) test -p procyon --lib model
