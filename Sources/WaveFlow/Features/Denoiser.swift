import CFFTW
import Foundation

/// Removes the faint constant tone a flow vocoder leaves (the WaveGlow
/// denoiser): the model's bias spectrum is estimated once by synthesising a
/// silent mel at sigma 0, and `strength` times it is subtracted from the
/// magnitude of every STFT frame of the output (phase kept, overlap-add).
public final class Denoiser {
    public let nFFT: Int, hop: Int
    /// Mean magnitude per bin of the model's output for silence.
    public let biasSpectrum: [Float]
    let window: [Float]

    /// - Parameters:
    ///   - model: the vocoder whose bias is removed.
    ///   - context: how its synthesis runs (the bias differs a little between fp32 and bf16).
    public init(model: FlowModel<Float>, context: ComputeContext, nFFT: Int = 1024, hop: Int = 256) throws {
        self.nFFT = nFFT
        self.hop = hop
        window = (0..<nFFT).map { Float(0.5 - 0.5 * cos(2 * Double.pi * Double($0) / Double(nFFT))) }
        let frames = 32
        let silent = [Float](repeating: log(MelSpectrogram.logFloor), count: model.config.nMels * frames)
        let bias = model.synthesise(mel: silent, frames: frames, z: [Float](repeating: 0, count: frames * model.config.hopLength),
                                   context: context)
        let spec = try STFT(nFFT: nFFT, hop: hop, window: window).forward(bias)
        var mean = [Float](repeating: 0, count: nFFT / 2 + 1)
        for f in 0..<spec.frames { for k in mean.indices { mean[k] += spec.magnitude(f, k) / Float(spec.frames) } }
        biasSpectrum = mean
    }

    /// `audio` with `strength` x the bias spectrum subtracted (same length).
    public func apply(_ audio: [Float], strength: Float) throws -> [Float] {
        let stft = STFT(nFFT: nFFT, hop: hop, window: window)
        var spec = try stft.forward(audio)
        for f in 0..<spec.frames {
            for k in biasSpectrum.indices {
                let m = spec.magnitude(f, k)
                let scale = m > 0 ? max(m - strength * biasSpectrum[k], 0) / m : 0
                spec.re[f * spec.bins + k] *= scale
                spec.im[f * spec.bins + k] *= scale
            }
        }
        return stft.inverse(spec, length: audio.count)
    }
}

/// A complex STFT (reflect-padded, centred frames) and its overlap-add inverse.
struct STFT {
    let nFFT: Int, hop: Int, window: [Float]

    struct Spectrum {
        var frames: Int, bins: Int
        var re: [Float], im: [Float]
        func magnitude(_ f: Int, _ k: Int) -> Float {
            let (a, b) = (re[f * bins + k], im[f * bins + k])
            return (a * a + b * b).squareRoot()
        }
    }

    func forward(_ x: [Float]) throws -> Spectrum {
        guard x.count > nFFT / 2 else { throw WaveFlowError("audio too short for the denoiser") }
        let padded = MelSpectrogram.reflectPad(x, nFFT / 2)
        let frames = 1 + x.count / hop, bins = nFFT / 2 + 1
        var s = Spectrum(frames: frames, bins: bins, re: [Float](repeating: 0, count: frames * bins),
                         im: [Float](repeating: 0, count: frames * bins))
        let input = fftwf_alloc_real(nFFT)!, output = fftwf_alloc_complex(bins)!
        defer { fftwf_free(input); fftwf_free(output) }
        let plan = withFFTWPlanner { fftwf_plan_dft_r2c_1d(Int32(nFFT), input, output, UInt32(FFTW_ESTIMATE))! }
        defer { withFFTWPlanner { fftwf_destroy_plan(plan) } }
        for f in 0..<frames {
            for n in 0..<nFFT { input[n] = padded[f * hop + n] * window[n] }
            fftwf_execute(plan)
            for k in 0..<bins { s.re[f * bins + k] = output[k].0; s.im[f * bins + k] = output[k].1 }
        }
        return s
    }

    /// Weighted overlap-add inverse (divides by the summed squared window).
    func inverse(_ s: Spectrum, length: Int) -> [Float] {
        let input = fftwf_alloc_complex(s.bins)!, output = fftwf_alloc_real(nFFT)!
        defer { fftwf_free(input); fftwf_free(output) }
        let plan = withFFTWPlanner { fftwf_plan_dft_c2r_1d(Int32(nFFT), input, output, UInt32(FFTW_ESTIMATE))! }
        defer { withFFTWPlanner { fftwf_destroy_plan(plan) } }
        let total = length + nFFT
        var out = [Float](repeating: 0, count: total), norm = [Float](repeating: 0, count: total)
        for f in 0..<s.frames {
            for k in 0..<s.bins { input[k].0 = s.re[f * s.bins + k]; input[k].1 = s.im[f * s.bins + k] }
            fftwf_execute(plan)
            for n in 0..<nFFT where f * hop + n < total {
                out[f * hop + n] += output[n] / Float(nFFT) * window[n]
                norm[f * hop + n] += window[n] * window[n]
            }
        }
        let pad = nFFT / 2
        return (0..<length).map { i in norm[i + pad] > 1e-8 ? out[i + pad] / norm[i + pad] : 0 }
    }
}
