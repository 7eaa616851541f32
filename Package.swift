// swift-tools-version:6.0
import Foundation
import PackageDescription

// SIMD loops only become FMA vector code when the compiler may assume the
// instruction set; x86-64-v3 (AVX2 + FMA) runs on every x86 CPU of the last
// decade, including the CI machines.
#if arch(x86_64)
let archFlags: [String] = ["-Xcc", "-march=x86-64-v3"]
#else
let archFlags: [String] = []
#endif

let package = Package(
    name: "waveflow",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "waveflow", targets: ["waveflow"]),
        .library(name: "WaveFlow", targets: ["WaveFlow"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries, each behind its own module map (see Sources/C*/).
        .systemLibrary(name: "CSndFile", pkgConfig: "sndfile",
                       providers: [.apt(["libsndfile1-dev"])]),
        .systemLibrary(name: "CFFTW", pkgConfig: "fftw3f",
                       providers: [.apt(["libfftw3-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CSoxr", pkgConfig: "soxr",
                       providers: [.apt(["libsoxr-dev"])]),
        .systemLibrary(name: "CSystem"),
        // Our own C: elementwise kernels per instruction set (AVX2, AVX-512).
        .target(name: "CKernels"),

        // The engine: audio, features, numerical core, model, training.
        .target(
            name: "WaveFlow",
            dependencies: ["CSndFile", "CFFTW", "COpenBLAS", "CSoxr", "CSystem", "CKernels"],
            swiftSettings: [.unsafeFlags(archFlags)]
        ),
        // The command-line tool: parses arguments, calls the engine.
        .executableTarget(
            name: "waveflow",
            dependencies: [
                "WaveFlow",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: [.unsafeFlags(archFlags)]
        ),
        // The QuickStart tutorial: the library used from Swift (README,
        // "Using waveflow from Swift"); VocoderTests runs it.
        .executableTarget(
            name: "waveflow-example",
            dependencies: ["WaveFlow"],
            path: "Examples/QuickStart",
            swiftSettings: [.unsafeFlags(archFlags)]
        ),
        .testTarget(
            name: "WaveFlowTests",
            dependencies: ["WaveFlow"],
            resources: [.copy("Fixtures")],
            swiftSettings: [.unsafeFlags(archFlags)]
        ),
    ],
    swiftLanguageModes: [.v5]
)

// libFuzzer targets (scripts/fuzz.sh): built only when WAVEFLOW_FUZZ is set,
// with -sanitize=fuzzer (their entry point comes from libFuzzer).
if ProcessInfo.processInfo.environment["WAVEFLOW_FUZZ"] != nil {
    package.targets.append(.executableTarget(
        name: "waveflow-fuzz", dependencies: ["WaveFlow"], path: "Tests/Fuzz/Sources",
        swiftSettings: [.unsafeFlags(archFlags + ["-parse-as-library"])]))
}
