#!/usr/bin/env bash
# Builds the Debian packages of the collector (procyon) and the agent (procyon-agent)
# with cargo-deb; their contents are declared in the two Cargo.toml files
# ([package.metadata.deb]). `make deb` runs this.
#
#   scripts/deb.sh [--from DIR] [--out DIR] [PACKAGE...] [-- CARGO_DEB_FLAGS...]
#
# PACKAGE is procyon or procyon-agent; without one, both.
# Without --from, the binaries are release builds, made here: each package on its own,
# so that the agent does not get the collector's features (one cargo build of both
# would merge them).
# --from DIR packages the binaries already in DIR instead (the tests give target/debug,
# so they need no release build). They are linked into a scratch target directory, so
# nothing is written next to them.
# Each binary then writes its own man pages and shell completions (the hidden
# `generate` subcommand) into <target>/release/generated/PACKAGE/, where the package's
# assets are, and cargo-deb packages it all without building (--no-build).
# The .deb files go to --out DIR, by default target/debian/; their paths are printed
# last, one a line. Flags after `--` go to cargo-deb (e.g. --fast).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cargo=${CARGO:-cargo}

usage() {
  echo "usage: $0 [--from DIR] [--out DIR] [procyon] [procyon-agent] [-- CARGO_DEB_FLAGS...]" >&2
  exit 2
}
fail() {
  echo "deb: $*" >&2
  exit 1
}

from=""
out=""
packages=()
deb_flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --from) [ $# -ge 2 ] || usage; from=$2; shift 2 ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
    procyon | procyon-agent) packages+=("$1"); shift ;;
    --) shift; deb_flags=("$@"); break ;;
    -h | --help) usage ;;
    *) echo "deb: unknown argument: $1" >&2; usage ;;
  esac
done
[ ${#packages[@]} -gt 0 ] || packages=(procyon procyon-agent)

if ! "$cargo" deb --version >/dev/null 2>&1; then
  fail "cargo-deb is missing: cargo install cargo-deb --locked (scripts/deps.sh deb installs it)"
fi

cd "$repo"
# Where cargo puts builds (CARGO_TARGET_DIR, a config's target-dir, or target/).
target=$("$cargo" metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target" ] || fail "cannot find cargo's target directory"
out=${out:-$target/debian}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ -z "$from" ]; then
  for p in "${packages[@]}"; do
    case "$p" in
      procyon) "$cargo" build --release --locked -p procyon --bin procyon ;;
      procyon-agent) "$cargo" build --release --locked -p procyon-agent ;;
    esac
  done
else
  [ -d "$from" ] || fail "--from $from is not a directory"
  from=$(cd "$from" && pwd)
  # cargo-deb finds binaries under <target>/release: a scratch one that links to them.
  target=$(mktemp -d)
  trap 'rm -rf "$target"' EXIT
  mkdir -p "$target/release"
  for p in "${packages[@]}"; do
    [ -x "$from/$p" ] || fail "no $p binary in $from (build it first)"
    ln -s "$from/$p" "$target/release/$p"
  done
  export CARGO_TARGET_DIR=$target
fi

built=()
for p in "${packages[@]}"; do
  bin="$target/release/$p"
  gen="$target/release/generated/$p"
  rm -rf "$gen"
  mkdir -p "$gen/man"
  "$bin" generate man "$gen/man" >/dev/null
  # Debian compresses man pages; -n leaves out the time, so a rebuild is the same file.
  gzip -9nf "$gen/man"/*.1
  "$bin" generate completion bash >"$gen/$p.bash"
  "$bin" generate completion zsh >"$gen/_$p"
  "$bin" generate completion fish >"$gen/$p.fish"
  # cargo-deb prints the path of the package it made last.
  deb=$("$cargo" deb -p "$p" --no-build --output "$out" "${deb_flags[@]}" | tail -n 1)
  [ -f "$deb" ] || fail "cargo deb did not make a package for $p"
  built+=("$deb")
done
printf '%s\n' "${built[@]}"
