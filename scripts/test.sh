#!/usr/bin/env bash
# Lints (ruff, configured in pyproject.toml), then runs the test suite; any arguments go to pytest
# (e.g. scripts/test.sh tests/test_crops.py -x).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
ruff check --quiet src tests benchmarks
exec python -m pytest "$@"
