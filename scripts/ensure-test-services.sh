#!/usr/bin/env bash
# Make sure the servers and system packages the test suite needs are there, installing and starting
# what is missing. Safe to run again; it changes nothing that is already in place.
set -euo pipefail

installed_postgres=no
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "installing PostgreSQL"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql postgresql-client >/dev/null
  installed_postgres=yes
fi

if [ "$installed_postgres" = yes ]; then
  # A fresh cluster asks for passwords over TCP; the tests use trust on loopback, as on the dev machines.
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  done
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
elif [ "$installed_postgres" = yes ]; then
  version=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload
fi
pg_isready -h 127.0.0.1 -p 5432

# The tests create their own databases, connecting first to the database `test`.
if ! psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null
fi

# Chromium for the browser tests (tests/browser: WebAuthn through its virtual authenticator). Debian's
# package, driven by Playwright through its path: `playwright install` would download a browser of its own.
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

# OpenLDAP for the directory tests (tests/directory) and the sync benchmark: the binaries only. The tests start
# their own slapd on a free loopback port with a configuration in a temporary folder; the system's slapd, which
# the package sets up, is never used (and not started here).
if ! command -v slapd >/dev/null 2>&1 && [ ! -x /usr/sbin/slapd ] || ! command -v ldapadd >/dev/null 2>&1; then
  echo "installing slapd and ldap-utils"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slapd ldap-utils >/dev/null
fi

# axe-core for the accessibility checks (tests/browser/test_accessibility.py), injected into Chromium by
# Playwright. From npm into .cache/node_modules of the project (not saved in any package.json).
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$root/.cache/node_modules/axe-core/axe.min.js" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq npm >/dev/null
  fi
  echo "installing axe-core"
  mkdir -p "$root/.cache"
  (cd "$root/.cache" && npm install --no-save --no-audit --no-fund --no-package-lock --prefix . axe-core >/dev/null)
fi
