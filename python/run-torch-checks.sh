#!/bin/sh
# The checks that need torch but no GPU (python/tests/torch_check.py: the
# operators, opcheck, torch.compile and the VILA layer on 2 and 3 CPU rank
# processes), with the torch interpreter given, for where CI has no torch:
#   python/run-torch-checks.sh /path/to/venv/bin/python [build folder]
# The build folder (default: build) holds libulysses.so.
set -eu
if [ $# -lt 1 ]; then
  echo "usage: $0 TORCH_PYTHON [BUILD_DIR]" >&2
  exit 2
fi
python=$1
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${2:-$here/../build}" && pwd)
"$python" -c 'import torch; print("torch", torch.__version__)'
ULYSSES_LIBRARY="$build/libulysses.so" PYTHONPATH="$here" PYTHONDONTWRITEBYTECODE=1 \
  exec "$python" "$here/tests/torch_check.py"
