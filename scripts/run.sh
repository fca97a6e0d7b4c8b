#!/usr/bin/env bash
# Runs the cellsynth study: `scripts/run.sh` = `kedro run` on the demo data; any arguments go to `kedro run`
# (e.g. scripts/run.sh --pipeline=data_prep --env=paper).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec kedro run "$@"
