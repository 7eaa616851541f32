import XCTest
@testable import WaveFlow

final class InverseTests: XCTestCase {
    /// inverse(forward(x)) = x for every h the tests can afford, with random
    /// weights and a non-zero output layer; the cached inverse equals the naive one.
    func testInverseUndoesForward() {
        for h in [8, 16, 32, 64] {
            var cfg = ModelTests.tinyConfig(h: h, flows: 4, layers: h >= 32 ? 4 : 3)
            cfg.hopLength = max(16, h); cfg.upsampleFactors = [2, cfg.hopLength / 2]
            let model: WaveFlowModel<Float> = ModelTests.randomModel(cfg, seed: UInt64(h))
            let frames = 3, t = frames * cfg.hopLength
            var rng = TestRNG(11)
            let mel: [Float] = rng.array(cfg.nMels * frames)
            let x: [Float] = rng.array(t, scale: 0.5)
            let z = model.forward(audio: x, mel: mel, batch: 1, frames: frames, keepCache: false).z
            let back = model.synthesise(mel: mel, frames: frames, z: z)
            XCTAssertLessThanOrEqual(normRelativeError(back, x), 1e-4, "h=\(h)")
            let naive = model.synthesiseNaive(mel: mel, frames: frames, z: z)
            XCTAssertLessThanOrEqual(normRelativeError(back, naive), 1e-5, "h=\(h) cached vs naive")
        }
    }
}
