// swift-tools-version:6.0
import Foundation
import PackageDescription

// SIMD loops only become FMA vector code when the compiler may assume the
// instruction set; x86-64-v3 (AVX2 + FMA) runs on most x86 CPUs of the last
// decade, including the CI machines. For one without AVX2 (older Xeons and
// Core CPUs, Atom-class Celerons and Pentiums, virtual machines that hide
// AVX): `WAVEFLOW_MARCH=x86-64-v2 swift build -c release` (README, "Other
// CPUs"). The C kernels pick their instruction set at run time either way;
// CKernels' baseline check (cpu_check.c) stops a v3 (or v4) build on a CPU
// that cannot run it, with a message, before any of waveflow's code runs.
#if arch(x86_64)
let march = ProcessInfo.processInfo.environment["WAVEFLOW_MARCH"] ?? "x86-64-v3"
let archFlags: [String] = ["-Xcc", "-march=\(march)"]
// The x86-64 level the start-up check demands: 3 or 4 for those levels;
// none for the older baselines, nor for a CPU name (haswell, native ...),
// whose features the user chose and the check does not know.
let requiredLevel: String? = ["x86-64-v3": "3", "x86-64-v4": "4"][march]
#else
let archFlags: [String] = []
let requiredLevel: String? = nil
#endif

let package = Package(
    name: "waveflow",
    // macOS 14: Hummingbird 2's minimum there (Linux has no such floor).
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "waveflow", targets: ["waveflow"]),
        .library(name: "WaveFlow", targets: ["WaveFlow"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `waveflow serve` (WaveFlowServer): Hummingbird 2 on SwiftNIO, graceful
        // shutdown through swift-service-lifecycle. (Its tests and
        // `serve-bench` use Foundation's URLSession: AsyncHTTPClient would
        // add BoringSSL to every build.)
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
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
        // (Not "CSystem": swift-system, which SwiftNIO brings in, has a target of that name.)
        .systemLibrary(name: "CGlibcExtras"),
        // Our own C: elementwise kernels per instruction set (AVX2, AVX-512).
        .target(name: "CKernels", cSettings: requiredLevel.map { [.define("WF_REQUIRE_X86_64_LEVEL", to: $0)] } ?? []),

        // The engine: audio, features, numerical core, model, training.
        .target(
            name: "WaveFlow",
            dependencies: ["CSndFile", "CFFTW", "COpenBLAS", "CSoxr", "CGlibcExtras", "CKernels"],
            swiftSettings: [.unsafeFlags(archFlags)]
        ),
        // The HTTP service (`waveflow serve`): routes, request parsing, the
        // worker pool and queue, metrics, the page. Uses WaveFlow's public API.
        .target(
            name: "WaveFlowServer",
            dependencies: [
                "WaveFlow",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: [.unsafeFlags(archFlags)]
        ),
        // The command-line tool: parses arguments, calls the engine.
        .executableTarget(
            name: "waveflow",
            dependencies: [
                "WaveFlow",
                "WaveFlowServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
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
        // The service over real HTTP on loopback (in-process server, URLSession).
        .testTarget(
            name: "WaveFlowServerTests",
            dependencies: [
                "WaveFlow",
                "WaveFlowServer",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
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
