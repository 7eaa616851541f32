import Foundation
import XCTest
@testable import WaveFlow

/// `waveflow import` (issue 19): PyTorch WaveGlow checkpoints written by
/// torch.save from a re-creation of the authors' modules
/// (scripts/make-torch-fixtures.py), read without Python.
final class TorchImportTests: XCTestCase {
    /// (file, model whose expected tensors and NLL it must give)
    static let files: [(String, String)] = [
        ("current_wn_zip_module.pt", "current_wn"), ("current_wn_legacy_module.pt", "current_wn"),
        ("current_wn_zip_prefix.pt", "current_wn"), ("current_plain_zip_sd.pt", "current_plain"),
        ("current_plain_legacy_sd.pt", "current_plain"), ("first_wn_zip_module.pt", "first_wn"),
        ("first_wn_legacy_sd.pt", "first_wn"), ("first_plain_zip_sd.pt", "first_plain"),
        ("middle_wn_legacy_module.pt", "middle_wn"), ("additive_plain_zip_sd.pt", "additive_plain"),
        ("half_zip_sd.pt", "half"),
    ]

    static func path(_ name: String) -> String { fixture("torch/" + name) }

    /// Every fixture gives the expected effective tensors (weight norm folded
    /// in Float64: within one Float32 ulp; stored weights: bit for bit) and
    /// scores the NLL the authors' forward gives in torch (Float64 in the
    /// script; read back here as Float32, so the Float64 check is bounded by
    /// that rounding, about 6e-8).
    func testFixturesImportExactly() throws {
        let mel = try NPY.read(Self.path("mel.npy"))
        let audio = try NPY.read(Self.path("audio.npy")).values
        for (file, model) in Self.files {
            let r = try WaveGlowImport.load(path: Self.path(file))
            let expected = try SafeTensors.read(Self.path("\(model)_expected.safetensors")).tensors
            XCTAssertEqual(Set(r.model.params.views.map(\.name)), Set(expected.keys), file)
            var inexact = 0, total = 0
            for v in r.model.params.views {
                guard let e = expected[v.name] else { continue }
                XCTAssertEqual(v.shape, e.shape, "\(file) \(v.name)")
                let got = r.model.params[v.name]
                for (a, b) in zip(got, e.values) {
                    total += 1
                    if a != b { inexact += 1 }
                    XCTAssertLessThanOrEqual(abs(a - b), b.ulp, "\(file) \(v.name)")
                }
            }
            if !model.hasSuffix("_wn") { XCTAssertEqual(inexact, 0, "\(file): stored weights must be copied exactly") }
            XCTAssertLessThan(Double(inexact), 0.01 * Double(total), "\(file): folds off by one ulp")
            XCTAssertEqual(r.config.alternateHalves, model.hasPrefix("first"), file)
            XCTAssertEqual(r.config.coupling, model.hasPrefix("additive") ? "additive" : "affine", file)
            XCTAssertEqual(r.layout, model.hasPrefix("first") ? .first : model.hasPrefix("middle") ? .middle : .current, file)
            XCTAssertEqual([r.config.nFlows, r.config.nGroup, r.config.nEarlyEvery, r.config.nEarlySize, r.config.nLayers,
                            r.config.channels, r.config.nMels, r.config.hopLength], [4, 8, 2, 2, 2, 4, 8, 16], file)

            let refNLL = Double(try NPY.read(Self.path("\(model)_nll.npy")).values[0])
            let s = r.model.forward(audio: audio, mel: mel.values, batch: 1, frames: mel.shape[1], keepCache: false, context: .fp32)
            XCTAssertEqual(Double(s.nll[0]), refNLL, accuracy: 1e-5, "\(file) nll")
            let m64 = FlowModel<Double>(config: r.config)
            m64.params.values = r.model.params.values.map(Double.init)
            let s64 = m64.forward(audio: audio.map(Double.init), mel: mel.values.map(Double.init), batch: 1, frames: mel.shape[1],
                                  keepCache: false, context: .fp32)
            XCTAssertEqual(s64.nll[0], refNLL, accuracy: 1e-6, "\(file) nll (Float64)")
            print("\(file): nll \(s.nll[0]) (Float64 \(s64.nll[0])), torch \(refNLL); \(inexact) of \(total) values one ulp off")
        }
    }

    /// zip64 structures and the legacy container give the same model as the plain zip;
    /// Checkpoint.load recognises a PyTorch file by its content; options apply.
    func testContainersAndCheckpointLoad() throws {
        let zip = try WaveGlowImport.load(path: Self.path("tiny_zip.pt"))
        for other in ["tiny_zip64.pt", "tiny_legacy.pt"] {
            let r = try WaveGlowImport.load(path: Self.path(other))
            XCTAssertEqual(r.config, zip.config, other)
            XCTAssertEqual(r.model.params.values, zip.model.params.values, other)
        }
        let ck = try Checkpoint.load(Self.path("first_wn_zip_module.pt"))
        XCTAssertEqual(ck.config.family, "waveglow")
        XCTAssertTrue(ck.config.alternateHalves)
        XCTAssertEqual(ck.configJSON["imported_from"] as? String, "first_wn_zip_module.pt")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Self.path("current_plain_legacy_sd.pt")))
        XCTAssertEqual(try Checkpoint.load(data: bytes, name: "x.pt").model.params.values,
                       try WaveGlowImport.load(path: Self.path("current_plain_legacy_sd.pt")).model.params.values)
        var options = WaveGlowImport.Options()
        options.sampleRate = 16000; options.fmax = 7600; options.alternateHalves = false
        let r = try WaveGlowImport.load(path: Self.path("first_plain_zip_sd.pt"), options: options)
        XCTAssertEqual([r.config.sampleRate, Int(r.config.fmax)], [16000, 7600])
        XCTAssertFalse(r.config.alternateHalves)
        XCTAssertTrue(r.summary.joined().contains("alternate_halves false (as given)"), r.summary.joined(separator: "\n"))
    }

    /// Each broken or foreign file: one line naming the file and the problem.
    func testErrors() throws {
        let cases: [(String, [String])] = [
            ("err_tacotron2.pt", ["looks like a Tacotron 2 checkpoint (embedding/encoder/decoder tensors)"]),
            ("err_compressed.pt", ["compressed (method 8, deflate)"]),
            ("err_forbidden_global.pt", ["refused global posix.system", "REDUCE"]),
            ("err_missing_tensor.pt", ["missing tensor 'WN.1.end.bias'"]),
            ("err_shape_mismatch.pt", ["'WN.0.in_layers.1.weight' has shape [4, 2, 5], expected [4, 2, 3]"]),
            ("err_unknown_layout.pt", ["unknown WaveGlow layout", "neither res_skip_layers nor res_layers/skip_layers"]),
            ("err_plain_pickle.pt", ["not a PyTorch file"]),
        ]
        for (file, words) in cases {
            assertFails([file] + words) { try WaveGlowImport.load(path: Self.path(file)) }
        }
        assertFails(["mel.npy", "not a PyTorch file"]) { try WaveGlowImport.load(path: fixture("waveglow/mel.npy")) }
        assertFails(["nowhere.pt", "no such file"]) { try WaveGlowImport.load(path: "/nonexistent/nowhere.pt") }
        // Truncated copies of both containers.
        let dir = temporaryFolder(self)
        for file in ["tiny_zip.pt", "tiny_legacy.pt"] {
            let data = try Data(contentsOf: URL(fileURLWithPath: Self.path(file)))
            for keep in [data.count / 2, data.count - 30, 100] {
                let cut = dir + "/cut-\(keep)-" + file
                try data.prefix(keep).write(to: URL(fileURLWithPath: cut))
                assertFails([cut, "truncated"]) { try WaveGlowImport.load(path: cut) }
            }
        }
        // A damaged tensor byte in a zip archive fails its CRC (only when it is read).
        var damaged = try Data(contentsOf: URL(fileURLWithPath: Self.path("tiny_zip.pt")))
        let zipReader = try ZipReader(damaged)
        let entry = zipReader.entries.values.first { $0.name.hasSuffix("/data/0") }!
        damaged[entry.start] ^= 0x55
        assertFails(["d.pt", "damaged (CRC-32"]) { try WaveGlowImport.load(data: damaged, name: "d.pt") }
    }

    /// The pickle machine refuses what it does not implement, by name, and
    /// bounds what it builds.
    func testUnpicklerRefusesAndBounds() throws {
        let arena = PickleArena()
        defer { arena.clear() }
        func run(_ bytes: [UInt8]) throws -> PickleValue { try Unpickler(arena: arena).run(Data(bytes)).value }
        // INST (protocol 0 instantiation) and EXT1 are not implemented.
        assertFails(["INST", "not supported"]) { try run([0x80, 0x02, 0x69] + Array("os\nsystem\n".utf8) + [0x2E]) }
        assertFails(["EXT1"]) { try run([0x80, 0x02, 0x82, 0x01, 0x2E]) }
        assertFails(["torch.storage._load_from_bytes"]) {
            try run([0x80, 0x02, 0x63] + Array("torch.storage\n_load_from_bytes\n".utf8) + [0x43, 0x01, 0x00, 0x85, 0x52, 0x2E])
        }
        assertFails(["truncated"]) { try run([0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x61]) }
        assertFails(["stack underflow"]) { try run([0x80, 0x02, 0x73, 0x2E]) }
        assertFails(["memo entry 7"]) { try run([0x80, 0x02, 0x68, 0x07, 0x2E]) }
        // A class the pickle names is an inert record, its state kept.
        let v = try run([0x80, 0x02, 0x63] + Array("glow\nWaveGlow\n".utf8) + [0x29, 0x81, 0x7D, 0x8C, 0x01, 0x6B, 0x4B, 0x05, 0x73, 0x62, 0x2E])
        guard case .object(let o) = v else { return XCTFail("not a record: \(v.kind)") }
        XCTAssertEqual(o.qualifiedName, "glow.WaveGlow")
        XCTAssertEqual(o.attributes?["k"]?.int, 5)
        // 200,000 nested tuples (one byte each) are built and freed without recursion.
        let nested = try run([0x80, 0x02, 0x4E] + [UInt8](repeating: 0x85, count: 200_000) + [0x2E])
        XCTAssertEqual(nested.items?.count, 1)
        // Big integers (LONG1) beyond Int64 are kept as bytes; small ones sign-extended.
        XCTAssertEqual(try run([0x80, 0x02, 0x8A, 0x02, 0xFF, 0xFF, 0x2E]).int, -1)
        // A tensor whose strides run past its storage is refused when rebuilt.
        let s = TorchStorage(key: "0", dtype: .float32, count: 6)
        XCTAssertThrowsError(try TorchTensor(storage: s, offset: 1, shape: [2, 3], strides: [3, 1]))
        XCTAssertThrowsError(try TorchTensor(storage: s, offset: 0, shape: [1_000_000_000, 2], strides: [0, 1]))
        let t = try TorchTensor(storage: s, offset: 0, shape: [3, 2], strides: [1, 3]) // a transposed view
        s.loader = { Data([Float](arrayLiteral: 0, 1, 2, 3, 4, 5).withUnsafeBytes { Array($0) }) }
        XCTAssertEqual(try t.floats(), [0, 3, 1, 4, 2, 5])
        XCTAssertEqual(([0x3C00, 0xC000, 0x0001, 0x7C00] as [UInt16]).map(halfToFloat), [1, -2, Float(bitPattern: 0x3380_0000), .infinity])
    }

    /// Thousands of mutated copies (byte flips, truncations, inflated lengths)
    /// of fixtures of both containers, and of a module pickle alone: nothing
    /// crashes, every failure is a one-line WaveFlowError. Bounded to ~10 s.
    func testMutationFuzz() throws {
        var rng = TestRNG(19)
        let deadline = Date().addingTimeInterval(10)
        let seeds = try ["tiny_zip.pt", "tiny_legacy.pt", "middle_wn_legacy_module.pt", "first_wn_zip_module.pt"].map {
            [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.path($0))))
        }
        let zipData = try Data(contentsOf: URL(fileURLWithPath: Self.path("first_wn_zip_module.pt")))
        let zr = try ZipReader(zipData)
        let pickle = [UInt8](try zr.contents(zr.entries.values.first { $0.name.hasSuffix("/data.pkl") }!))
        var (runs, accepted, refused) = (0, 0, 0)
        func mutate(_ base: [UInt8]) -> [UInt8] {
            var b = base
            func position() -> Int {
                // Half the time near the structures: the start (pickles, local headers) or the end (zip directory).
                switch rng.next() % 4 {
                case 0: return Int(rng.next() % UInt64(min(b.count, 4096)))
                case 1: return b.count - 1 - Int(rng.next() % UInt64(min(b.count, 2048)))
                default: return Int(rng.next() % UInt64(b.count))
                }
            }
            switch rng.next() % 4 {
            case 0: // flips
                for _ in 0 ..< 1 + Int(rng.next() % 8) { b[position()] = UInt8(truncatingIfNeeded: rng.next()) }
            case 1: // truncation
                b = Array(b.prefix(Int(rng.next() % UInt64(b.count))))
            case 2: // an inflated 4- or 8-byte length
                let p = position(), w = rng.next() % 2 == 0 ? 4 : 8
                let values: [UInt64] = [0xFFFF_FFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF_FFFF_FFFF, 1 << 40, rng.next()]
                let v = values[Int(rng.next() % UInt64(values.count))]
                for i in 0..<w where p + i < b.count { b[p + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
            default: // a byte deleted or duplicated
                let p = position()
                if rng.next() % 2 == 0 { b.remove(at: p) } else { b.insert(b[p], at: p) }
            }
            return b
        }
        while Date() < deadline, runs < 6000 {
            runs += 1
            let pickOnlyPickle = runs % 5 == 0
            let base = pickOnlyPickle ? pickle : seeds[runs % seeds.count]
            let bytes = Data(mutate(base))
            do {
                if pickOnlyPickle {
                    let arena = PickleArena()
                    defer { arena.clear() }
                    let dummy = TorchStorage(key: "x", dtype: .float32, count: 1 << 20)
                    _ = try Unpickler(arena: arena) { _ in .storage(dummy) }.run(bytes)
                } else {
                    _ = try WaveGlowImport.load(data: bytes, name: "m.pt")
                }
                accepted += 1
            } catch let e as WaveFlowError {
                refused += 1
                XCTAssertFalse(e.description.contains("\n"), e.description)
            } catch {
                XCTFail("not a WaveFlowError: \(error)")
            }
        }
        print("mutation fuzz: \(runs) inputs, \(accepted) accepted, \(refused) refused with a WaveFlowError")
        XCTAssertGreaterThan(runs, 500)
    }

    /// `waveflow import` writes a checkpoint equal to the in-memory import,
    /// prints the inferred config, refuses to overwrite its input or a
    /// symbolic link; `synth --checkpoint X.pt` converts in memory.
    func testCommandLine() throws {
        let dir = temporaryFolder(self)
        let tool = CLITests.toolPath
        let input = Self.path("first_wn_zip_module.pt")
        let ok = try CLITests.run(executable: tool, ["import", input, dir + "/wg.safetensors", "--sample-rate", "16000", "--fmax", "7000"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.contains("inferred: n_flows 4, n_group 8, n_early_every 2, n_early_size 2, n_layers 2, channels 4, "
                                         + "n_mels 8, hop 16 (upsample kernel 64), coupling affine, alternate_halves true"), ok.stdout)
        XCTAssertTrue(ok.stdout.contains("first layout"), ok.stdout)
        let written = try Checkpoint.load(dir + "/wg.safetensors")
        var options = WaveGlowImport.Options()
        options.sampleRate = 16000; options.fmax = 7000
        let direct = try WaveGlowImport.load(path: input, options: options)
        XCTAssertEqual(written.config, direct.config)
        XCTAssertEqual(written.model.params.values, direct.model.params.values)
        XCTAssertEqual(written.configJSON["imported_from"] as? String, "first_wn_zip_module.pt")

        // The output may not be the input (however spelled), nor a symbolic link.
        let copy = dir + "/in.pt"
        try FileManager.default.copyItem(atPath: input, toPath: copy)
        let before = try Data(contentsOf: URL(fileURLWithPath: copy))
        let same = try CLITests.run(executable: tool, ["import", copy, dir + "/./in.pt"])
        XCTAssertNotEqual(same.status, 0)
        XCTAssertTrue(same.stderr.contains("output is the input file"), same.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: copy)), before)
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.safetensors", withDestinationPath: dir + "/elsewhere")
        let link = try CLITests.run(executable: tool, ["import", copy, dir + "/link.safetensors"])
        XCTAssertNotEqual(link.status, 0)
        XCTAssertTrue(link.stderr.contains("symbolic link"), link.stderr)
        let bad = try CLITests.run(executable: tool, ["import", Self.path("err_tacotron2.pt"), dir + "/never.safetensors"])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertEqual(bad.stderr.split(separator: "\n").count, 1, bad.stderr)
        XCTAssertTrue(bad.stderr.contains("err_tacotron2.pt") && bad.stderr.contains("Tacotron 2"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/never.safetensors"))

        // synth straight from the .pt: F frames give F * hop samples.
        let synth = try CLITests.run(executable: tool, ["synth", Self.path("mel.npy"), dir + "/out.wav", "--checkpoint", copy,
                                                        "--precision", "fp32"])
        XCTAssertEqual(synth.status, 0, synth.stderr)
        XCTAssertEqual(try AudioFile.read(dir + "/out.wav").samples.count, 8 * 16)
    }
}
