#!/bin/sh
# The ROOT-escape test (tests/test_serve_escape.py) for longer than CI runs it:
# an ancestor folder swapped for a symlink to outside ROOT while GET, HEAD,
# listings, PUT, DELETE, MOVE and MKCOL run. Usage: tools/escape_soak.sh [SECONDS] (default 60).
cd "$(dirname "$0")/.." || exit 1
ZCOPY_ESCAPE_SECONDS="${1:-60}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" \
    exec python3 -m pytest -q -s -p no:cacheprovider tests/test_serve_escape.py
