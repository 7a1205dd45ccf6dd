#!/bin/sh
# Compiles every kernel file for AMD with Debian's hipcc (HIP 5.2): gfx90a (CDNA2, wave64) and
# gfx1030 (RDNA2, wave32). Proves the AMD path compiles; no AMD hardware runs it here.
# Debian's HIP 5.2 cannot target gfx1100 or gfx942.
# Usage: ci/hip_compile.sh  (installs hipcc with apt-get when it is missing and we are root)
set -eu
cd "$(dirname "$0")/.."
if ! command -v hipcc >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hipcc >/dev/null
    else
        echo "hip_compile: hipcc not found (apt-get install hipcc)" >&2
        exit 1
    fi
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0
for f in kernels/*.cu; do
    for target in gfx90a:64 gfx1030:32; do
        arch=${target%:*}
        wave=${target#*:}
        name=$(basename "$f" .cu)
        if hipcc --offload-arch="$arch" -DWARP_SIZE="$wave" -O3 -I kernels -c "$f" \
            -o "$out/$name-$arch.o" 2>"$out/log"; then
            echo "ok   $f $arch (WARP_SIZE=$wave)"
        else
            echo "FAIL $f $arch (WARP_SIZE=$wave)"
            cat "$out/log"
            fail=1
        fi
    done
done
exit $fail
