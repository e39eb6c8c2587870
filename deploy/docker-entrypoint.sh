#!/bin/sh
# The tickwork image's entry point (deploy/Dockerfile).
#
#   docker-entrypoint.sh [run] [OPTIONS]   start a node (the default): exec tickwork run
#   docker-entrypoint.sh COMMAND ...       any other tickwork command: add, ls, cron ...
#   docker-entrypoint.sh healthcheck       exit 0 when the node's /healthz answers 200
#   docker-entrypoint.sh PROGRAM ...       anything else is run as is (sh, python ...)
#
# Every option of `tickwork run` also comes from TICKWORK_<OPTION> or the TOML file named
# by TICKWORK_CONFIG (docs/operations.md, "Configuration"). Tested outside a container by
# tests/test_docker.py.
set -eu

TICKWORK="${TICKWORK_BIN:-tickwork}"
PYTHON="${TICKWORK_PYTHON:-python3}"

# The SQLite file lives on the volume; check it can be written before the node starts,
# so a volume mounted with the wrong owner says so in one line instead of a traceback.
check_database_dir() {
    db="${TICKWORK_DB:-tickwork.db}"
    case "$db" in
        postgres://* | postgresql://*) return 0 ;;
    esac
    dir=$(dirname -- "$db")
    if [ ! -d "$dir" ]; then
        echo "error: the database directory $dir does not exist (mount a volume there)" >&2
        exit 1
    fi
    if [ ! -w "$dir" ]; then
        echo "error: the database directory $dir is not writable by uid $(id -u):" \
            "give the volume to that user (chown $(id -u) $dir)" >&2
        exit 1
    fi
}

# /healthz on the port of TICKWORK_HTTP (the node's --http), over loopback: the probe
# runs inside the container. No token is needed for /healthz.
healthcheck() {
    address="${TICKWORK_HTTP:-127.0.0.1:8377}"
    port="${address##*:}"
    exec "$PYTHON" - "http://127.0.0.1:${port}/healthz" <<'PY'
import sys
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"unhealthy: {sys.argv[1]}: {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

if [ "$#" -eq 0 ]; then
    set -- run
fi
case "$1" in
    healthcheck)
        healthcheck
        ;;
    run)
        shift
        check_database_dir
        exec "$TICKWORK" run "$@"
        ;;
    -*)
        check_database_dir
        exec "$TICKWORK" run "$@"
        ;;
esac
# tickwork's own commands before programs of the same name (`ls`)
for command in $("$PYTHON" -c 'from tickwork.cli import cli; print(" ".join(cli.commands))'); do
    if [ "$1" = "$command" ]; then
        exec "$TICKWORK" "$@"
    fi
done
exec "$@"
