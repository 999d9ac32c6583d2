#!/bin/sh
# Conventions checked by a tool rather than by reviewers (run by make check):
#  1. every C source and header is clang-formatted (.clang-format);
#  2. layers above the core use only public headers: nothing outside
#     src/core/ includes a core-internal header.
set -eu
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find src include tests bench examples -name '*.[ch]')
clang-format --dry-run --Werror $files
bad=$(grep -rlE '#include *"(\.\./)*core/(internal|stack)\.h"' src --include='*.[ch]' |
      grep -v '^src/core/' || true)
if [ -n "$bad" ]; then
  echo "layering: these files include core-internal headers:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "lint: format and layering OK"
