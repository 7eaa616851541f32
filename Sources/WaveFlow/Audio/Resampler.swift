import CSoxr
import Foundation

/// Sample-rate conversion with libsoxr at its high-quality setting (what
/// librosa calls `res_type="soxr_hq"`).
public enum Resampler {
    /// `audio` converted to `rate` Hz. The output holds
    /// ceil(count * rate / audio.sampleRate) samples, as librosa's does.
    public static func resample(_ audio: Audio, to rate: Int) throws -> Audio {
        if rate == audio.sampleRate { return audio }
        guard rate > 0 else { throw WaveFlowError("invalid sample rate \(rate)") }
        let ratio = Double(rate) / Double(audio.sampleRate)
        let outCount = Int((Double(audio.samples.count) * ratio).rounded(.up))
        var out = [Float](repeating: 0, count: outCount)
        var done = 0
        var io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I)
        var quality = soxr_quality_spec(UInt(SOXR_HQ), 0)
        let err: soxr_error_t? = audio.samples.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { output in
                soxr_oneshot(Double(audio.sampleRate), Double(rate), 1,
                             input.baseAddress, input.count, nil,
                             output.baseAddress, output.count, &done,
                             &io, &quality, nil)
            }
        }
        if let err { throw WaveFlowError("resampling failed: \(String(cString: err))") }
        if done < outCount { out.removeLast(outCount - done) }
        return Audio(samples: out, sampleRate: rate)
    }
}

/// libsoxr's version string.
public var soxrVersion: String { String(cString: soxr_version()) }
