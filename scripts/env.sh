# Sourced by demo.sh and test.sh: create .venv with requirements.txt if it is missing or out of date, activate it.
# Needs Python 3.11 (python3.11, or python3 if that is 3.11); PYTHON=/path/to/python overrides.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: Python 3.11 is needed ($PYTHON is $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.requirements.sha256 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv from requirements.txt (first time: a few minutes, ~6 GB with PyTorch)"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > .venv/.requirements.sha256
fi
source .venv/bin/activate
# OpenMP threads spin-wait for work by default: with another process on the cores, PyTorch steps then run 16-45×
# slower (benchmarks/RESULTS.md). A short spin keeps the quiet speed and most of it under contention.
export GOMP_SPINCOUNT=${GOMP_SPINCOUNT:-1000}
