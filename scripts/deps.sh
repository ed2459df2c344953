#!/usr/bin/env bash
# Installs what Procyon needs to build, test or benchmark on Debian or Ubuntu, and only
# what is missing. Usage: scripts/deps.sh build|test|bench
#
# It says what it installs. Debian packages need root: it uses sudo when not root.
set -euo pipefail

what=${1:-build}

apt_packages=(build-essential pkg-config ca-certificates curl)
case "$what" in
  build) ;;
  test) apt_packages+=(util-linux procps) ;;
  bench) apt_packages+=(python3 python3-venv python3-dev) ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "deps: installing the Rust toolchain with rustup (stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  fi
fi
