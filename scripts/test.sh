#!/usr/bin/env bash
# Runs the whole test suite (installing the Debian packages first if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Release build (the CLI tests run the tool on real audio; a debug build is
# ~20x slower), with testing enabled so tests can reach internal API.
# XCTest only: the Swift Testing runner would add a "0 tests" summary line.
swift test -c release -Xswiftc -enable-testing --disable-swift-testing "$@"
