import Foundation
import XCTest
@testable import WaveFlow

/// `Vocoder.synthesiseInChunks` (the streaming replies of `waveflow serve`)
/// and the LPC filter's state carried between pieces.
final class ChunkedSynthesisTests: XCTestCase {
    /// The LPC synthesis filter run piece by piece with its history gives
    /// exactly the samples of one run over the whole excitation.
    func testLPCFilterInPiecesEqualsWhole() throws {
        let front = LPCFront(order: 16, mel: MelConfig())
        var rng = TestRNG(3)
        let frames = 9, hop = MelConfig().hopLength
        let mel = (0..<MelConfig().nMels * frames).map { _ in -4 + rng.uniform(Float(2)) }
        let e = (0..<frames * hop).map { _ in rng.uniform(Float(1)) }
        let env = front.envelope(logMel: mel, frames: frames)
        let whole = front.synthesise(e, envelope: env)
        var history = LPCHistory(order: front.order)
        var pieces = [Float]()
        for (a, b) in [(0, 100), (100, 256), (256, 1000), (1000, frames * hop)] {
            pieces += front.synthesise(Array(e[a..<b]), envelope: env, from: a, history: &history)
        }
        XCTAssertEqual(pieces, whole)
    }

    /// With context covering the mel, chunked synthesis is the whole
    /// synthesis bit for bit (shipped model: WaveFlow with the LPC front),
    /// the denoiser included (its STFT margin); with no context it is not.
    func testChunksWithFullContextEqualWholeSynthesis() throws {
        let vocoder = try Vocoder(checkpoint: VocoderTests.shippedCheckpoint)
        let full = try vocoder.melSpectrogram(file: exampleAudio(VocoderTests.clip))
        let f = 24
        var values: [Float] = []
        for b in 0..<full.shape[0] { values += full.values[b * full.shape[1] ..< b * full.shape[1] + f] }
        let mel = NPYArray(shape: [full.shape[0], f], values: values)
        for denoise: Float in [0, 0.05] {
            let whole = try vocoder.synthesise(mel: mel, sigma: 0.8, seed: 4, denoise: denoise)
            var pieces: [[Float]] = []
            try vocoder.synthesiseInChunks(mel: mel, sigma: 0.8, seed: 4, denoise: denoise, chunkFrames: 10, contextFrames: f) { pieces.append($0) }
            XCTAssertEqual(pieces.flatMap { $0 }, whole, "denoise \(denoise)")
            XCTAssertTrue(pieces.allSatisfy { $0.count % vocoder.hopLength == 0 })
            if denoise == 0 { XCTAssertEqual(pieces.map(\.count), [10, 14].map { $0 * 256 }) }
        }
        let whole = try vocoder.synthesise(mel: mel)
        var blind = [Float](), sizes = [Int]()
        try vocoder.synthesiseInChunks(mel: mel, chunkFrames: 2, contextFrames: 0, maxChunkFrames: 6) { blind += $0; sizes.append($0.count / 256) }
        XCTAssertEqual(sizes, [2, 4, 6, 6, 6])
        XCTAssertEqual(blind.count, whole.count)
        XCTAssertNotEqual(blind, whole)
        // A throwing receiver stops it; bad mels get synthesise's errors.
        struct Stop: Error {}
        var calls = 0
        XCTAssertThrowsError(try vocoder.synthesiseInChunks(mel: mel, chunkFrames: 8, contextFrames: 0) { _ in calls += 1; throw Stop() })
        XCTAssertEqual(calls, 1)
        assertFails(["40 bands"]) {
            try vocoder.synthesiseInChunks(mel: NPYArray(shape: [40, 3], values: [Float](repeating: 0, count: 120)), chunkFrames: 8, contextFrames: 0) { _ in }
        }
    }
}
