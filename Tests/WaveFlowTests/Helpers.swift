import Foundation
import XCTest
@testable import WaveFlow

/// Path of a committed fixture file.
func fixture(_ name: String) -> String {
    Bundle.module.path(forResource: name, ofType: nil, inDirectory: "Fixtures")!
}

/// Path of a clip in the repository's Audio/ folder.
func exampleAudio(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Audio").appendingPathComponent(name).path
}

/// A fresh temporary folder, removed when the test ends.
func temporaryFolder(_ test: XCTestCase) -> String {
    let dir = NSTemporaryDirectory() + "waveflow-test-\(UUID().uuidString)"
    try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    return dir
}

/// Asserts that `body` throws a `WaveFlowError` whose one-line description
/// contains every string in `contains`.
func assertFails<T>(_ contains: [String], file: StaticString = #filePath, line: UInt = #line,
                    _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(contains)", file: file, line: line)
    } catch {
        let text = error.describe()
        XCTAssertFalse(text.contains("\n"), "error is not one line: \(text)", file: file, line: line)
        for c in contains {
            XCTAssertTrue(text.contains(c), "'\(text)' lacks '\(c)'", file: file, line: line)
        }
    }
}

/// Largest |a - b| / max(|b|, floor) over two equal-length arrays.
func maxRelativeError<T: BinaryFloatingPoint>(_ a: [T], _ b: [T], floor: T = 1e-6) -> T {
    precondition(a.count == b.count)
    var worst: T = 0
    for i in a.indices { worst = max(worst, abs(a[i] - b[i]) / max(abs(b[i]), floor)) }
    return worst
}

/// Deterministic pseudo-random numbers for tests (SplitMix64).
struct TestRNG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-scale, scale).
    mutating func uniform<T: BinaryFloatingPoint>(_ scale: T = 1) -> T {
        T(Double(next() >> 11) / Double(1 << 53) * 2 - 1) * scale
    }
    mutating func array<T: BinaryFloatingPoint>(_ n: Int, scale: T = 1) -> [T] {
        (0..<n).map { _ in uniform(scale) }
    }
}

/// max |a - b| / max |b|: the error of a fast kernel relative to the scale
/// of the reference's output (elementwise relative error is meaningless for
/// outputs that happen to cancel to near zero).
func normRelativeError<T: BinaryFloatingPoint>(_ a: [T], _ b: [T]) -> T {
    precondition(a.count == b.count)
    var diff: T = 0, scale: T = 0
    for i in a.indices { diff = max(diff, abs(a[i] - b[i])); scale = max(scale, abs(b[i])) }
    return diff / max(scale, T.leastNormalMagnitude)
}

/// The tests' tolerances, named once with what each allows for. (Values
/// are those the assertions always used; a test with a tolerance of its
/// own says why beside it.)
enum Tolerance {
    /// A Float32 fast kernel (C intrinsics, Swift SIMD) against its libm or
    /// loop twin, elementwise absolute: vector exp/tanh approximations.
    static let float32Kernel: Float = 1e-6
    /// Two Float32 evaluations of the same products in another order or
    /// blocking (BLAS against loops, blocked synthesis, cached against
    /// naive inverse, bf16 operands rounded once against at every product),
    /// relative L2.
    static let float32Reordered: Float = 1e-5
    /// inverse(forward(x)) through a whole Float32 model, relative L2: the
    /// row-by-row inverse compounds rounding over rows and flows.
    static let float32RoundTrip: Float = 1e-4
    /// Two Float64 evaluations of the same sums (BLAS against loops), relative L2.
    static let float64Reordered = 1e-12
    /// The model's log-det against log|det J| of a Float64 central-difference Jacobian.
    static let bruteForceLogDet = 1e-6
}
