#!/usr/bin/env bash
# Installs what Procyon needs to build, test, package or benchmark on Debian or Ubuntu,
# and only what is missing. Usage: scripts/deps.sh build|desktop|deb|test|bench
#   build    the collector and the agent
#   desktop  also the desktop app (WebKitGTK, GTK, the tray library)
#   deb      the collector's and the agent's Debian packages (`make deb`): cargo-deb,
#            and dpkg-dev for the packages' library dependencies
#   test     everything `make test` runs: the desktop app's libraries, Chromium for the
#            dashboard's browser test, Xvfb, WebKit's WebDriver and tauri-driver for the
#            desktop window's test, what the packages' test builds and reads them with,
#            Prometheus with promtool for the metrics' test, and PostgreSQL for the store's
#            tests on it
#   bench    what `make bench` runs
#
# It says what it installs. Debian packages need root: it uses sudo when not root.
set -euo pipefail

what=${1:-build}

apt_packages=(build-essential pkg-config ca-certificates curl xz-utils)
# Tauri 2 on Linux: WebKitGTK 4.1, GTK 3, the tray (appindicator), icons (rsvg).
desktop_packages=(libssl-dev file libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev
  librsvg2-dev libsoup-3.0-dev libjavascriptcoregtk-4.1-dev libxdo-dev)
# cargo-deb: dpkg-shlibdeps (dpkg-dev) finds the libraries a binary needs.
deb_packages=(dpkg-dev)
case "$what" in
  build) ;;
  desktop) apt_packages+=("${desktop_packages[@]}") ;;
  deb) apt_packages+=("${deb_packages[@]}") ;;
  # The dashboard's browser tests drive Debian's Chromium; the desktop window's test runs
  # the app under Xvfb with a D-Bus session, driven over WebDriver; tmux is the terminal
  # `procyon watch` is driven in; the packages' test builds .debs and renders their man
  # pages (man-db); /metrics is checked with promtool and scraped by a real Prometheus
  # (both in Debian's prometheus package); the OpenAPI test installs schemathesis from
  # PyPI into a venv; the alerts' test pushes to a real Alertmanager and mails a local SMTP
  # server (aiosmtpd, run with Debian's own python3). The store's tests
  # and the collector's on PostgreSQL start their own throwaway cluster with the binaries
  # of Debian's postgresql package (never the system's).
  test) apt_packages+=(util-linux procps tmux python3 python3-venv chromium "${desktop_packages[@]}" xvfb xauth dbus
    dbus-x11 webkit2gtk-driver "${deb_packages[@]}" man-db prometheus prometheus-alertmanager python3-aiosmtpd postgresql) ;;
  bench) apt_packages+=(python3 python3-venv python3-dev chromium "${desktop_packages[@]}" xvfb xauth dbus
    dbus-x11 postgresql) ;;
  *) echo "usage: $0 build|desktop|deb|test|bench" >&2; exit 2 ;;
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

# The dashboard's build (Vite) needs Node.js 20.19 or newer; Debian 12 ships 18.
if ! command -v node >/dev/null 2>&1 ||
  ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a == 20 && b >= 19) ? 0 : 1)'; then
  v=v22.12.0
  arch=$(uname -m | sed 's/x86_64/x64/;s/aarch64/arm64/')
  t=$(mktemp -d)
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "deps: installing Node.js $v (the dashboard's build needs 20.19 or newer)"
  curl -fsSLo "$t/node.tar.xz" "https://nodejs.org/dist/$v/node-$v-linux-$arch.tar.xz"
  curl -fsSLo "$t/SUMS" "https://nodejs.org/dist/$v/SHASUMS256.txt"
  (cd "$t" && grep " node-$v-linux-$arch.tar.xz\$" SUMS | sed "s| node-.*| node.tar.xz|" | sha256sum -c -)
  $sudo mkdir -p /usr/local/lib/nodejs && $sudo tar -xJf "$t/node.tar.xz" -C /usr/local/lib/nodejs
  for b in node npm npx; do $sudo ln -sf "/usr/local/lib/nodejs/node-$v-linux-$arch/bin/$b" /usr/local/bin/$b; done
  rm -rf "$t"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "deps: installing the Rust toolchain with rustup (stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  fi
fi

# The desktop window's WebDriver test talks to tauri-driver, which starts the app and
# WebKit's WebDriver.
if [ "$what" = test ] && ! command -v tauri-driver >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tauri-driver" ]; then
  echo "deps: installing tauri-driver (cargo install tauri-driver --locked)"
  PATH="$HOME/.cargo/bin:$PATH" cargo install tauri-driver --locked --quiet
fi

# The Debian packages of the collector and the agent are made with cargo-deb (`make deb`,
# and the packages' test in `make test`).
if { [ "$what" = deb ] || [ "$what" = test ]; } && ! command -v cargo-deb >/dev/null 2>&1 &&
  [ ! -x "$HOME/.cargo/bin/cargo-deb" ]; then
  echo "deps: installing cargo-deb (cargo install cargo-deb --locked)"
  PATH="$HOME/.cargo/bin:$PATH" cargo install cargo-deb --locked --quiet
fi
