# Sourced by scripts/test, scripts/check, scripts/demo and scripts/bench*: makes sure the
# virtualenv, the package (with the extras named in SIPGUARD_EXTRAS), SIPp and baresip are
# installed.
# Idempotent and quiet when everything is already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
EXTRAS="${SIPGUARD_EXTRAS:-dev}"

if [[ ! -x .venv/bin/python ]]; then
	echo "setup: creating .venv with $($PY --version)"
	"$PY" -m venv .venv || {
		echo "setup: python3 -m venv failed; installing python3-venv" >&2
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
		"$PY" -m venv .venv
	}
fi
stamp=".venv/.sipguard-installed-$EXTRAS"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
	echo "setup: installing sipguard[$EXTRAS] into .venv"
	.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	.venv/bin/python -m pip install -q -e ".[$EXTRAS]" 2>&1 | grep -vE "^WARNING: Location|BuildBackendWarning|^\s*$|^\s+!!|\*{10}|corresp|return|with strategy" || true
	.venv/bin/python -c "import sipguard, yaml, netaddr, structlog, orjson, prometheus_client" \
		|| { echo "setup: the package did not install" >&2; exit 1; }
	echo "$want" > "$stamp"
fi

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
# the real TLS SIP client of the integration tests (Debian's SIPp has no TLS)
command -v baresip >/dev/null 2>&1 || need_apt+=(baresip-core)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server) # shared-state tests
# redis-cli: forms the Cluster of the Sentinel/Cluster tests (`redis-server --sentinel` is Sentinel)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
for pkg in "${SIPGUARD_APT_EXTRA[@]:-}"; do
	[[ -n "$pkg" ]] && ! dpkg -s "$pkg" >/dev/null 2>&1 && need_apt+=("$pkg")
done
if (( ${#need_apt[@]} )); then
	echo "setup: installing ${need_apt[*]} (Debian packages)"
	SUDO=""
	[[ $(id -u) -ne 0 ]] && SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
export PATH="$ROOT/.venv/bin:$PATH"
