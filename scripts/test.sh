#!/usr/bin/env bash
# The whole test suite, as README.md and .ci/run call it:
#
#     ./scripts/test.sh [pytest args...]
#
# Creates .venv (and installs moenv with its dev tools) when needed, runs the quality gates
# (ruff, mypy --strict, import-linter) and then pytest. Integration tests start a private
# MariaDB in a temporary directory unless MOENV_TEST_URL (and MOENV_TEST_URL2 for the second
# server) point at servers to use. MariaDB itself must be installed (scripts/demo.sh or
# `apt-get install mariadb-server` does that).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

stamp=.venv/.moenv-installed
if [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch "$stamp"
fi

echo "== ruff"
.venv/bin/ruff check src tests benchmarks
echo "== mypy --strict"
.venv/bin/mypy
echo "== import-linter (layers)"
.venv/bin/lint-imports --no-cache
echo "== pytest"
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
