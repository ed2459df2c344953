#!/usr/bin/env bash
# Installs procyon-agent or the Procyon collector as a systemd service on this machine.
#
#   sudo scripts/install-service.sh agent [--collector URL]
#   sudo scripts/install-service.sh collector
#
# agent:     /usr/local/bin/procyon-agent, the unit procyon-agent.service, and
#            /etc/procyon/agent.toml (from packaging/agent.toml, mode 0600) unless one
#            exists; --collector URL is written into a new config file.
# collector: /usr/local/bin/procyon, the unit procyon.service, and the system user
#            `procyon` it runs as.
#
# The binary comes from target/release/ of this repository; if it is not there, it is
# built with cargo first (as the user who ran sudo, so target/ keeps its owner). Then
# `systemctl daemon-reload`, enable, and (re)start when there is what it needs to run.
# Running it again upgrades the binary and the unit and restarts the service; an
# existing config file is never overwritten.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
unit_dir=/etc/systemd/system
bin_dir=/usr/local/bin

usage() {
  echo "usage: $0 agent [--collector URL] | collector" >&2
  exit 2
}

say() { echo "==> $*"; }
fail() {
  echo "install-service: $*" >&2
  exit 1
}

what=${1:-}
[ $# -gt 0 ] && shift
collector=""
while [ $# -gt 0 ]; do
  case "$1" in
    --collector) [ $# -ge 2 ] || usage; collector=$2; shift 2 ;;
    --collector=*) collector=${1#--collector=}; shift ;;
    -h | --help) usage ;;
    *) echo "install-service: unknown argument: $1" >&2; usage ;;
  esac
done
case "$what" in
  agent) bin=procyon-agent; unit=procyon-agent.service ;;
  collector) bin=procyon; unit=procyon.service ;;
  *) usage ;;
esac
if [ -n "$collector" ]; then
  [ "$what" = agent ] || fail "--collector is for the agent (the collector is the one agents point at)"
  # It goes into a TOML string as it is: keep to what a URL needs.
  [[ "$collector" =~ ^https?://[^[:space:]\"\\]+$ ]] ||
    fail "--collector must be an http or https URL, e.g. https://collector.example:7450"
fi

# The same test as sd_booted(3): this directory exists only when systemd is PID 1.
if [ ! -d /run/systemd/system ]; then
  case "$what" in
    agent) direct="procyon-agent --collector URL" ;;
    collector) direct="procyon serve --data DIR" ;;
  esac
  fail "systemd is not running on this machine, so there is no service to install.
Run the program directly instead, e.g. under your own supervisor: $direct"
fi
[ "$(id -u)" -eq 0 ] || fail "this installs into /usr/local/bin and /etc: run it as root (sudo $0 $what ...)"

# --- The binary ------------------------------------------------------------------------
built="$repo/target/release/$bin"
if [ ! -x "$built" ]; then
  case "$what" in
    agent) cargo_args=(build --release -p procyon-agent) ;;
    collector) cargo_args=(build --release -p procyon --bin procyon) ;;
  esac
  # Build as the user who ran sudo (their toolchain, their target/), else as root.
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    say "building $bin as $SUDO_USER: cargo ${cargo_args[*]}"
    sudo -u "$SUDO_USER" -H bash -lc 'export PATH="$HOME/.cargo/bin:$PATH"; cd "$1" && shift && cargo "$@"' \
      build "$repo" "${cargo_args[@]}"
  else
    say "building $bin: cargo ${cargo_args[*]}"
    (export PATH="$HOME/.cargo/bin:$PATH"; cd "$repo" && cargo "${cargo_args[@]}")
  fi
  [ -x "$built" ] || fail "the build did not produce $built"
fi
# install(1) replaces the file rather than writing into it, so a running binary is safe.
install -m 0755 "$built" "$bin_dir/$bin"
say "installed $bin_dir/$bin ($("$bin_dir/$bin" --version))"

# --- Collector: its system user ------------------------------------------------------------
if [ "$what" = collector ] && ! id -u procyon >/dev/null 2>&1; then
  nologin=$(command -v nologin || echo /usr/sbin/nologin)
  useradd --system --user-group --home-dir /var/lib/procyon --no-create-home --shell "$nologin" procyon
  say "created the system user procyon (the collector runs as it)"
fi

# --- Agent: its config file ------------------------------------------------------------------
config=/etc/procyon/agent.toml
has_collector=yes
if [ "$what" = agent ]; then
  install -d -m 0755 /etc/procyon
  if [ -e "$config" ]; then
    say "kept the existing $config"
    [ -z "$collector" ] || echo "    (--collector was not applied to it: edit the file to change the collector)"
  else
    # Written with mode 0600 from the start: it may come to name key files and hosts.
    tmp=$(mktemp /etc/procyon/.agent.toml.XXXXXX)
    if [ -n "$collector" ]; then
      awk -v url="$collector" '/^# collector = / { print "collector = \"" url "\""; next } { print }' \
        "$repo/packaging/agent.toml" >"$tmp"
    else
      cat "$repo/packaging/agent.toml" >"$tmp"
    fi
    chmod 0600 "$tmp"
    mv "$tmp" "$config"
    say "wrote $config (mode 0600)${collector:+ with collector = \"$collector\"}"
  fi
  grep -Eq '^[[:space:]]*collector[[:space:]]*=' "$config" || has_collector=no
fi

# --- The unit ----------------------------------------------------------------------------------
install -m 0644 "$repo/packaging/systemd/$unit" "$unit_dir/$unit"
say "installed $unit_dir/$unit"
systemctl daemon-reload
say "systemctl daemon-reload"
systemctl enable --quiet "$unit"
say "systemctl enable $unit (starts at boot)"

# --- Start, and what to do next -----------------------------------------------------------
if [ "$what" = collector ]; then
  systemctl restart "$unit"
  say "systemctl restart $unit"
  cat <<EOF

The collector is running (on 127.0.0.1:7450 unless PROCYON_BIND says otherwise; data
in /var/lib/procyon).
Next:
  - on its first start it created the user admin; its password is in a file only the
    service's user can read (never in the journal):
      sudo cat /var/lib/procyon/initial-admin-password
    sign in with it, change it (sudo -u procyon $bin_dir/procyon user passwd admin
    --data /var/lib/procyon), then delete that file
  - create a key for each agent:
      sudo -u procyon $bin_dir/procyon apikey create --name web-1 --data /var/lib/procyon
  - to let agents on other machines in: systemctl edit procyon, add
      [Service]
      Environment=PROCYON_BIND=0.0.0.0:7450
    then systemctl restart procyon (and put TLS in front of it)
  - logs: journalctl -u procyon -f
EOF
  exit 0
fi

# The agent needs a collector and a key; started without them it would only fail and
# be restarted every few seconds.
has_key=no
if [ -s /var/lib/procyon-agent/api.key ] || grep -Eq '^[[:space:]]*(api_key_file|key_file)[[:space:]]*=' "$config"; then
  has_key=yes
fi
if [ "$has_collector" = yes ] && [ "$has_key" = yes ]; then
  systemctl restart "$unit"
  say "systemctl restart $unit"
  cat <<EOF

The agent is running. Check it with:
  systemctl status procyon-agent
  journalctl -u procyon-agent -f
EOF
  exit 0
fi

echo
echo "Not started yet: the agent needs"
[ "$has_collector" = yes ] || echo "  - a collector: set collector = \"https://...\" in $config"
if [ "$has_key" = no ]; then
  echo "  - an API key (make one on the collector: procyon apikey create --name $(hostname)), stored with"
  echo "      $bin_dir/procyon-agent set-key     (paste the key, then Ctrl-D)"
fi
echo "Then: systemctl start procyon-agent"
