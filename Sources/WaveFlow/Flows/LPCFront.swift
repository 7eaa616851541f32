import Foundation

// The LPC front (MODEL-SPEC section 11): a parameter-free source-filter step
// at the data end of the flow. The spectral envelope the log-mel already
// describes is turned, per frame, into an all-pole filter 1/A(z) with gain g;
// the flow models only the excitation e = A(z) x / g.
//
// Shape letters: M mel bands, F frames, K = n_fft/2 + 1 FFT bins, p the
// order, T samples.

/// Per-frame all-pole envelopes computed from a log-mel (Float64).
public struct LPCEnvelope: Sendable, Equatable {
    /// p, the prediction order.
    public let order: Int
    /// F, the number of frames.
    public let frames: Int
    /// Samples per frame (the mel's hop).
    public let hop: Int
    /// `[F, p+1]` row-major: `a_f[0] = 1, a_f[1 ... p]`.
    public var coefficients: [Double]
    /// `[F]`: the gain g_f = sqrt(max(E_f, 1e-14)).
    public var gains: [Double]

    /// The frame sample t belongs to: `min(floor((t + hop/2) / hop), F - 1)`.
    @inline(__always) public func frame(ofSample t: Int) -> Int { min((t + hop / 2) / hop, frames - 1) }

    /// `sum_{t in range} log g_{f(t)}` — the negative of the front's
    /// log-determinant over those samples.
    public func logGainSum(samples range: Range<Int>) -> Double {
        var total = 0.0, t = range.lowerBound
        while t < range.upperBound {
            let f = frame(ofSample: t)
            // The last sample of frame f (the last frame runs to the end).
            let end = f == frames - 1 ? range.upperBound : min(range.upperBound, (f + 1) * hop - hop / 2)
            total += Double(end - t) * Foundation.log(gains[f])
            t = end
        }
        return total
    }
}

/// The state of the LPC synthesis filter between two pieces of one
/// utterance: its last `order` outputs (Float64).
public struct LPCHistory: Sendable {
    var ring: [Double]
    var head: Int
    /// Silence before the first sample.
    public init(order: Int) { ring = [Double](repeating: 0, count: 2 * order); head = 0 }
    init(ring: [Double], head: Int) { (self.ring, self.head) = (ring, head) }
}

/// The LPC front of one model configuration: the mel triangles, band
/// normalisers, cosine table and lag window, made once. Immutable and safe to
/// share between threads.
public struct LPCFront: Sendable {
    /// p, the prediction order.
    public let order: Int
    public let mel: MelConfig
    /// `[M, K]` triangles with peak 1 (librosa's `norm=None`), Float64.
    let triangles: [Double]
    /// Per band, the bins where its triangle is non-zero.
    let bandRanges: [Range<Int>]
    /// `[M]`: 1 / sum_k B[m, k] of the Slaney-normalised bank.
    let bandScale: [Double]
    /// `[p+1, K]`: the inverse real FFT's weight of bin k in lag j, including
    /// the 1/n_fft and the factor 2 of the interior bins.
    let cosines: [Double]
    /// `[p+1]`: `exp(-0.5 (2 pi 60 j / sr)^2)`, with the white-noise
    /// correction 1.0001 folded into lag 0.
    let lagWindow: [Double]
    /// W = sum_n w[n]^2 of the periodic Hann window of length win (3 win / 8).
    let windowPower: Double

    /// Smallest power any bin is given (the spec's magnitude floor, squared).
    static let magnitudeFloor = 1e-5
    /// Floor of the prediction error before the square root.
    static let errorFloor = 1e-14

    /// - Parameters: order p >= 1 (16 for 22050 Hz), the model's features.
    public init(order: Int, mel: MelConfig) {
        precondition(order >= 1 && order < mel.nFFT / 2, "LPC order out of range")
        self.order = order
        self.mel = mel
        let nb = mel.nBins, nm = mel.nMels
        let binHz = Double(mel.sampleRate) / Double(mel.nFFT)
        let edges = MelScale.linspace(MelScale.hzToMel(mel.fmin), MelScale.hzToMel(mel.fmax), nm + 2).map(MelScale.melToHz)
        var tri = [Double](repeating: 0, count: nm * nb)
        for m in 0..<nm {
            for k in 0..<nb {
                let f = Double(k) * binHz
                let lower = (f - edges[m]) / (edges[m + 1] - edges[m])
                let upper = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1])
                tri[m * nb + k] = max(0, min(lower, upper))
            }
        }
        triangles = tri
        bandRanges = (0..<nm).map { m in
            let row = tri[m * nb ..< (m + 1) * nb]
            guard let lo = row.firstIndex(where: { $0 != 0 }), let hi = row.lastIndex(where: { $0 != 0 }) else { return 0..<0 }
            return (lo - m * nb) ..< (hi - m * nb + 1)
        }
        let bank = MelScale.filterBank(mel)
        bandScale = (0..<nm).map { m in
            let s = bank[m * nb ..< (m + 1) * nb].reduce(0.0) { $0 + Double($1) }
            return s > 0 ? 1 / s : 0
        }
        let n = mel.nFFT
        var cos = [Double](repeating: 0, count: (order + 1) * nb)
        for j in 0...order {
            for k in 0..<nb {
                let w = (k == 0 || k == nb - 1) ? 1.0 : 2.0
                cos[j * nb + k] = w * Foundation.cos(2 * Double.pi * Double(k * j % n) / Double(n)) / Double(n)
            }
        }
        cosines = cos
        lagWindow = (0...order).map { j in
            let x = 2 * Double.pi * 60 * Double(j) / Double(mel.sampleRate)
            return Foundation.exp(-0.5 * x * x) * (j == 0 ? 1.0001 : 1)
        }
        windowPower = 3 * Double(mel.winLength) / 8
    }

    // MARK: - Envelope

    /// The envelopes of log-mel `[M, F]` (row-major).
    public func envelope(logMel: [Float], frames: Int) -> LPCEnvelope {
        let nb = mel.nBins, p = order
        precondition(logMel.count == mel.nMels * frames)
        var coefficients = [Double](repeating: 0, count: frames * (p + 1))
        var gains = [Double](repeating: 0, count: frames)
        var spectrum = [Double](repeating: 0, count: nb)
        var r = [Double](repeating: 0, count: p + 1)
        var a = [Double](repeating: 0, count: p + 1)
        for f in 0..<frames {
            bandSpectrum(logMel, frame: f, frames: frames, into: &spectrum)
            for k in 0..<nb {
                let s = max(spectrum[k], Self.magnitudeFloor)
                spectrum[k] = s * s / windowPower
            }
            autocorrelation(power: spectrum, into: &r)
            let e = Self.levinsonDurbin(r, into: &a)
            for j in 0...p { coefficients[f * (p + 1) + j] = a[j] }
            gains[f] = max(e, Self.errorFloor).squareRoot()
        }
        return LPCEnvelope(order: p, frames: frames, hop: mel.hopLength, coefficients: coefficients, gains: gains)
    }

    /// S[k] = sum_m Tri[m, k] exp(mel[m, f]) / sum_k' B[m, k'] (step 1).
    func bandSpectrum(_ logMel: [Float], frame f: Int, frames: Int, into s: inout [Double]) {
        for k in s.indices { s[k] = 0 }
        let nb = mel.nBins
        for m in 0 ..< mel.nMels {
            let level = Foundation.exp(Double(logMel[m * frames + f])) * bandScale[m]
            for k in bandRanges[m] { s[k] += triangles[m * nb + k] * level }
        }
    }

    /// r[j] = inverse real FFT of the power spectrum at lags 0 ... p, lag-windowed (steps 3-4).
    func autocorrelation(power: [Double], into r: inout [Double]) {
        let nb = mel.nBins
        for j in 0...order {
            var sum = 0.0
            for k in 0..<nb { sum += cosines[j * nb + k] * power[k] }
            r[j] = sum * lagWindow[j]
        }
    }

    /// Levinson–Durbin: a[0] = 1, a[1 ... p] from r[0 ... p]; returns the
    /// prediction error E.
    static func levinsonDurbin(_ r: [Double], into a: inout [Double]) -> Double {
        let p = r.count - 1
        for j in a.indices { a[j] = 0 }
        a[0] = 1
        var e = r[0]
        var previous = a
        for i in 1...p {
            guard e > 0 else { break }
            var acc = r[i]
            for j in 1..<i { acc += a[j] * r[i - j] }
            let k = -acc / e
            previous = a
            for j in 1..<i { a[j] = previous[j] + k * previous[i - j] }
            a[i] = k
            e *= (1 - k * k)
        }
        return e
    }

    // MARK: - Filters

    /// Analysis: `e_t = (sum_k a_{f(t)}[k] x_{t-k}) / g_{f(t)}` for every
    /// sample of x (x_t = 0 for t < 0).
    public func analyse(_ x: [Float], envelope env: LPCEnvelope) -> [Float] {
        let p = order
        var e = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { xp in
            e.withUnsafeMutableBufferPointer { ep in
                env.coefficients.withUnsafeBufferPointer { cp in
                    for t in 0..<x.count {
                        let f = env.frame(ofSample: t)
                        let a = cp.baseAddress! + f * (p + 1)
                        var sum = Double(xp[t])
                        for k in stride(from: 1, through: min(p, t), by: 1) { sum += a[k] * Double(xp[t - k]) }
                        ep[t] = Float(sum / env.gains[f])
                    }
                }
            }
        }
        return e
    }

    /// Synthesis (the inverse of `analyse`):
    /// `x_t = g_{f(t)} e_t - sum_{k=1}^{p} a_{f(t)}[k] x_{t-k}`, run in
    /// Float64 (the filter's own history is never rounded).
    public func synthesise(_ e: [Float], envelope env: LPCEnvelope) -> [Float] {
        var history = LPCHistory(order: order)
        return synthesise(e, envelope: env, from: 0, history: &history)
    }

    /// The synthesis filter over samples `start ..< start + e.count` of an
    /// utterance, continuing from `history` (the filter's last outputs,
    /// updated): successive pieces give exactly the samples of one call on
    /// the whole excitation (chunked synthesis).
    public func synthesise(_ e: [Float], envelope env: LPCEnvelope, from start: Int, history: inout LPCHistory) -> [Float] {
        let p = order
        precondition(history.ring.count == 2 * p)
        var x = [Float](repeating: 0, count: e.count)
        // A ring of the last p outputs in Float64, doubled so that a window of
        // p values is contiguous.
        var ring = history.ring
        var head = history.head // ring[head + k - 1] is x_{t-k}
        env.coefficients.withUnsafeBufferPointer { cp in
            for i in 0..<e.count {
                let f = env.frame(ofSample: start + i)
                let a = cp.baseAddress! + f * (p + 1)
                var sum = env.gains[f] * Double(e[i])
                for k in 1...p { sum -= a[k] * ring[head + k - 1] }
                head = head == 0 ? p - 1 : head - 1
                ring[head] = sum
                ring[head + p] = sum
                x[i] = Float(sum)
            }
        }
        history = LPCHistory(ring: ring, head: head)
        return x
    }

    // MARK: - Naive twins (test oracles)

    /// The envelope by the spec's formulas taken literally: dense triangles
    /// over every bin, each cosine evaluated, and the normal equations
    /// `R a = -r` solved by Gaussian elimination instead of the recursion.
    public func envelopeNaive(logMel: [Float], frames: Int) -> LPCEnvelope {
        let nm = mel.nMels, nb = mel.nBins, p = order, n = mel.nFFT
        var coefficients = [Double](), gains = [Double]()
        for f in 0..<frames {
            var power = [Double](repeating: 0, count: nb)
            for k in 0..<nb {
                var s = 0.0
                for m in 0..<nm { s += triangles[m * nb + k] * Foundation.exp(Double(logMel[m * frames + f])) * bandScale[m] }
                power[k] = pow(max(s, 1e-5), 2) / windowPower
            }
            var r = [Double](repeating: 0, count: p + 1)
            for j in 0...p {
                var sum = power[0] + (j % 2 == 0 ? 1 : -1) * power[nb - 1]
                for k in 1 ..< nb - 1 { sum += 2 * power[k] * Foundation.cos(2 * Double.pi * Double(k) * Double(j) / Double(n)) }
                let x = 2 * Double.pi * 60 * Double(j) / Double(mel.sampleRate)
                r[j] = sum / Double(n) * Foundation.exp(-0.5 * x * x)
            }
            r[0] *= 1.0001
            // Toeplitz system: sum_k a[k] r[|i-k|] = -r[i], i = 1 ... p.
            var m = [[Double]](repeating: [Double](repeating: 0, count: p + 1), count: p)
            for i in 0..<p {
                for k in 0..<p { m[i][k] = r[abs(i - k)] }
                m[i][p] = -r[i + 1]
            }
            for col in 0..<p {
                let pivot = (col..<p).max { abs(m[$0][col]) < abs(m[$1][col]) }!
                m.swapAt(col, pivot)
                for row in 0..<p where row != col {
                    let factor = m[row][col] / m[col][col]
                    for c in col...p { m[row][c] -= factor * m[col][c] }
                }
            }
            let a = [1.0] + (0..<p).map { m[$0][p] / m[$0][$0] }
            var e = 0.0
            for k in 0...p { e += a[k] * r[k] }
            coefficients += a
            gains.append(max(e, 1e-14).squareRoot())
        }
        return LPCEnvelope(order: p, frames: frames, hop: mel.hopLength, coefficients: coefficients, gains: gains)
    }
}
