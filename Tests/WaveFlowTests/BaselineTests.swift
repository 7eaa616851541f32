import XCTest
@testable import WaveFlow

/// The no-learning vocoders and the distances of `waveflow eval`.
final class BaselineTests: XCTestCase {
    /// On a real clip: Griffin–Lim's copy synthesis is close in log-mel and
    /// at the right level; noise-excited LPC is at about the right level;
    /// the mel bank's pseudo-inverse reproduces the mel it came from.
    func testBaselinesOnRealSpeech() throws {
        let audio = try AudioFile.read(exampleAudio("tank__sv-v-chtel.ogg"), sampleRate: 22050).samples
        let melSpec = try MelSpectrogram()
        let mel = try melSpec.compute(audio)
        let frames = mel.shape[1], cfg = MelConfig()
        // B * pinv(B) * mel = mel wherever clipping at 0 did not act (mel >= its floor).
        let linear = Baselines.melToLinear(logMel: mel, config: cfg)
        let bank = MelScale.filterBank(cfg)
        var worst: Float = 0
        for f in stride(from: 0, to: frames, by: 7) {
            for m in 0..<cfg.nMels {
                var s: Float = 0
                for k in 0..<cfg.nBins { s += bank[m * cfg.nBins + k] * linear[f * cfg.nBins + k] }
                worst = max(worst, abs(log(max(s, 1e-5)) - mel.values[m * frames + f]))
            }
        }
        XCTAssertLessThan(worst, 0.7, "log-mel of the pseudo-inverse magnitude")
        let gl = try Baselines.griffinLim(logMel: mel, config: cfg, iterations: 32, seed: 1)
        XCTAssertEqual(gl.count, frames * 256)
        let glScores = try Evaluator.scores(original: audio, synthesised: gl, mel: melSpec)
        XCTAssertLessThan(glScores.melDistance, 0.3)
        XCTAssertEqual(glScores.rmsRatio, 1, accuracy: 0.25)
        let lpc = Baselines.noiseExcitedLPC(logMel: mel, config: cfg, seed: 1)
        XCTAssertEqual(lpc.count, frames * 256)
        let lpcScores = try Evaluator.scores(original: audio, synthesised: lpc, mel: melSpec)
        XCTAssertEqual(lpcScores.rmsRatio, 1, accuracy: 0.4)
        XCTAssertLessThan(lpcScores.melDistance, 1.5)
        // More structure, lower distance: Griffin-Lim beats noise-excited LPC.
        XCTAssertLessThan(glScores.logSpectralDistance, lpcScores.logSpectralDistance)
        // A signal against itself.
        let same = try Evaluator.scores(original: audio, synthesised: audio, mel: melSpec)
        XCTAssertEqual(same.logSpectralDistance, 0); XCTAssertEqual(same.melDistance, 0); XCTAssertEqual(same.rmsRatio, 1, accuracy: 1e-9)
    }

    /// The PNG writer: known CRC, chunk layout, the zlib trailer of the
    /// stored blocks (a picture larger than one 65535-byte block).
    func testPNGEncoding() {
        XCTAssertEqual(PNG.crc32(Array("IEND".utf8)), 0xAE42_6082)
        let w = 300, h = 100
        let data = [UInt8](PNG.encode(width: w, height: h, rgb: [UInt8](repeating: 7, count: w * h * 3)))
        XCTAssertEqual(Array(data[12..<16]), Array("IHDR".utf8))
        XCTAssertEqual(Array(data.suffix(12)), [0, 0, 0, 0] + Array("IEND".utf8) + [0xAE, 0x42, 0x60, 0x82])
        XCTAssertEqual(Array(data[16..<24]), PNG.bigEndian(UInt32(w)) + PNG.bigEndian(UInt32(h)))
    }
}
