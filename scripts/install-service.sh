#!/usr/bin/env bash
# Installs procyon-agent or the Procyon collector as a systemd service on this Debian or
# Ubuntu machine, through its Debian package.
#
#   sudo scripts/install-service.sh agent [--collector URL] [--deb FILE]
#   sudo scripts/install-service.sh collector [--deb FILE]
#
# The package is built from this repository (scripts/deb.sh: a release build, as the user
# who ran sudo, so target/ keeps its owner) unless --deb gives one, and installed with
# apt. The package decides where everything goes (/usr/bin, the systemd unit,
# /etc/procyon, /var/lib, the collector's system user): see the README's Install
# section. Then the service is enabled, and (re)started when it has what it needs to run.
#
# --collector URL is written into the agent's /etc/procyon/agent.toml if that file names
# no collector yet; several collectors of one fleet go in as one comma-separated value
# (--collector https://c1:7450,https://c2:7450). Running the script again upgrades the package, which keeps settings
# and data, and restarts the service.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  echo "usage: $0 agent [--collector URL] [--deb FILE] | collector [--deb FILE]" >&2
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
deb=""
while [ $# -gt 0 ]; do
  case "$1" in
    --collector) [ $# -ge 2 ] || usage; collector=$2; shift 2 ;;
    --collector=*) collector=${1#--collector=}; shift ;;
    --deb) [ $# -ge 2 ] || usage; deb=$2; shift 2 ;;
    --deb=*) deb=${1#--deb=}; shift ;;
    -h | --help) usage ;;
    *) echo "install-service: unknown argument: $1" >&2; usage ;;
  esac
done
case "$what" in
  agent) package=procyon-agent ;;
  collector) package=procyon ;;
  *) usage ;;
esac
unit=$package.service
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
[ "$(id -u)" -eq 0 ] || fail "this installs a package: run it as root (sudo $0 $what ...)"
command -v apt-get >/dev/null 2>&1 || fail "this installs a Debian package, and there is no apt-get here"

# --- The package -------------------------------------------------------------------------
if [ -z "$deb" ]; then
  # Build as the user who ran sudo (their toolchain, their target/), else as root.
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    say "building the $package package as $SUDO_USER: scripts/deb.sh $package"
    deb=$(sudo -u "$SUDO_USER" -H bash -lc 'export PATH="$HOME/.cargo/bin:$PATH"; "$1" "$2"' \
      build "$repo/scripts/deb.sh" "$package" | tail -n 1)
  else
    say "building the $package package: scripts/deb.sh $package"
    deb=$(PATH="$HOME/.cargo/bin:$PATH" "$repo/scripts/deb.sh" "$package" | tail -n 1)
  fi
fi
[ -f "$deb" ] || fail "no package to install (${deb:-the build made none})"
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")

# An earlier version of this script copied the binary to /usr/local/bin and the unit to
# /etc/systemd/system, where that unit would hide the package's: remove those copies.
if grep -qs "^ExecStart=/usr/local/bin/$package " "/etc/systemd/system/$unit"; then
  rm -f "/etc/systemd/system/$unit" "/usr/local/bin/$package"
  say "removed the copies an earlier install put in /etc/systemd/system and /usr/local/bin"
fi

DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb"
say "installed $deb ($("/usr/bin/$package" --version))"

# --- Agent: its collector ------------------------------------------------------------------
config=/etc/procyon/agent.toml
has_collector=yes
if [ "$what" = agent ]; then
  if [ -n "$collector" ]; then
    if grep -Eq '^[[:space:]]*collector[[:space:]]*=' "$config"; then
      say "kept the collector already set in $config (edit the file to change it)"
    else
      # Same mode as the packaged file (0600) from the start: it may name key files.
      tmp=$(mktemp /etc/procyon/.agent.toml.XXXXXX)
      awk -v url="$collector" '/^# collector = / && !done { print "collector = \"" url "\""; done = 1; next } { print }' \
        "$config" >"$tmp"
      chmod 0600 "$tmp"
      mv "$tmp" "$config"
      say "set collector = \"$collector\" in $config"
    fi
  fi
  grep -Eq '^[[:space:]]*collector[[:space:]]*=' "$config" || has_collector=no
fi

# --- Enable, start, and what to do next -----------------------------------------------------
systemctl enable --quiet "$unit"
say "systemctl enable $unit (starts at boot)"
if [ "$what" = collector ]; then
  systemctl restart "$unit"
  say "systemctl restart $unit"
  cat <<EOF

The collector is running (on 127.0.0.1:7450 unless /etc/procyon/collector.env says
otherwise; data in /var/lib/procyon).
Next:
  - on its first start it created the user admin; its password is in a file only the
    service's user can read (never in the journal):
      sudo cat /var/lib/procyon/initial-admin-password
    sign in with it, change it (sudo -u procyon procyon user passwd admin
    --data /var/lib/procyon), then delete that file
  - create a key for each agent:
      sudo -u procyon procyon apikey create --name web-1 --host web-1 --data /var/lib/procyon
  - to let agents on other machines in, set PROCYON_BIND, PROCYON_TLS_CERT and
    PROCYON_TLS_KEY in /etc/procyon/collector.env, then systemctl restart procyon
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
  echo "  - an API key (make one on the collector: procyon apikey create --name $(hostname) --host $(hostname)), stored with"
  echo "      procyon-agent set-key     (paste the key, then Ctrl-D)"
fi
echo "Then: systemctl start procyon-agent"
