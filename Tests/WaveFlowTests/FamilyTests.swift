import XCTest
@testable import WaveFlow

/// The `family` key, the registry and the model as conditioner + steps + prior.
final class FamilyTests: XCTestCase {
    /// WaveFlow's model is its upsampler and, per flow, a coupling then a
    /// permutation; the steps' offsets cover the arena exactly once.
    func testWaveFlowIsCouplingsAndPermutations() throws {
        let cfg = ModelTests.tinyConfig(flows: 4)
        let model = FlowModel<Float>(config: cfg)
        XCTAssertTrue(model.family == WaveFlowFamily.self)
        XCTAssertTrue(model.conditioner is WaveFlowUpsampler<Float>)
        XCTAssertEqual(model.steps.count, 2 * cfg.nFlows)
        for (i, step) in model.steps.enumerated() {
            if i % 2 == 0 {
                let c = try XCTUnwrap(step as? WaveFlowCoupling<Float>, "step \(i)")
                XCTAssertEqual(c.name, "flows.\(i / 2).")
                XCTAssertEqual(c.rowMap, cfg.rowMaps[i / 2])
            } else {
                let p = try XCTUnwrap(step as? RowPermutation<Float>, "step \(i)")
                XCTAssertEqual(p.permutation, cfg.permutation(i / 2))
            }
        }
        XCTAssertEqual(FlowModel<Float>.tensorShapes(cfg).map(\.0), model.params.views.map(\.name))
        XCTAssertTrue(ModelFamilies.named("waveflow") == WaveFlowFamily.self)
        XCTAssertTrue(ModelFamilies.named("waveglow") == WaveGlowFamily.self)
    }

    /// `family` is written only when it is not the default, and read back.
    func testFamilyKeyRoundTrip() throws {
        var cfg = ModelTests.tinyConfig()
        XCTAssertFalse(cfg.json.contains("family"))
        let decoded = try JSONDecoder().decode(ModelConfig.self, from: Data(#"{"family": "waveflow"}"#.utf8))
        XCTAssertEqual(decoded.family, "waveflow")
        cfg.family = "somethingelse"
        XCTAssertTrue(cfg.json.contains(#""family":"somethingelse""#))
        assertFails(["model family 'somethingelse' is not supported", "'waveflow'"]) { try cfg.validate() }
    }

    /// A checkpoint of an unknown family, or holding a key that changes the
    /// mathematics of a family this build lacks, is refused with a message
    /// naming it; keys no family reads are ignored.
    func testUnknownFamiliesAndForeignKeysAreRefused() throws {
        let dir = temporaryFolder(self)
        let model: FlowModel<Float> = ModelTests.randomModel(ModelTests.tinyConfig(), seed: 2)
        let cases: [(String, [String: Any], [String])] = [
            ("foo", ["family": "foo"], ["foo.safetensors", "model family 'foo' is not supported"]),
            ("early", ["n_early_size": 2], ["early.safetensors", "'n_early_size'", "waveglow"]),
            ("coupling", ["coupling": "affine", "family": "waveflow"], ["'coupling'", "waveglow", "family is waveflow"]),
            ("halves", ["alternate_halves": true], ["'alternate_halves'"]),
        ]
        for (name, extra, words) in cases {
            let path = dir + "/\(name).safetensors"
            try Checkpoint.save(model: model, extra: extra, to: path)
            assertFails(words) { try Checkpoint.load(path) }
        }
        let fine = dir + "/fine.safetensors"
        try Checkpoint.save(model: model, extra: ["step": 12, "corpus": "somewhere", "unheard_of": 1], to: fine)
        XCTAssertEqual(try Checkpoint.load(fine).model.params.values, model.params.values)
        // The same check for a JSON config file given to `train --config`.
        let json = dir + "/glow.json"
        try Data(#"{"channels": 8, "n_early_every": 4}"#.utf8).write(to: URL(fileURLWithPath: json))
        assertFails(["glow.json", "'n_early_every'", "waveglow"]) { try ModelConfig.named(json) }
    }

    /// Every config value is validated before anything is allocated, the
    /// family's own checks included.
    func testFamilyValidation() {
        var cfg = ModelTests.tinyConfig()
        cfg.nGroup = 12
        assertFails(["n_group must be 8, 16, 32, 64 or 128"]) { try cfg.validate() }
        cfg = ModelTests.tinyConfig(); cfg.nFlows = 3
        assertFails(["n_flows must be even"]) { try cfg.validate() }
        cfg = ModelTests.tinyConfig(); cfg.kernelSize = [3, 5]
        assertFails(["kernel_size"]) { try cfg.validate() }
    }

    /// A config file for `train --config` with a key nobody reads (a typo)
    /// is refused, naming the key; the keys a checkpoint records are fine.
    /// (Checkpoints' configs ignore unknown keys: MODEL-SPEC section 10.)
    func testConfigFileRefusesUnknownKeys() throws {
        let dir = temporaryFolder(self)
        let typo = dir + "/typo.json", recorded = dir + "/recorded.json"
        try Data(#"{"channels": 16, "n_flow": 4}"#.utf8).write(to: URL(fileURLWithPath: typo))
        assertFails(["typo.json", "unknown config key 'n_flow'", "n_flows"]) { try ModelConfig.named(typo) }
        try Data(#"{"channels": 16, "step": 950, "corpus": "/c", "validation_nll": -4.3}"#.utf8).write(to: URL(fileURLWithPath: recorded))
        XCTAssertEqual(try ModelConfig.named(recorded).channels, 16)
    }
}
