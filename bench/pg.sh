# Sourced by the benchmarks that need PostgreSQL: starts Debian's server as a throw-away cluster
# in "$dir/pg" (fsync and synchronous_commit on, as in production) on port $1 with a database
# `kms`, sets $url and $pgbin, and stops it in pg_cleanup.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_cleanup() { as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true; }
pg_start() { # port
  mkdir -p "$dir/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir/pg"; fi
  as_pg "$pgbin/initdb" -D "$dir/pg/data" -U postgres --auth=trust >/dev/null
  as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -o "-p $1 -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_OPTS:-}" -w start >/dev/null
  as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$1" -U postgres kms
  url="postgres://postgres@127.0.0.1:$1/kms"
}
