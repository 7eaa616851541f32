import CFFTW
import Foundation

/// Serialises FFTW planning: the planner is not thread-safe, execution is.
private let fftwPlannerLock = NSLock()

/// Runs FFTW planner calls (plan creation or destruction) under the lock.
func withFFTWPlanner<R>(_ body: () -> R) -> R {
    fftwPlannerLock.lock()
    defer { fftwPlannerLock.unlock() }
    return body()
}

/// The log-mel spectrogram of MODEL-SPEC section 2, on FFTW (single
/// precision). Create one per configuration and reuse it: the FFT plan and
/// filter bank are made once; `compute` may be called from several threads.
public final class MelSpectrogram: @unchecked Sendable {
    public let config: MelConfig
    /// `[nMels, nBins]` row-major.
    public let filterBank: [Float]
    /// For each mel band, the bins where its triangle is non-zero: the filter
    /// bank is ~98% zeros, so applying it band by band over these ranges
    /// does 1/50 of the dense product's work.
    let bandRanges: [Range<Int>]
    /// Periodic Hann window of `winLength`, zero-padded (centred) to `nFFT`.
    public let window: [Float]
    /// Batched real-to-complex plan over `framesPerPlan` frames for
    /// `magnitude` (the STFT of the MR-STFT distances and of the dense twin),
    /// chosen by FFTW_MEASURE (timed candidates: 20% faster than
    /// FFTW_ESTIMATE here). Made on first use, under the planner lock:
    /// `compute` does not need it, and measuring it costs `waveflow mel` and
    /// every training start about 0.1 s.
    private var batchPlanStorage: fftwf_plan?
    private var batchPlan: fftwf_plan {
        withFFTWPlanner {
            if let plan = batchPlanStorage { return plan }
            let howMany = MelSpectrogram.framesPerPlan
            let input = fftwf_alloc_real(howMany * config.nFFT)!
            let output = fftwf_alloc_complex(howMany * config.nBins)!
            defer { fftwf_free(input); fftwf_free(output) }
            var n = Int32(config.nFFT)
            // Frame-major output (frame i's bins at i * nBins): a bin-major
            // layout straight from FFTW measured 1.6x slower (1.44 vs 0.89 us/frame).
            let plan = fftwf_plan_many_dft_r2c(1, &n, Int32(howMany), input, nil, 1, Int32(config.nFFT),
                                               output, nil, 1, Int32(config.nBins), UInt32(FFTW_ESTIMATE))!
            batchPlanStorage = plan
            return plan
        }
    }
    /// The fused pipeline's transform: the real FFT of n_fft = 2M points
    /// done as a complex FFT of M points, z[n] = x[2n] + i x[2n+1] (the frame
    /// buffer read as interleaved complex numbers), followed by
    /// X[k] = E[k] + e^{-2 pi i k / N} O[k] with E = (Z[k] + conj Z[M-k]) / 2,
    /// O = (Z[k] - conj Z[M-k]) / 2i. FFTW's complex codelets are far better
    /// vectorised than its real ones: 0.30 against 0.89 us per frame here
    /// (and 0.93 for the same FFT on FFTW's split format with stride 2).
    /// Errors stay proportional to the frame's own size (pairing two frames
    /// in one complex FFT would mix a loud neighbour's rounding into a quiet
    /// frame).
    private let halfPlan: fftwf_plan
    /// Per frame, Z (interleaved complex) starts `zOffset` complex values into
    /// a region of zStride; the margins hold Z[M] = Z[0] and the
    /// out-of-range reads of the 16-bin blocks.
    let zStride: Int, zOffset = 16
    /// cos and -sin of 2 pi k / N for k < 16 * ceil(nBins / 16).
    let twiddleCos: OwnedBuffer<Float>, twiddleSin: OwnedBuffer<Float>
    /// `window` and `filterBank` for the fused pipeline's loops.
    let windowValues: OwnedBuffer<Float>, filterBankValues: OwnedBuffer<Float>
    /// The fused pipeline's FFT (see `halfPlan`).
    var fusedPlan: fftwf_plan { halfPlan }
    /// Frames per FFTW call and per step of the fused pipeline (a multiple of 16).
    static let framesPerPlan = 32

    /// The floor applied before the logarithm.
    public static let logFloor: Float = 1e-5

    public init(config: MelConfig = MelConfig()) throws {
        try config.validate()
        self.config = config
        filterBank = MelScale.filterBank(config)
        let fb = filterBank, nb = config.nBins
        bandRanges = (0..<config.nMels).map { m in
            let row = fb[m * nb ..< (m + 1) * nb]
            guard let lo = row.firstIndex(where: { $0 != 0 }), let hi = row.lastIndex(where: { $0 != 0 }) else { return 0..<0 }
            return (lo - m * nb) ..< (hi - m * nb + 1)
        }
        var w = [Float](repeating: 0, count: config.nFFT)
        let offset = (config.nFFT - config.winLength) / 2
        for n in 0..<config.winLength {
            // Periodic Hann (scipy.signal.get_window("hann", N, fftbins=True)).
            w[offset + n] = Float(0.5 - 0.5 * cos(2 * Double.pi * Double(n) / Double(config.winLength)))
        }
        window = w
        let howMany = MelSpectrogram.framesPerPlan
        let half = config.nFFT / 2, zs = half + 32
        zStride = zs
        // The 16-bin blocks read up to 15 values before Z[0] and 16 after Z[M-1].
        precondition(zOffset >= 16 && zs >= zOffset + half + 16)
        let kPadded = (config.nBins + 15) / 16 * 16
        let cosines = (0..<kPadded).map { Float(cos(2 * Double.pi * Double($0) / Double(config.nFFT))) }
        let sines = (0..<kPadded).map { Float(-sin(2 * Double.pi * Double($0) / Double(config.nFFT))) }
        twiddleCos = OwnedBuffer(copying: cosines, count: kPadded)
        twiddleSin = OwnedBuffer(copying: sines, count: kPadded)
        windowValues = OwnedBuffer(copying: w, count: w.count)
        filterBankValues = OwnedBuffer(copying: fb, count: fb.count)
        let halfIn = fftwf_alloc_real(howMany * config.nFFT)!
        let halfOut = fftwf_alloc_complex(howMany * zs)!
        defer { fftwf_free(halfIn); fftwf_free(halfOut) }
        var m = Int32(half)
        let zo = zOffset
        halfPlan = withFFTWPlanner {
            halfIn.withMemoryRebound(to: fftwf_complex.self, capacity: howMany * half) { zin in
                fftwf_plan_many_dft(1, &m, Int32(howMany), zin, nil, 1, Int32(half),
                                    halfOut + zo, nil, 1, Int32(zs), FFTW_FORWARD, UInt32(FFTW_ESTIMATE))!
            }
        }
    }

    deinit {
        withFFTWPlanner {
            fftwf_destroy_plan(halfPlan)
            if let plan = batchPlanStorage { fftwf_destroy_plan(plan) }
        }
    }

    /// Reflect-pads `x` by `pad` on both sides (NumPy's "reflect": the edge
    /// sample is not repeated). Requires `x.count > pad`.
    static func reflectPad(_ x: [Float], _ pad: Int) -> [Float] {
        let n = x.count
        var out = [Float](repeating: 0, count: n + 2 * pad)
        for i in 0..<pad { out[pad - 1 - i] = x[i + 1] }
        for i in 0..<n { out[pad + i] = x[i] }
        for i in 0..<pad { out[pad + n + i] = x[n - 2 - i] }
        return out
    }

    /// |STFT| of `samples`, `[frames, nBins]` row-major (frame f centred on
    /// sample f*hop). Frames are computed in parallel on `Threads.count`.
    public func magnitude(_ samples: [Float]) throws -> (frames: Int, values: [Float]) {
        let c = config
        guard samples.count > c.nFFT / 2 else {
            throw WaveFlowError("audio too short: \(samples.count) samples, need more than \(c.nFFT / 2) for the reflect padding")
        }
        let padded = MelSpectrogram.reflectPad(samples, c.nFFT / 2)
        let frames = c.frames(forSamples: samples.count)
        let nBins = c.nBins
        var mag = [Float](repeating: 0, count: frames * nBins)
        let chunk = MelSpectrogram.framesPerPlan
        let chunks = (frames + chunk - 1) / chunk
        let plan = batchPlan
        padded.withUnsafeBufferPointer { src in
            mag.withUnsafeMutableBufferPointer { dst in
                let dstBase = dst.baseAddress!
                window.withUnsafeBufferPointer { wp in
                    let win = wp.baseAddress!
                    Threads.parallelFor(chunks) { ci in
                        // One batched transform of `chunk` windowed frames
                        // (FFTW vectorises across the transforms).
                        let input = fftwf_alloc_real(chunk * c.nFFT)!
                        let output = fftwf_alloc_complex(chunk * nBins)!
                        defer { fftwf_free(input); fftwf_free(output) }
                        let f0 = ci * chunk, f1 = min(frames, f0 + chunk)
                        for f in f0 ..< f0 + chunk {
                            let frame = input + (f - f0) * c.nFFT
                            if f >= f1 { frame.update(repeating: 0, count: c.nFFT); continue }
                            let s = src.baseAddress! + f * c.hopLength
                            for n in 0..<c.nFFT { frame[n] = s[n] * win[n] }
                        }
                        fftwf_execute_dft_r2c(plan, input, output)
                        let spectrum = UnsafeMutableRawPointer(output).assumingMemoryBound(to: Float.self)
                        for f in f0..<f1 {
                            let row = dstBase + f * nBins, bins = spectrum + 2 * (f - f0) * nBins
                            for k in 0..<nBins {
                                let re = bins[2 * k], im = bins[2 * k + 1]
                                row[k] = (re * re + im * im).squareRoot()
                            }
                        }
                    }
                }
            }
        }
        return (frames, mag)
    }

    /// The log-mel spectrogram `[nMels, frames]`, row-major:
    /// log(max(filterBank x |STFT|, 1e-5)).
    ///
    /// Fused, 32 frames at a time (in parallel on `Threads.count`): window,
    /// one batched FFT, magnitudes stored bin-major [nBins, 32] so that each
    /// band's weighted sum over its non-zero bins is a SIMD sum over the 32
    /// frames, SIMD log, and the [nMels, 32] block copied into place. Nothing
    /// the size of the whole spectrogram is made besides the result.
    /// - Throws: if the audio is too short for the reflect padding.
    public func compute(_ samples: [Float]) throws -> NPYArray {
        let c = config
        guard samples.count > c.nFFT / 2 else {
            throw WaveFlowError("audio too short: \(samples.count) samples, need more than \(c.nFFT / 2) for the reflect padding")
        }
        let frames = c.frames(forSamples: samples.count), chunk = MelSpectrogram.framesPerPlan
        let mel = OwnedBuffer<Float>(repeating: 0, count: c.nMels * frames)
        samples.withUnsafeBufferPointer { src in
            let signal = PaddedFrames(src, config: c)
            Threads.parallelFor((frames + chunk - 1) / chunk) { ci in
                let f0 = ci * chunk, block = MelChunk(self)
                block.window(signal, frames: f0 ..< min(frames, f0 + chunk))
                block.transform()
                block.magnitudes()
                block.logMel()
                block.store(into: mel.pointer, frames: f0 ..< min(frames, f0 + chunk), of: frames)
            }
        }
        return NPYArray(shape: [c.nMels, frames], values: mel.array)
    }

    /// The lanes of `v` in reverse order.
    /// Built from half swaps down to SIMD2's named lanes, which the compiler
    /// folds into one shuffle (lane subscripts went through the stack: 45%
    /// of the pipeline's time).
    @inline(__always)
    static func reversed(_ v: FastMath.V) -> FastMath.V {
        @inline(__always) func r2(_ v: SIMD2<Float>) -> SIMD2<Float> { SIMD2(v.y, v.x) }
        @inline(__always) func r4(_ v: SIMD4<Float>) -> SIMD4<Float> { SIMD4(lowHalf: r2(v.highHalf), highHalf: r2(v.lowHalf)) }
        @inline(__always) func r8(_ v: SIMD8<Float>) -> SIMD8<Float> { SIMD8(lowHalf: r4(v.highHalf), highHalf: r4(v.lowHalf)) }
        return FastMath.V(lowHalf: r8(v.highHalf), highHalf: r8(v.lowHalf))
    }

    /// Transposes a 16 x 16 matrix held as 16 rows: four perfect unshuffles
    /// of the 256 values (each rotates the 8-bit index right by one bit;
    /// four rotate row and column), each made of even/odd-half shuffles.
    /// `r` and `scratch` hold 16 vectors each; the result is in `r`.
    @inline(__always)
    static func transpose16(_ r: UnsafeMutablePointer<FastMath.V>, _ scratch: UnsafeMutablePointer<FastMath.V>) {
        var (a, b) = (r, scratch)
        for _ in 0..<4 {
            for i in 0..<8 {
                let pair = SIMD32<Float>(lowHalf: a[2 * i], highHalf: a[2 * i + 1])
                b[i] = pair.evenHalf
                b[8 + i] = pair.oddHalf
            }
            swap(&a, &b)
        }
    }

    /// The dense twin of `compute` (the full filter-bank product on BLAS),
    /// kept as the test oracle for the sparse band-by-band product.
    public func computeDense(_ samples: [Float]) throws -> NPYArray {
        let (frames, mag) = try magnitude(samples)
        // [M, F] = [M, nBins] x [F, nBins]^T
        var mel = [Float](repeating: 0, count: config.nMels * frames)
        Float.gemm(transA: false, transB: true, m: config.nMels, n: frames, k: config.nBins,
                   alpha: 1, a: filterBank, lda: config.nBins, b: mag, ldb: config.nBins,
                   beta: 0, c: &mel, ldc: frames)
        for i in mel.indices { mel[i] = log(max(mel[i], MelSpectrogram.logFloor)) }
        return NPYArray(shape: [config.nMels, frames], values: mel)
    }

    /// Reads `path` (resampling to the configured rate) and returns its log-mel.
    public func compute(file path: String) throws -> NPYArray {
        let audio = try AudioFile.read(path, sampleRate: config.sampleRate)
        do { return try compute(audio.samples) } catch let e as WaveFlowError { throw e.at(path) }
    }
}

/// FFTW's version string.
public var fftwVersion: String { String(cString: waveflow_fftwf_version()) }
