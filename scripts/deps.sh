#!/bin/sh
# Install the Debian packages a make target needs.
# usage: scripts/deps.sh demo|check|bench|valgrind
# As root, missing packages are installed with apt-get; otherwise the script
# names them and fails, so the user knows exactly what to install.
set -eu

base="cmake make gcc pkg-config libuv1-dev libjansson-dev"
case "${1:-check}" in
  demo) want="$base" ;;
  check) want="$base libcriterion-dev clang-format" ;;
  bench) want="$base libcriterion-dev libboost-context-dev" ;;
  valgrind) want="$base libcriterion-dev valgrind" ;;
  *) echo "deps.sh: unknown target '$1'" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "warden needs these Debian packages:$missing" >&2
  echo "install them with: sudo apt-get install$missing" >&2
  exit 1
fi
echo "warden: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || apt-get update
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
