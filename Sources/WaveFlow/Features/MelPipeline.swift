import CFFTW
import Foundation

// The steps of `MelSpectrogram.compute`'s fused pipeline, 32 frames at a
// time: window the frames, one batched half-length complex FFT, magnitudes
// transposed bin-major, each band's weighted sum over its non-zero bins as
// SIMD sums over the 32 frames, SIMD log, the block copied into place.

/// The reflect-padded signal of MODEL-SPEC section 2, read frame by frame
/// without copying it: only frames within n_fft/2 of either end read the
/// padding, from two short padded copies of the ends.
struct PaddedFrames {
    let samples: UnsafeBufferPointer<Float>
    let head: [Float], tail: [Float]
    let edge: Int, pad: Int, hop: Int, nFFT: Int

    init(_ samples: UnsafeBufferPointer<Float>, config c: MelConfig) {
        (self.samples, pad, hop, nFFT) = (samples, c.nFFT / 2, c.hopLength, c.nFFT)
        edge = min(samples.count, c.nFFT + c.hopLength)
        head = MelSpectrogram.reflectPad(Array(samples[0..<edge]), pad)
        tail = MelSpectrogram.reflectPad(Array(samples[(samples.count - edge)...]), pad)
    }

    /// Calls `body` with the n_fft samples of frame f (padded samples
    /// f*hop ..< f*hop + nFFT, i.e. original samples f*hop - pad ..< f*hop + pad).
    func withFrame<R>(_ f: Int, _ body: (UnsafePointer<Float>) -> R) -> R {
        let start = f * hop - pad
        if start >= 0 && start + nFFT <= samples.count { return body(samples.baseAddress! + start) }
        if start < 0 { return head.withUnsafeBufferPointer { body($0.baseAddress! + f * hop) } }
        // tail = pad(samples[count - edge ...]): padded index of original i is i - (count - edge) + pad.
        return tail.withUnsafeBufferPointer { body($0.baseAddress! + (start - (samples.count - edge) + pad)) }
    }
}

/// One block of `MelSpectrogram.framesPerPlan` frames going through the
/// pipeline, with its scratch: the windowed frames, the FFT output (Z per
/// frame at `zOffset` in a region of `zStride`), the magnitudes bin-major
/// [16 ceil(nBins/16), chunk], and the log-mel block [nMels, chunk].
final class MelChunk {
    let spec: MelSpectrogram
    let chunk = MelSpectrogram.framesPerPlan
    let input: UnsafeMutablePointer<Float>, zbuf: UnsafeMutablePointer<fftwf_complex>
    let magT: UnsafeMutablePointer<Float>, block: UnsafeMutablePointer<Float>
    let rows: UnsafeMutablePointer<FastMath.V>
    var nFFT: Int { spec.config.nFFT }
    var half: Int { spec.config.nFFT / 2 }
    var binBlocks: Int { (spec.config.nBins + 15) / 16 }
    /// The FFT output as interleaved Floats.
    var output: UnsafeMutablePointer<Float> { UnsafeMutableRawPointer(zbuf).assumingMemoryBound(to: Float.self) }

    init(_ spec: MelSpectrogram) {
        self.spec = spec
        input = fftwf_alloc_real(chunk * spec.config.nFFT)!
        zbuf = fftwf_alloc_complex(chunk * spec.zStride)!
        magT = .allocate(capacity: (spec.config.nBins + 15) / 16 * 16 * chunk)
        block = .allocate(capacity: spec.config.nMels * chunk)
        rows = .allocate(capacity: 32)
    }

    deinit { fftwf_free(input); fftwf_free(zbuf); magT.deallocate(); block.deallocate(); rows.deallocate() }

    /// The windowed frames fs (zero beyond them, up to `chunk`).
    func window(_ signal: PaddedFrames, frames fs: Range<Int>) {
        let win = spec.windowValues.pointer
        for f in fs.lowerBound ..< fs.lowerBound + chunk {
            let frame = input + (f - fs.lowerBound) * nFFT
            if f >= fs.upperBound { frame.update(repeating: 0, count: nFFT); continue }
            signal.withFrame(f) { s in for n in 0..<nFFT { frame[n] = s[n] * win[n] } }
        }
    }

    /// Z = the complex FFT of each frame read as n_fft/2 complex numbers;
    /// Z[M] = Z[0] stored after it for the magnitudes' reversed reads.
    func transform() {
        input.withMemoryRebound(to: fftwf_complex.self, capacity: chunk * half) {
            fftwf_execute_dft(spec.fusedPlan, $0, zbuf + spec.zOffset)
        }
        for fi in 0 ..< chunk {
            let z = output + 2 * (fi * spec.zStride + spec.zOffset)
            z[2 * half] = z[0]; z[2 * half + 1] = z[1]
        }
    }

    /// |X[k]| of 16 frames x 16 bins at a time from Z (X = E + W^k O),
    /// transposed in registers into magT [bins, chunk] (bins >= nBins hold
    /// junk that no band reads).
    func magnitudes() {
        let (twc, tws, zs, zo) = (spec.twiddleCos.pointer, spec.twiddleSin.pointer, spec.zStride, spec.zOffset)
        for g in 0 ..< chunk / 16 {
            for kb in 0 ..< binBlocks {
                let k0 = 16 * kb
                let tc = UnsafeRawPointer(twc + k0).loadUnaligned(as: FastMath.V.self)
                let ts = UnsafeRawPointer(tws + k0).loadUnaligned(as: FastMath.V.self)
                for fi in 0..<16 {
                    let z = output + 2 * ((16 * g + fi) * zs + zo)
                    let zv = UnsafeRawPointer(z + 2 * k0).loadUnaligned(as: SIMD32<Float>.self)
                    let (zr, zi) = (zv.evenHalf, zv.oddHalf)
                    // Z[M-k] for k = k0 ..< k0+16: indices M-k0-15 ... M-k0, reversed.
                    let wv = UnsafeRawPointer(z + 2 * (half - k0 - 15)).loadUnaligned(as: SIMD32<Float>.self)
                    let wr = MelSpectrogram.reversed(wv.evenHalf), wi = MelSpectrogram.reversed(wv.oddHalf)
                    // 2E = (zr + wr, zi - wi); 2O = (zi + wi, wr - zr).
                    let er = zr + wr, ei = zi - wi, or = zi + wi, oi = wr - zr
                    let xr = er + tc * or - ts * oi, xi = ei + tc * oi + ts * or
                    rows[fi] = 0.5 * (xr * xr + xi * xi).squareRoot()
                }
                MelSpectrogram.transpose16(rows, rows + 16)
                for j in 0..<16 {
                    UnsafeMutableRawPointer(magT + (16 * kb + j) * chunk + 16 * g).storeBytes(of: rows[j], as: FastMath.V.self)
                }
            }
        }
    }

    /// block [nMels, chunk] = log(max(sum over each band's bins of weight x magnitude, floor)).
    func logMel() {
        let (fb, nb) = (spec.filterBankValues.pointer, spec.config.nBins)
        for band in 0 ..< spec.config.nMels {
            let weights = fb + band * nb, range = spec.bandRanges[band]
            for lane in 0 ..< chunk / 16 {
                var acc = FastMath.V(repeating: 0)
                for k in range {
                    acc += weights[k] * UnsafeRawPointer(magT + k * chunk + 16 * lane).loadUnaligned(as: FastMath.V.self)
                }
                UnsafeMutableRawPointer(block + band * chunk + 16 * lane)
                    .storeBytes(of: FastMath.log(FastMath.atLeast(acc, MelSpectrogram.logFloor)), as: FastMath.V.self)
            }
        }
    }

    /// Copies frames fs of the block into mel [nMels, total].
    func store(into mel: UnsafeMutablePointer<Float>, frames fs: Range<Int>, of total: Int) {
        for band in 0 ..< spec.config.nMels {
            (mel + band * total + fs.lowerBound).update(from: block + band * chunk, count: fs.count)
        }
    }
}
