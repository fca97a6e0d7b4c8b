# Sourced by the other scripts: creates (or reuses) the project's virtual environment in .venv and
# installs the project into it whenever pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  echo "cellsynth: creating the virtual environment .venv with $PYTHON" >&2
  "$PYTHON" -m venv .venv
fi
stamp="$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat .venv/.install-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "cellsynth: installing the project and its dependencies into .venv (the first time takes several minutes)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  # elasticdeform's wheels are compiled against NumPy 1 and fail to import under NumPy 2: build it here.
  .venv/bin/python -m pip install --quiet --no-binary elasticdeform -e '.[test]'
  # A wheel installed by an older environment stays "satisfied" above: rebuild it if it cannot be imported.
  if ! .venv/bin/python -c "import elasticdeform" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --force-reinstall --no-deps --no-binary elasticdeform elasticdeform
  fi
  echo "$stamp" > .venv/.install-stamp
fi
export PATH="$ROOT/.venv/bin:$PATH"
