#!/usr/bin/env bash
# ClusterFuzzLite / OSS-Fuzz build script for vm-irq's cargo-fuzz targets (fuzz/).
#
# In the builder image (see Dockerfile) it runs as $SRC/build.sh with the repository at
# $SRC/vm-irq and writes to $OUT. It also runs locally without Docker:
#
#     OUT=/tmp/cflite-out bash .clusterfuzzlite/build.sh
#
# For every target it puts in $OUT: the fuzzer binary, <target>_seed_corpus.zip (the
# checked-in seeds of fuzz/corpus/<target>), <target>.dict (fuzz/dict) and <target>.options
# (fuzz/options: libFuzzer flags such as max_len). $OUT defaults to a new temporary directory.
# An existing CARGO_TARGET_DIR is used (else cargo-fuzz's fuzz/target), so a build that CI's
# fuzz smoke step already made is reused rather than rebuilt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -d "$here/../fuzz/fuzz_targets" ]; then
    repo=$(cd "$here/.." && pwd)                # .clusterfuzzlite/build.sh in a checkout
elif [ -n "${SRC:-}" ] && [ -d "$SRC/vm-irq/fuzz/fuzz_targets" ]; then
    repo=$SRC/vm-irq                            # $SRC/build.sh in the builder image
else
    repo=$PWD
fi
[ -d "$repo/fuzz/fuzz_targets" ] || { echo "build.sh: no fuzz/fuzz_targets under $repo" >&2; exit 1; }
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
echo "build.sh: repository $repo, output $OUT"

# `cargo +nightly fuzz` where rustup has a nightly toolchain, else plain `cargo fuzz` (the
# OSS-Fuzz Rust image's default toolchain is nightly; on a stable-only machine, as .ci/run
# does, RUSTC_BOOTSTRAP=1 lets stable take cargo-fuzz's nightly flags).
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz() { cargo +nightly fuzz "$@"; }
elif rustc --version | grep -q nightly; then
    fuzz() { cargo fuzz "$@"; }
else
    fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi

cd "$repo/fuzz"
# Release with debug assertions and overflow checks: an arithmetic overflow in a model is a
# finding (invariant 1 of every target). These are also the flags of plain `cargo fuzz build`
# (CI's smoke step), so its artifacts are reused. $FUZZ_BUILD_FLAGS may add more.
# shellcheck disable=SC2086
fuzz build -O --debug-assertions ${FUZZ_BUILD_FLAGS:-}

target_dir=${CARGO_TARGET_DIR:-$repo/fuzz/target}
case "$target_dir" in /*) ;; *) target_dir=$repo/fuzz/$target_dir ;; esac
bin_dir=$target_dir/x86_64-unknown-linux-gnu/release

zip_dir() { # zip_dir ARCHIVE DIR: the files of DIR, flat
    rm -f "$1"
    if command -v zip >/dev/null 2>&1; then
        (cd "$2" && zip -q -X -j "$1" ./*)
    else
        python3 - "$1" "$2" <<'PY'
import os, sys, zipfile
archive, src = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
    for name in sorted(os.listdir(src)):
        z.write(os.path.join(src, name), name)
PY
    fi
}

for target in $(fuzz list); do
    cp "$bin_dir/$target" "$OUT/$target"
    if [ -d "corpus/$target" ]; then
        zip_dir "$OUT/${target}_seed_corpus.zip" "$repo/fuzz/corpus/$target"
    fi
    if [ -f "dict/$target.dict" ]; then
        cp "dict/$target.dict" "$OUT/$target.dict"
    fi
    if [ -f "options/$target.options" ]; then
        cp "options/$target.options" "$OUT/$target.options"
    fi
    echo "build.sh: $target"
done
