#!/usr/bin/env bash
# Runs the test suite; any arguments go to pytest (e.g. scripts/test.sh tests/test_crops.py -x).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec python -m pytest "$@"
