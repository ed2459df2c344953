# The two set-up commands (see README): `make run` and `make test`. Each installs what
# is missing first. `make bench` runs the benchmark report.

SHELL := /bin/bash
CARGO := PATH="$$HOME/.cargo/bin:$$PATH" cargo

.PHONY: run test bench types

## Build and run Procyon on this machine: a live summary in the terminal.
run:
	@scripts/deps.sh build
	$(CARGO) run --release --bin procyon -- watch

## Every check and test: formatting, lints, unit and integration tests.
test:
	@scripts/deps.sh test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings
	$(CARGO) test --workspace --all-features

## Side-by-side benchmark of the sampler against a naive /proc reader and psutil.
bench:
	@scripts/deps.sh bench
	bash bench/run.sh

## Regenerate the dashboard's TypeScript types from src-tauri/src/model.rs.
types:
	UPDATE_TYPES=1 $(CARGO) test -p procyon --lib model
