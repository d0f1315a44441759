#!/usr/bin/env bash
# The load tests of `make loadtest`, on throwaway PostgreSQL servers:
#
#   1. builds examples/chat and examples/loadtest;
#   2. starts chat on a throwaway server of its own (no -database-url) on a
#      free loopback port, and waits until it serves;
#   3. runs `loadtest ws` against it: CLIENTS (1000) WebSocket clients x
#      MESSAGES (10) messages, then checks every acknowledged message in
#      its database;
#   4. stops chat with SIGTERM (it drains, flushes and removes its server);
#   5. runs `loadtest pool -compare raw` on a throwaway server of its own.
#
# Each result is one JSON line on stdout. It exits non-zero if a test
# failed or chat did not stop cleanly. Environment: CLIENTS, MESSAGES,
# RESPONDER_DELAY (chat's, 200ms), POOL_FLAGS (extra flags for pool), and
# LOADTEST_DATABASE_URL to use a running server (a superuser URL) instead of
# throwaway ones ($DATABASE_URL is deliberately not used).
set -euo pipefail
cd "$(dirname "$0")/../.."

clients=${CLIENTS:-1000}
messages=${MESSAGES:-10}
delay=${RESPONDER_DELAY:-200ms}
tmp=$(mktemp -d)
chat_pid=""

stop_chat() {
	if [ -n "$chat_pid" ] && kill -0 "$chat_pid" 2>/dev/null; then
		kill -TERM "$chat_pid"
		wait "$chat_pid"
		return $?
	fi
	return 0
}
trap 'stop_chat || true; rm -rf "$tmp"' EXIT

# examples is a module of its own (github.com/pgkit-dev/pgkit/examples).
(cd examples && go build -o "$tmp/chat" ./chat && go build -o "$tmp/loadtest" ./loadtest)

admin_token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
"$tmp/chat" -database-url "${LOADTEST_DATABASE_URL:-}" -listen 127.0.0.1:0 -ready-file "$tmp/ready.json" -admin-token "$admin_token" \
	-responder-delay "$delay" -log-level warn 2>"$tmp/chat.log" &
chat_pid=$!

for _ in $(seq 1 600); do # up to 2 minutes: the throwaway server starts first
	[ -s "$tmp/ready.json" ] && break
	if ! kill -0 "$chat_pid" 2>/dev/null; then
		echo "run.sh: chat exited before serving:" >&2
		cat "$tmp/chat.log" >&2
		exit 1
	fi
	sleep 0.2
done
if [ ! -s "$tmp/ready.json" ]; then
	echo "run.sh: chat did not start within 2 minutes:" >&2
	cat "$tmp/chat.log" >&2
	exit 1
fi
url=$(sed -E 's/.*"url":"([^"]*)".*/\1/' "$tmp/ready.json")
database_url=$(sed -E 's/.*"database_url":"([^"]*)".*/\1/' "$tmp/ready.json")

status=0
"$tmp/loadtest" ws -url "$url" -admin-token "$admin_token" -database-url "$database_url" \
	-clients "$clients" -messages "$messages" || status=1

if ! stop_chat; then
	echo "run.sh: chat did not stop cleanly:" >&2
	cat "$tmp/chat.log" >&2
	status=1
fi
chat_pid=""

# shellcheck disable=SC2086
"$tmp/loadtest" pool -database-url "${LOADTEST_DATABASE_URL:-}" -compare raw ${POOL_FLAGS:-} || status=1
exit $status
