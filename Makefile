# The two set-up commands (see README): `make run` and `make test`. Each installs what
# is missing first. `make bench` runs the benchmark report.

SHELL := /bin/bash
CARGO := PATH="$$HOME/.cargo/bin:$$PATH" cargo

.PHONY: run ui test bench types

## Build and run Procyon on this machine: the collector with its dashboard at
## http://127.0.0.1:7450/ (the first start prints the admin password).
run: ui
	$(CARGO) run --release --bin procyon -- serve

## The dashboard, built into ui/dist (embedded in the binary).
ui:
	@scripts/deps.sh build
	cd ui && npm ci --no-audit --no-fund && npm run build

## Every check and test: formatting, lints, unit and integration tests, the dashboard's
## unit tests and its end-to-end test in headless Chromium.
test:
	@scripts/deps.sh test
	cd ui && npm ci --no-audit --no-fund && npm run check && npm test && npm run build
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(CARGO) test --workspace --all-features
	node --test tests/browser/e2e.test.mjs

## The benchmark report: every performance figure next to its peer (ratios) and its
## budget, side by side on this machine; also written to target/bench/report.json.
## Sampler and agent CPU and memory, uplink bytes, storage, collector ingest and live
## fan-out, the desktop app, the dashboard's frame times and bundle size.
bench: ui
	@scripts/deps.sh bench
	PATH="$$HOME/.cargo/bin:$$PATH" bash bench/run.sh

## Regenerate the dashboard's TypeScript types from src-tauri/src/model.rs.
types:
	UPDATE_TYPES=1 $(CARGO) test -p procyon --lib model
