#!/usr/bin/env bash
# The whole veilfs test suite, from a fresh Debian/Ubuntu machine: installs what it needs,
# builds once, runs every test (unit, CLI, real FUSE mounts), then POSIX conformance
# (pjdfstest + fsx) on a snapshot-mode and an overlay-mode mount. Run as root (FUSE mounts, bind mounts, the
# `tests` user pjdfstest switches to).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root (sudo bash tests/run-all.sh): the tests mount filesystems" >&2
  exit 2
fi

need_apt=()
for pkg_cmd in fuse3:fusermount3 git:git gcc:gcc curl:curl bubblewrap:bwrap; do
  command -v "${pkg_cmd#*:}" >/dev/null || need_apt+=("${pkg_cmd%%:*}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# The document tests (tests/it/documents.rs) read the views with the formats' own Python
# libraries, installed from PyPI into a virtualenv beside the build (a few seconds, once).
python3 -m venv --help >/dev/null 2>&1 || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip
}
doc_venv="${CARGO_TARGET_DIR:-target}/doc-venv"
case "$doc_venv" in /*) ;; *) doc_venv="$PWD/$doc_venv" ;; esac
if ! "$doc_venv/bin/python" -c 'import docx, openpyxl, pptx, odf' 2>/dev/null; then
  rm -rf "$doc_venv"
  python3 -m venv "$doc_venv"
  "$doc_venv/bin/pip" install -q --disable-pip-version-check python-docx openpyxl python-pptx odfpy
fi
export VEILFS_DOC_PYTHON="$doc_venv/bin/python"
command -v pjdfstest >/dev/null && command -v fsx >/dev/null || cargo install --locked pjdfstest fsx
export PATH="$HOME/.cargo/bin:$PATH"

# One build shared by every integration test (they run the built binary) and by conformance.
cargo build --all-targets --locked
cargo test --locked --no-fail-fast -- --test-threads=2
tests/conformance/run.sh "${CARGO_TARGET_DIR:-target}/debug/veilfs" snapshot
tests/conformance/run.sh "${CARGO_TARGET_DIR:-target}/debug/veilfs" overlay
echo "all tests passed"
