#!/usr/bin/env bash
# What `make test` needs beyond cargo: libpq's headers (the `postgres` feature links libpq),
# the PostgreSQL server binaries (the tests start throwaway servers in temp dirs) and the
# zoneinfo files (tzdata: tests run commands with TZ=Asia/Seoul). As
# root with apt, installs what is missing; otherwise says which command would.
set -euo pipefail
need=()
pkg-config --exists libpq 2>/dev/null || command -v pg_config >/dev/null || need+=(libpq-dev pkg-config)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# The zoneinfo files glibc reads for TZ=Asia/Seoul (the local-time tests).
[ -e /usr/share/zoneinfo/Asia/Seoul ] || need+=(tzdata)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "test-deps: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "make test needs: ${need[*]}"
    echo "    sudo apt-get install -y ${need[*]}"
    exit 1
fi
