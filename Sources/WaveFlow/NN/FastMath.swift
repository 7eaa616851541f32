// Vectorised exp, log, sigmoid and tanh for Float32 in Swift SIMD16 (two
// AVX2 registers at the package's baseline). exp and log serve the mel
// front end; the gate kernels here are the portable versions of the C ones
// (VectorKernels, Sources/CKernels), which x86-64 runs instead. The generic
// scalar versions in Pointwise.swift (libm) are the naive twins the tests
// compare both with.

public enum FastMath {
    public typealias V = SIMD16<Float>

    /// e^x, relative error about 2e-7 on [-87, 88] (Cephes expf: range
    /// reduction by ln 2 in two parts, degree-5 polynomial, 2^n by exponent bits).
    @_transparent // always inlined: SIMD16 arguments of a call go through memory
    public static func exp(_ x: V) -> V {
        // Compare-and-select: clamped() and pointwiseMin/Max go lane by lane
        // through memory (seen in the mel front end's profile).
        let xc = atMost(atLeast(x, -87.3), 88.3)
        let n = (xc * 1.442_695_04).rounded(.toNearestOrEven)
        var r = xc - n * 0.693_359_375
        r = r - n * -2.121_944_4e-4
        var p = V(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_6e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_1e-1
        let e = p * r * r + r + 1
        // 2^n from n's bits: adding 1.5 * 2^23 leaves n in the low mantissa
        // bits (SIMD16<Int32>(n) would be a scalar loop).
        let shifted = unsafeBitCast(n + V(repeating: 12_582_912), to: SIMD16<Int32>.self) &- 0x4B40_0000
        let bits = (shifted &+ 127) &<< 23
        return e * unsafeBitCast(bits, to: V.self)
    }

    /// ln x for positive normal x, relative error about 1e-7: x = m 2^e with
    /// m in [sqrt(1/2), sqrt 2), ln m = 2 atanh(s) = 2(s + s^3/3 + ... + s^9/9)
    /// with s = (m-1)/(m+1), |s| < 0.172 (the next term is below 4e-10).
    /// Exponent and mantissa come from the bits (no SIMD int-to-float
    /// conversion, which would be a scalar loop). For the mel front end,
    /// whose input is floored at 1e-5.
    @inline(__always)
    public static func log(_ x: V) -> V {
        let bits = unsafeBitCast(x, to: SIMD16<UInt32>.self)
        // Mantissa in [1, 2); exponent as a float: (2^23 + biased e) - (2^23 + 127).
        var m = unsafeBitCast((bits & 0x007F_FFFF) | 0x3F80_0000, to: V.self)
        var e = unsafeBitCast((bits &>> 23) | 0x4B00_0000, to: V.self) - V(repeating: 8_388_735)
        let big = m .> V(repeating: 1.414_213_56)
        m.replace(with: m * 0.5, where: big)
        e.replace(with: e + 1, where: big)
        let sv = (m - 1) / (m + 1), s2 = sv * sv
        var p = V(repeating: 1.0 / 9)
        p = p * s2 + 1.0 / 7
        p = p * s2 + 1.0 / 5
        p = p * s2 + 1.0 / 3
        p = p * s2 + 1
        return e * 0.693_147_18 + 2 * sv * p
    }

    /// max(x, bound) lane-wise, as a vector compare and blend.
    @inline(__always)
    public static func atLeast(_ x: V, _ bound: Float) -> V {
        x.replacing(with: bound, where: x .< V(repeating: bound))
    }

    /// min(x, bound) lane-wise.
    @inline(__always)
    public static func atMost(_ x: V, _ bound: Float) -> V {
        x.replacing(with: bound, where: x .> V(repeating: bound))
    }

    /// 1 / (1 + e^-x).
    @_transparent
    public static func sigmoid(_ x: V) -> V { 1 / (1 + exp(-x)) }

    /// tanh x = 1 - 2 / (e^{2x} + 1) (exact at large |x|; absolute error ~1e-7 near 0).
    @_transparent
    public static func tanh(_ x: V) -> V { 1 - 2 / (exp(x + x) + 1) }

    /// tanh(a) * sigmoid(b) with one division:
    /// (e^{2a} - 1) / ((e^{2a} + 1)(1 + e^{-b})). 2a is clamped to [-30, 30]
    /// (tanh is +-1 in Float32 well before) so that the denominator's first
    /// factor stays finite; where the second overflows the true value is
    /// below Float32's normal range anyway.
    @_transparent
    public static func gate(_ a: V, _ b: V) -> V {
        let ea = exp(atMost(atLeast(a + a, -30), 30)), eb = exp(-b)
        return (ea - 1) / ((ea + 1) * (1 + eb))
    }

    /// g = tanh(y[0:count] + biasTanh) * sigmoid(y[total:total+count] + biasSigmoid),
    /// on elements offset ..< offset + count.
    public static func gateForwardSIMD(_ y: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, count: Int, offset: Int, total: Int,
                                   biasTanh: Float = 0, biasSigmoid: Float = 0) {
        var i = offset
        let end = offset + count
        let ba = V(repeating: biasTanh), bb = V(repeating: biasSigmoid)
        while i + 16 <= end {
            let a = UnsafeRawPointer(y + i).loadUnaligned(as: V.self)
            let b = UnsafeRawPointer(y + total + i).loadUnaligned(as: V.self)
            UnsafeMutableRawPointer(g + i).storeBytes(of: gate(a + ba, b + bb), as: V.self)
            i += 16
        }
        if i < end {
            // The tail, through a zero-filled vector.
            var a = ba, b = bb
            for q in 0 ..< end - i { a[q] = y[i + q] + biasTanh; b[q] = y[total + i + q] + biasSigmoid }
            let r = gate(a, b)
            for q in 0 ..< end - i { g[i + q] = r[q] }
        }
    }

    /// g = t * s with t = tanh(y[0:count]), s = sigmoid(y[total:total+count])
    /// (elements offset ..< offset + count), keeping t and s in `ts` (laid
    /// out as y) for `Gate.backwardFromKept`.
    public static func gateForwardKeepingSIMD(_ y: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>,
                                          _ ts: UnsafeMutablePointer<Float>, count: Int, offset: Int, total: Int) {
        var i = offset
        let end = offset + count
        while i + 16 <= end {
            let t = tanh(UnsafeRawPointer(y + i).loadUnaligned(as: V.self))
            let s = sigmoid(UnsafeRawPointer(y + total + i).loadUnaligned(as: V.self))
            UnsafeMutableRawPointer(ts + i).storeBytes(of: t, as: V.self)
            UnsafeMutableRawPointer(ts + total + i).storeBytes(of: s, as: V.self)
            UnsafeMutableRawPointer(g + i).storeBytes(of: t * s, as: V.self)
            i += 16
        }
        if i < end {
            var a = V(repeating: 0), b = V(repeating: 0)
            for q in 0 ..< end - i { a[q] = y[i + q]; b[q] = y[total + i + q] }
            let t = tanh(a), s = sigmoid(b)
            for q in 0 ..< end - i { ts[i + q] = t[q]; ts[total + i + q] = s[q]; g[i + q] = t[q] * s[q] }
        }
    }


    /// dst[i] = src[i] rounded to bf16, nearest even, on the bits (NaN payloads
    /// as they fall; the C kernels' twin).
    public static func toBF16SIMD(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, count: Int) {
        let s = UnsafeRawPointer(src).assumingMemoryBound(to: UInt32.self)
        var j = 0
        while j + 16 <= count {
            let v = UnsafeRawPointer(s + j).loadUnaligned(as: SIMD16<UInt32>.self)
            let rounded = (v &+ 0x7FFF &+ ((v &>> 16) & 1)) &>> 16
            UnsafeMutableRawPointer(dst + j).storeBytes(of: SIMD16<UInt16>(truncatingIfNeeded: rounded), as: SIMD16<UInt16>.self)
            j += 16
        }
        while j < count {
            let v = s[j]
            dst[j] = UInt16(truncatingIfNeeded: (v &+ 0x7FFF &+ ((v >> 16) & 1)) >> 16)
            j += 1
        }
    }
}
