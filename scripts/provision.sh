#!/usr/bin/env bash
# Makes sure what `make test` and `make demo` need can be had: PostgreSQL
# server binaries (or PGKIT_TEST_DATABASE_URL / PGKIT_DATABASE_URL),
# redis-server (or PGKIT_TEST_REDIS_URL), pgbouncer for the tests that run
# pgkit through PgBouncer in transaction pooling mode (pgtest.StartPgBouncer),
# promtool (Debian's prometheus package) for the alert rules, and chromium for
# the dashboard's browser test, the HypoPG extension (hypothetical
# indexes) for the query insights' index suggestions, and Patroni with etcd
# for the failover tests (pgtest.StartPatroni).
# On Debian, as root or with sudo, it installs what is missing; elsewhere it
# stops with the command to run.
set -euo pipefail

missing=()
have_pg_bin() {
	command -v initdb >/dev/null 2>&1 && return 0
	command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if [ -z "${PGKIT_TEST_DATABASE_URL:-}" ] && ! have_pg_bin; then
	missing+=(postgresql)
fi
if [ -z "${PGKIT_TEST_REDIS_URL:-}" ] && ! command -v redis-server >/dev/null 2>&1; then
	missing+=(redis-server)
fi
# Debian installs it in /usr/sbin, which a non-root PATH often lacks.
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v patroni >/dev/null 2>&1 || missing+=(patroni)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# HypoPG for each PostgreSQL installed here (Debian's layout).
for bindir in /usr/lib/postgresql/*/bin; do
	[ -d "$bindir" ] || continue
	major=$(basename "$(dirname "$bindir")")
	[ -f "/usr/share/postgresql/$major/extension/hypopg.control" ] || missing+=("postgresql-$major-hypopg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && sudo="sudo -n"
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
	echo "provision: installing ${missing[*]} with apt-get"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
	exit 0
fi
echo "provision: missing ${missing[*]}. Install them, for example:" >&2
echo "  sudo apt-get install ${missing[*]}      (Debian/Ubuntu)" >&2
echo "  brew install postgresql redis pgbouncer prometheus chromium etcd; pip install 'patroni[etcd3]'   (macOS)" >&2
echo "or point the tests at running servers with PGKIT_TEST_DATABASE_URL and PGKIT_TEST_REDIS_URL," >&2
echo "or run a Docker engine with the docker command on PATH (the test harness then runs containers)." >&2
exit 1
