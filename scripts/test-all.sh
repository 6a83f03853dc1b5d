#!/usr/bin/env bash
# The whole test suite: installs what it needs, then format, lint, tests and
# the quick benchmark pass. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# External clients and anchors the tests drive (real parts nobody here wrote).
# nfs-ganesha(-vfs) and rpcbind: the `nfs` bench suite's anchor (installed here so the
# quick bench pass does not spend its time in apt).
PKGS=(libiscsi-bin libnfs-utils fuse3 fio iproute2 qemu-utils
      nfs-ganesha nfs-ganesha-vfs rpcbind)
# The vhost-blk qemu_guest test boots a Linux guest: Debian's qemu-system-x86 (its
# version may differ from an installed backports qemu-utils, so it is installed with
# --no-remove and may be refused: the test then says SKIP).
GUEST_PKGS=(qemu-system-x86 linux-image-cloud-amd64 busybox-static)
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if [ "$(id -u)" = 0 ]; then
    missing=()
    for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    missing=()
    for p in "${GUEST_PKGS[@]}"; do installed "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing (optional, for the qemu guest test): ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-remove "${missing[@]}" >/dev/null \
            || echo "== could not install ${missing[*]} without removing packages: the qemu guest test will SKIP"
    fi
    # qemu's libiscsi block driver (qemu-io/qemu-img on iscsi:// URLs: the
    # IscsiDev cross-check in tests/tests/iscsi_tools.rs). Only in the version
    # of the installed qemu-utils: a mismatched one would make apt remove it.
    if ! dpkg-query -W -f='${Status}' qemu-block-extra 2>/dev/null | grep -q "install ok installed"; then
        apt-get update -qq
        qv=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
        bv=$(apt-cache policy qemu-block-extra | awk '/Candidate:/ {print $2}')
        if [ -n "$qv" ] && [ "$qv" = "$bv" ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-remove qemu-block-extra >/dev/null \
                || echo "== qemu-block-extra not installed (the qemu part of iscsi_tools skips)"
        else
            echo "== qemu-block-extra $bv does not match qemu-utils $qv: not installed (the qemu part of iscsi_tools skips)"
        fi
    fi
else
    echo "== not root: skipping package install (tests needing ${PKGS[*]} say so and are skipped)"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== cargo test"
# Release profile: the simulation and multi-process tests are CPU-bound.
cargo test --workspace --release -- --test-threads=2

echo "== bench --quick (figures only, no thresholds: keeps the harness from rotting)"
cargo run -q -p bench --release -- --quick
