import Foundation
import WaveFlow

/// The bytes of a reply's audio.
enum AudioReply {
    /// The whole reply for `audio`: a WAV written exactly as `waveflow synth`
    /// writes its file (the same `Vocoder.write`, into a private temporary
    /// file read back), or raw little-endian Float32.
    static func encode(_ audio: [Float], format: OutputFormat, vocoder: Vocoder) throws -> Data {
        switch format {
        case .f32:
            return rawFloat32(audio)
        case .pcm16, .float:
            let path = NSTemporaryDirectory() + "waveflow-serve-\(UUID().uuidString).wav"
            defer { try? FileManager.default.removeItem(atPath: path) }
            try vocoder.write(audio, to: path, format: format == .pcm16 ? .pcm16 : .float)
            guard let data = FileManager.default.contents(atPath: path) else {
                throw WaveFlowError("cannot read back the reply's WAV", path: path)
            }
            return data
        }
    }

    /// Raw little-endian Float32 samples.
    static func rawFloat32(_ audio: [Float]) -> Data {
        var d = Data(count: audio.count * 4)
        d.withUnsafeMutableBytes { raw in
            for (i, s) in audio.enumerated() { raw.storeBytes(of: s.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        }
        return d
    }

    /// 16-bit PCM as `waveflow synth` writes it: samples outside [-1, 1]
    /// (and NaN, as 0) clipped, then x * 32768 rounded and saturated.
    static func pcm16(_ audio: [Float]) -> Data {
        var d = Data(count: audio.count * 2)
        d.withUnsafeMutableBytes { raw in
            for (i, x) in audio.enumerated() {
                let s = x.isNaN ? 0 : min(max(x, -1), 1)
                let v = Int16(clamping: Int((s * 32768).rounded()))
                raw.storeBytes(of: UInt16(bitPattern: v).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
            }
        }
        return d
    }

    /// The 44-byte header libsndfile writes for a mono 16-bit PCM WAV of
    /// `samples` samples (RIFF, `fmt ` of 16 bytes, `data`): a streamed
    /// reply sends it first, its length known from frames × hop.
    static func pcm16Header(samples: Int, sampleRate: Int) -> Data {
        var d = Data()
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).littleEndian) { d.append(contentsOf: $0) } }
        func u16(_ v: Int) { withUnsafeBytes(of: UInt16(truncatingIfNeeded: v).littleEndian) { d.append(contentsOf: $0) } }
        let dataBytes = samples * 2
        d.append(contentsOf: Array("RIFF".utf8)); u32(36 + dataBytes)
        d.append(contentsOf: Array("WAVE".utf8))
        d.append(contentsOf: Array("fmt ".utf8)); u32(16)
        u16(1) /* PCM */; u16(1) /* mono */; u32(sampleRate); u32(sampleRate * 2); u16(2); u16(16)
        d.append(contentsOf: Array("data".utf8)); u32(dataBytes)
        return d
    }

    /// The bytes of one streamed piece in `format` (no header).
    static func piece(_ audio: [Float], format: OutputFormat) -> Data {
        format == .f32 ? rawFloat32(audio) : pcm16(audio)
    }
}
