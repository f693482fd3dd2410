#!/usr/bin/env bash
# Build embed_image.cpp against the libtorch of the installed torch wheel (its include/ and lib/): no CMake needed.
#   bash examples/cpp/build.sh OUTPUT [PYTHON]
# C++20 (torch's headers require it); -O1 keeps the build to seconds: the model's own code is in the package.
set -euo pipefail
out=${1:?usage: build.sh OUTPUT [PYTHON]}
python=${2:-${PYTHON:-python3}}
torch=$("$python" -c "import os, torch; print(os.path.dirname(torch.__file__))")
here=$(cd "$(dirname "$0")" && pwd)
# --no-as-needed: the package's compiled model resolves its symbols in libtorch at load time
g++ -std=c++20 -O1 "$here/embed_image.cpp" -o "$out" \
    -I"$torch/include" -L"$torch/lib" -Wl,--no-as-needed -ltorch -ltorch_cpu -lc10 -Wl,-rpath,"$torch/lib"
