#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with trust auth and a database
# named `test`: use the machine's if it answers, start it if it is installed but stopped,
# otherwise install Debian's postgresql and start a throw-away cluster on loopback.
set -euo pipefail

ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "ci: installing postgresql" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

if ! ready; then
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    conf="/etc/postgresql/${version}/main"
    # loopback only, trust auth: a throw-away test server
    if ! grep -q "tickwork-ci" "${conf}/pg_hba.conf"; then
        {
            echo "# tickwork-ci"
            echo "host all all 127.0.0.1/32 trust"
            echo "host all all ::1/128 trust"
            echo "local all all trust"
        } | cat - "${conf}/pg_hba.conf" > /tmp/pg_hba.conf && mv /tmp/pg_hba.conf "${conf}/pg_hba.conf"
        chown postgres:postgres "${conf}/pg_hba.conf"
    fi
    echo "ci: starting postgresql ${version}" >&2
    pg_ctlcluster --skip-systemctl-redirect "${version}" main start || true
    for _ in $(seq 1 30); do ready && break; sleep 1; done
fi
ready || { echo "ci: PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }

if ! psql -h 127.0.0.1 -U postgres -d test -c "SELECT 1" >/dev/null 2>&1; then
    psql -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE test" >/dev/null
fi
echo "ci: PostgreSQL ready on 127.0.0.1:5432" >&2
