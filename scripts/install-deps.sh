#!/usr/bin/env bash
# Install the Debian packages a target needs, only those missing.
# Usage: scripts/install-deps.sh run|test|fuzz|bench
set -euo pipefail

build=(make gcc pkg-config libssl-dev zlib1g-dev libyaml-dev)
test=(python3 python3-websockets python3-pytest python3-cryptography nodejs npm clang libclang-rt-14-dev openssl libjansson-dev)
fuzz=(clang libclang-rt-14-dev)

case "${1:-run}" in
run) want=("${build[@]}") ;;
test) want=("${build[@]}" "${test[@]}") ;;
fuzz) want=("${build[@]}" "${fuzz[@]}") ;;
*) echo "usage: $0 run|test|fuzz" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        # node may come from outside Debian (e.g. a preinstalled nodejs); accept a working binary.
        if [ "$p" = nodejs ] && command -v node >/dev/null; then continue; fi
        if [ "$p" = npm ] && command -v npm >/dev/null; then continue; fi
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
