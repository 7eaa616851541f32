#!/usr/bin/env bash
# Runs the whole test suite (installing the Debian packages first if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Release build (the CLI tests run the tool on real audio; a debug build is
# ~20x slower), with testing enabled so tests can reach internal API.
# XCTest only: the Swift Testing runner would add a "0 tests" summary line.
swift test -c release -Xswiftc -enable-testing --disable-swift-testing "$@"
# `swift test` builds every target, the QuickStart example (Examples/QuickStart)
# included, and VocoderTests runs it; make sure the example really was built.
bin=$(swift build -c release -Xswiftc -enable-testing --show-bin-path)
test -x "$bin/waveflow-example" || { echo "scripts/test.sh: waveflow-example was not built in $bin" >&2; exit 1; }
