#!/usr/bin/env bash
# Runs the whole test suite (installing the Debian packages first if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# XCTest only: the Swift Testing runner would add a "0 tests" summary line.
swift test --disable-swift-testing "$@"
