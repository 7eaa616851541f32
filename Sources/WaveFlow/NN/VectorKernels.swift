import Foundation
import CKernels

/// Which build of the C elementwise kernels (Sources/CKernels) this process
/// runs: the gate, row sums and the bf16 rounding, written with intrinsics
/// per instruction set. Swift's SIMD16 code for the gate, compiled for AVX2
/// (the package's baseline), spilled and split its masks into halves:
/// 2.2 ns per element against 1.0-1.3 for the C AVX2 kernel and 0.6-0.7
/// for AVX-512 (64 x 1024 elements, this repository's Zen 4 machine).
/// Elsewhere than x86-64 the Swift SIMD versions in FastMath run.
public enum VectorKernels {
    public enum Level: String, Sendable {
        /// AVX-512 gate, bf16 rounding by the AVX-512 BF16 instruction.
        case avx512bf16 = "AVX-512 + BF16"
        /// AVX-512 gate and integer bf16 rounding.
        case avx512 = "AVX-512"
        /// AVX2 + FMA.
        case avx2 = "AVX2"
        /// Swift SIMD: other architectures, and x86-64 CPUs without AVX2 + FMA
        /// (which need a build for an older baseline, README "Other CPUs").
        case swift = "Swift SIMD"
    }

    /// The best level this CPU runs. `WAVEFLOW_KERNELS=avx2` forces AVX2 (to
    /// compare; not on a CPU without it), `WAVEFLOW_KERNELS=swift` the Swift
    /// SIMD code (what a CPU without AVX2 runs).
    public static let level: Level = {
        #if arch(x86_64)
        let cpu = CPUInfo.current
        let forced = getenv("WAVEFLOW_KERNELS").map { String(cString: $0) }
        if forced == "swift" || !cpu.hasAVX2 { return .swift }
        if forced == "avx2" { return .avx2 }
        if cpu.hasAVX512 { return cpu.hasAVX512BF16 ? .avx512bf16 : .avx512 }
        return .avx2
        #else
        return .swift
        #endif
    }()

    /// The x86-64 level (3: AVX2 + FMA, the default; 4: AVX-512) this build's
    /// Swift code needs, nil for a build with an older `WAVEFLOW_MARCH`
    /// (Package.swift) and off x86-64. A CPU without it is stopped at start
    /// (cpu_check.c).
    public static var buildRequiredLevel: Int? { let l = Int(wf_build_required_x86_64_level()); return l > 0 ? l : nil }

    /// Levels this CPU can run, best first (for the tests).
    public static var available: [Level] {
        #if arch(x86_64)
        let cpu = CPUInfo.current
        var levels: [Level] = []
        if cpu.hasAVX512 && cpu.hasAVX512BF16 { levels.append(.avx512bf16) }
        if cpu.hasAVX512 { levels.append(.avx512) }
        if cpu.hasAVX2 { levels.append(.avx2) }
        return levels + [.swift]
        #else
        return [.swift]
        #endif
    }

    /// g[i] = tanh(y[i] + biasTanh) sigmoid(y[total + i] + biasSigmoid), i < count.
    @inline(__always)
    public static func gateForward(_ y: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, count: Int, total: Int,
                                   biasTanh: Float, biasSigmoid: Float, level: Level = level) {
        switch level {
        #if arch(x86_64)
        case .avx512bf16, .avx512: wf_gate_forward_avx512(y, g, count, total, biasTanh, biasSigmoid)
        case .avx2: wf_gate_forward_avx2(y, g, count, total, biasTanh, biasSigmoid)
        #endif
        default: FastMath.gateForwardSIMD(y, g, count: count, offset: 0, total: total, biasTanh: biasTanh, biasSigmoid: biasSigmoid)
        }
    }

    /// As `gateForward` without biases, keeping tanh in kept[i] and sigmoid in kept[total + i].
    @inline(__always)
    public static func gateForwardKeeping(_ y: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ kept: UnsafeMutablePointer<Float>,
                                          count: Int, total: Int, level: Level = level) {
        switch level {
        #if arch(x86_64)
        case .avx512bf16, .avx512: wf_gate_forward_keeping_avx512(y, g, kept, count, total)
        case .avx2: wf_gate_forward_keeping_avx2(y, g, kept, count, total)
        #endif
        default: FastMath.gateForwardKeepingSIMD(y, g, kept, count: count, offset: 0, total: total)
        }
    }

    /// In place over `kept`: dy[i] = dg s (1 - t^2), dy[total + i] = dg t s (1 - s).
    @inline(__always)
    public static func gateBackwardKept(_ kept: UnsafeMutablePointer<Float>, _ dg: UnsafePointer<Float>, count: Int, total: Int,
                                        level: Level = level) {
        switch level {
        #if arch(x86_64)
        case .avx512bf16, .avx512: wf_gate_backward_kept_avx512(kept, dg, count, total)
        case .avx2: wf_gate_backward_kept_avx2(kept, dg, count, total)
        #endif
        default: Gate.backwardFromKept(kept, dg, count: count, total: total)
        }
    }

    /// g[i] = t s and dy as `gateBackwardKept` writes it, from y and dg in
    /// one pass (t, s: `gateForwardKeeping`'s), the same values as those two.
    @inline(__always)
    public static func gateBackwardFromY(_ y: UnsafePointer<Float>, _ dg: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                                         _ dy: UnsafeMutablePointer<Float>, count: Int, total: Int, level: Level = level) {
        switch level {
        #if arch(x86_64)
        case .avx512bf16, .avx512: wf_gate_backward_from_y_avx512(y, dg, g, dy, count, total)
        case .avx2: wf_gate_backward_from_y_avx2(y, dg, g, dy, count, total)
        #endif
        default:
            gateForwardKeeping(y, g, dy, count: count, total: total, level: level)
            gateBackwardKept(dy, dg, count: count, total: total, level: level)
        }
    }

    /// The sum of x[0:count] (vector accumulators; agrees with a loop's sum within rounding).
    @inline(__always)
    public static func sum(_ x: UnsafePointer<Float>, count: Int, level: Level = level) -> Float {
        switch level {
        #if arch(x86_64)
        case .avx512bf16, .avx512: return wf_sum_avx512(x, count)
        case .avx2: return wf_sum_avx2(x, count)
        #endif
        default:
            var s = SIMD16<Float>(repeating: 0), i = 0
            while i + 16 <= count { s += UnsafeRawPointer(x + i).loadUnaligned(as: SIMD16<Float>.self); i += 16 }
            var total = s.sum()
            while i < count { total += x[i]; i += 1 }
            return total
        }
    }

    /// One Adam step over x[0:count] (`Adam.update`, bit for bit its scalar
    /// loop); false, nothing done, where no vector kernel runs.
    @inline(__always)
    public static func adam(_ x: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ m: UnsafeMutablePointer<Float>,
                            _ v: UnsafeMutablePointer<Float>, count: Int, b1: Float, b2: Float, c1: Float, c2: Float,
                            lr: Float, eps: Float, level: Level = level) -> Bool {
        switch level {
        #if arch(x86_64)
        case .avx512bf16, .avx512: wf_adam_avx512(x, g, m, v, count, b1, b2, c1, c2, lr, eps); return true
        case .avx2: wf_adam_avx2(x, g, m, v, count, b1, b2, c1, c2, lr, eps); return true
        #endif
        default: return false
        }
    }

    /// dst[i] = src[i] rounded to bf16 (nearest even).
    @inline(__always)
    public static func toBF16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int, level: Level = level) {
        switch level {
        #if arch(x86_64)
        case .avx512bf16: wf_to_bf16_avx512bf16(src, dst, count)
        case .avx512: wf_to_bf16_avx512(src, dst, count)
        case .avx2: wf_to_bf16_avx2(src, dst, count)
        #endif
        default: FastMath.toBF16SIMD(src, dst, count: count)
        }
    }
}
