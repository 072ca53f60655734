# Sourced by scripts/test and scripts/bench: a private, throwaway PostgreSQL.
#
# pg_private [extra server options]: unless TEST_DATABASE_URL is set, initdb
# into a temporary directory as the postgres OS user (the server refuses to
# run as root), listen only on a unix socket there, export
# TEST_DATABASE_URL, and stop and remove it all on exit. Installs Debian's
# postgresql package when initdb is missing. Exports TEST_PG_BIN.

pg_bindir() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/initdb" ] && { echo "$d"; return; }
	done
}

pg_private() {
	if [ -z "$(pg_bindir)" ]; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
	fi
	PG_BIN=$(pg_bindir)
	export TEST_PG_BIN="$PG_BIN"
	[ -n "${TEST_DATABASE_URL:-}" ] && return
	PGTMP=$(mktemp -d /tmp/supervisor-pg.XXXXXX)
	chown postgres: "$PGTMP"
	trap 'runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGTMP/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PGTMP"' EXIT
	runuser -u postgres -- "$PG_BIN/initdb" -D "$PGTMP/data" -A trust -U postgres >/dev/null
	runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/log" -w \
		-o "-c listen_addresses='' -c unix_socket_directories='$PGTMP' -c max_connections=200 $*" start >/dev/null
	export TEST_DATABASE_URL="postgres://postgres@/postgres?host=$PGTMP"
	echo "== private PostgreSQL at $PGTMP"
}
