import Foundation
import XCTest
@testable import WaveFlow

/// Bad input gets a one-line error and loses nothing (issue: hostile input).
final class HostileInputTests: XCTestCase {
    func run(_ args: [String]) throws -> CLITests.Result { try CLITests.run(executable: CLITests.toolPath, args) }

    /// Sizes read from files are checked before they are multiplied or used.
    func testOverflowingShapesAreRefused() throws {
        func npy(_ shape: String) -> Data {
            var h = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
            while (10 + h.utf8.count + 1) % 64 != 0 { h += " " }
            h += "\n"
            var d = Data([0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(h.utf8.count & 0xFF), UInt8(h.utf8.count >> 8)])
            d.append(Data(h.utf8)); d.append(Data(count: 16))
            return d
        }
        assertFails(["shape"]) { try NPY.decode(npy("(80, 230584300921369395)")) }
        assertFails(["shape"]) { try NPY.decode(npy("(4611686018427387904, 4)")) }
        // Fortran order with no values but a huge dimension: read at once, no spin.
        var fortran = npy("(0, 3841578300896386160)")
        fortran.replaceSubrange(fortran.range(of: Data("False".utf8))!, with: Data("True ".utf8))
        let t0 = Date()
        XCTAssertEqual(try NPY.decode(fortran).shape, [0, 3841578300896386160])
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1)
        let header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,3,3],\"data_offsets\":[0,16]}}"
        var st = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { st.append(contentsOf: $0) }
        st.append(Data(header.utf8)); st.append(Data(count: 16))
        assertFails(["'w'", "shape"]) { try SafeTensors.decode(st) }
        XCTAssertNil(elementCount([Int.max, 2]))
        XCTAssertEqual(elementCount([3, 0, Int.max]), 0)
    }

    /// A checkpoint whose config asks for a million flows or a billion
    /// channels is refused before anything is allocated; one with NaN
    /// weights is refused; a PyTorch file is named as such.
    func testHostileCheckpoints() throws {
        let dir = temporaryFolder(self)
        let m: FlowModel<Float> = ModelTests.randomModel(ModelTests.tinyConfig(), seed: 1)
        for (key, value, words) in [("n_flows", 1_000_000, "n_flows"), ("channels", 1_000_000_000, "channels"),
                                    ("n_mels", 1 << 40, "n_mels")] {
            var object = try JSONSerialization.jsonObject(with: Data(m.config.json.utf8)) as! [String: Any]
            object[key] = value
            let path = dir + "/\(key).safetensors"
            let tensors = m.params.views.map { ($0.name, Tensor(shape: $0.shape, values: Array(m.params.valueBuffer[$0.range]))) }
            let config = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
            try SafeTensors.write(tensors, metadata: ["format": "waveflow", "format_version": "1", "config": config], to: path)
            let t0 = Date()
            assertFails([path, words]) { try Checkpoint.load(path) }
            XCTAssertLessThan(Date().timeIntervalSince(t0), 2)
        }
        // Within the bounds but far larger than the file: refused by the tensor table, unallocated.
        var big = m.config; big.nFlows = 64; big.channels = 1024
        XCTAssertNoThrow(try big.validate())
        let path = dir + "/big.safetensors"
        let tensors = m.params.views.map { ($0.name, Tensor(shape: $0.shape, values: Array(m.params.valueBuffer[$0.range]))) }
        try SafeTensors.write(tensors, metadata: ["format": "waveflow", "format_version": "1", "config": big.json], to: path)
        assertFails([path, "shape"]) { try Checkpoint.load(path) }
        let nanModel: FlowModel<Float> = ModelTests.randomModel(ModelTests.tinyConfig(), seed: 1)
        nanModel.params.values[5] = .nan
        try Checkpoint.save(model: nanModel, to: dir + "/nan.safetensors")
        assertFails(["nan.safetensors", "not finite"]) { try Checkpoint.load(dir + "/nan.safetensors") }
        try Data([0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 0, count: 60)).write(to: URL(fileURLWithPath: dir + "/model.pt"))
        assertFails(["model.pt", "PyTorch"]) { try Checkpoint.load(dir + "/model.pt") }
        try Data([0x80, 0x02, 0x8A, 0x0A] + [UInt8](repeating: 0, count: 60)).write(to: URL(fileURLWithPath: dir + "/legacy.pt"))
        assertFails(["legacy.pt", "legacy pickle"]) { try Checkpoint.load(dir + "/legacy.pt") }
        // A safetensors header of 0x180 bytes starts with the byte 0x80 too (a
        // checkpoint's header length depends on its paths): still read as one.
        var header = [UInt8]("{\"__metadata__\":{}}".utf8)
        header += [UInt8](repeating: 0x20, count: 0x180 - header.count)
        let file = withUnsafeBytes(of: UInt64(0x180).littleEndian) { [UInt8]($0) } + header
        XCTAssertEqual(try SafeTensors.decode(Data(file)).tensors.count, 0)
    }

    /// Outputs never clobber their inputs, symbolic links or devices; a
    /// folder with a.wav and a.flac gets two mel files; NaN noise is refused.
    func testOutputsLoseNothing() throws {
        let dir = temporaryFolder(self)
        let clip = dir + "/a.ogg"
        try FileManager.default.copyItem(atPath: exampleAudio("tank__sv-v-chtel.ogg"), toPath: clip)
        let before = try Data(contentsOf: URL(fileURLWithPath: clip))
        let same = try run(["mel", clip, clip])
        XCTAssertNotEqual(same.status, 0)
        XCTAssertTrue(same.stderr.contains("input"), same.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: clip)), before)
        XCTAssertEqual(try run(["mel", clip, dir + "/m.npy"]).status, 0)
        let melBytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/m.npy"))
        let synthSame = try run(["synth", dir + "/m.npy", dir + "/./m.npy"])
        XCTAssertNotEqual(synthSame.status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/m.npy")), melBytes)
        // A symbolic link and a device as outputs are left as they are.
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.wav", withDestinationPath: dir + "/elsewhere.wav")
        let link = try run(["synth", dir + "/m.npy", dir + "/link.wav"])
        XCTAssertNotEqual(link.status, 0)
        XCTAssertTrue(link.stderr.contains("symbolic link"), link.stderr)
        XCTAssertNotNil(try? FileManager.default.destinationOfSymbolicLink(atPath: dir + "/link.wav"))
        let device = try run(["mel", clip, "/dev/null"])
        XCTAssertNotEqual(device.status, 0)
        XCTAssertTrue(device.stderr.contains("device"), device.stderr)
        var st = stat()
        XCTAssertEqual(stat("/dev/null", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFCHR)
        // NaN in a fixed latent is refused like NaN in a mel.
        let frames = try NPY.read(dir + "/m.npy").shape[1]
        var z = [Float](repeating: 0, count: frames * 256); z[3] = .nan
        try NPY.write(NPYArray(shape: [z.count], values: z), to: dir + "/z.npy")
        let nan = try run(["synth", dir + "/m.npy", dir + "/o.wav", "--noise", dir + "/z.npy"])
        XCTAssertNotEqual(nan.status, 0)
        XCTAssertTrue(nan.stderr.contains("z.npy") && nan.stderr.contains("not finite"), nan.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/o.wav"))
        // Two audio files of one name: two mel files, and the user is told.
        try makeDirectory(dir + "/in")
        try FileManager.default.copyItem(atPath: clip, toPath: dir + "/in/a.ogg")
        try FileManager.default.copyItem(atPath: fixture("sine.flac"), toPath: dir + "/in/a.flac")
        let batch = try run(["mel", dir + "/in", dir + "/out"])
        XCTAssertEqual(batch.status, 0, batch.stderr)
        XCTAssertTrue(batch.stdout.contains("wrote 2 mel files"), batch.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/out/a.ogg.npy"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/out/a.flac.npy"))
        XCTAssertTrue(batch.stderr.contains("shares its name"), batch.stderr)
    }

    /// `waveflow mel` gives the same bytes on every run (FFTW plans chosen by
    /// timing made it differ in the last bits from run to run).
    func testMelIsReproducible() throws {
        let dir = temporaryFolder(self)
        var outputs: [Data] = []
        for i in 0..<4 {
            XCTAssertEqual(try run(["mel", exampleAudio("tank__sv-v-chtel.ogg"), dir + "/\(i).npy", "--threads", i % 2 == 0 ? "2" : "1"]).status, 0)
            outputs.append(try Data(contentsOf: URL(fileURLWithPath: dir + "/\(i).npy")))
        }
        XCTAssertEqual(Set(outputs).count, 1)
    }

    /// Resume refuses what would silently do the wrong thing; --run cannot
    /// leave --checkpoints; leftovers of a killed writer and replayed
    /// metrics rows are cleaned up.
    func testTrainingRefusesAndCleansUp() throws {
        let dir = temporaryFolder(self)
        let base = ["train", exampleAudio(""), "--batch", "2", "--segment", "2048", "--checkpoints", dir, "--threads", "1"]
        XCTAssertEqual(try run(base + ["--config", "tiny", "--run", "r", "--steps", "2", "--checkpoint-every", "1"]).status, 0)
        let other = try run(base + ["--config", "lpc-tiny", "--run", "r", "--resume", "--steps", "3"])
        XCTAssertNotEqual(other.status, 0)
        XCTAssertTrue(other.stderr.contains("differs from the run's model"), other.stderr)
        // (A name of its own, so that nothing else in the temporary folder can be mistaken for the escape.)
        let outside = "escape-\(UUID().uuidString)"
        let escape = try run(base + ["--config", "tiny", "--run", "../" + outside, "--steps", "1"])
        XCTAssertNotEqual(escape.status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: (dir as NSString).deletingLastPathComponent + "/" + outside))
        // An inference-only latest.safetensors cannot be resumed from.
        try makeDirectory(dir + "/inf")
        try Checkpoint.save(model: FlowModel<Float>(config: ModelConfig.presets["tiny"]!), to: dir + "/inf/latest.safetensors")
        let inf = try run(base + ["--run", "inf", "--resume", "--steps", "3"])
        XCTAssertNotEqual(inf.status, 0)
        XCTAssertTrue(inf.stderr.contains("no training state"), inf.stderr)
        // As after kill -9 at step 4 with the last checkpoint at step 2: a
        // temporary file and rows for steps 3-4 are left behind.
        let metrics = dir + "/r/metrics.jsonl"
        try (try String(contentsOfFile: metrics, encoding: .utf8) + "{\"step\":3,\"loss\":1}\n{\"step\":4,\"loss\":1}\n")
            .write(toFile: metrics, atomically: true, encoding: .utf8)
        FileManager.default.createFile(atPath: dir + "/r/.step-0000004.safetensors.123.456.tmp", contents: Data([1]))
        let resumed = try run(base + ["--run", "r", "--resume", "--steps", "4"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        let steps = try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n").compactMap { line -> Int? in
            let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return o?["val_nll"] == nil ? o?["step"] as? Int : nil
        }
        XCTAssertEqual(steps, [1, 2, 3, 4])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/r/.step-0000004.safetensors.123.456.tmp"))
    }
}

/// Long audio is scored in chunks with exact context, so `score` and `eval`
/// stay within bounded memory and still give the whole-utterance NLL.
/// Ctrl-C in the middle of a batch: the process dies of the signal (status
/// 128 + 2 in a shell), every output it leaves is complete and no temporary
/// file stays behind.
final class InterruptTests: XCTestCase {
    func testInterruptedBatchSynthesisLeavesOnlyCompleteFiles() throws {
        let dir = temporaryFolder(self)
        try makeDirectory(dir + "/audio")
        let names = try FileManager.default.contentsOfDirectory(atPath: exampleAudio("")).filter { $0.hasSuffix(".ogg") }.sorted()
        for n in names.prefix(6) { try FileManager.default.copyItem(atPath: exampleAudio(n), toPath: dir + "/audio/" + n) }
        XCTAssertEqual(try CLITests.run(executable: CLITests.toolPath, ["mel", dir + "/audio", dir + "/mels"]).status, 0)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: CLITests.toolPath)
        p.arguments = ["synth", dir + "/mels", dir + "/wavs", "--threads", "1"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Interrupt once the first file is out (or after 60 s at the latest).
        let t0 = Date()
        func written() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/wavs")) ?? []).filter { !$0.hasPrefix(".") } }
        while written().isEmpty && p.isRunning && Date().timeIntervalSince(t0) < 60 { usleep(20_000) }
        usleep(300_000)
        let stillRunning = p.isRunning
        p.interrupt()
        p.waitUntilExit()
        if stillRunning {
            XCTAssertEqual(p.terminationReason, .uncaughtSignal)
            XCTAssertEqual(p.terminationStatus, SIGINT)
        }
        let all = try FileManager.default.contentsOfDirectory(atPath: dir + "/wavs")
        XCTAssertEqual(all.filter { $0.hasPrefix(".") }, [], "temporary files left behind")
        XCTAssertFalse(all.isEmpty)
        for f in all { XCTAssertNoThrow(try AudioFile.read(dir + "/wavs/" + f), f) }
    }

    /// The table the signal handler reads: a registered path is there whole,
    /// NUL-terminated, and gone once unregistered.
    func testTemporaryFileTable() {
        let path = "/tmp/.x.wav.123.456.tmp"
        let slot = TemporaryFiles.register(path)
        XCTAssertNotNil(slot)
        XCTAssertEqual(String(cString: TemporaryFiles.table + slot! * TemporaryFiles.length), path)
        TemporaryFiles.unregister(slot)
        XCTAssertEqual(TemporaryFiles.table[slot! * TemporaryFiles.length], 0)
        XCTAssertNil(TemporaryFiles.register(String(repeating: "a", count: TemporaryFiles.length + 1)))
    }
}

final class ChunkedScoringTests: XCTestCase {
    func testChunkedNLLEqualsWhole() throws {
        for (lpc, glow) in [(0, false), (4, false), (0, true), (4, true)] {
            var cfg = glow ? WaveGlowTests.tinyConfig(flows: 3) : ModelTests.tinyConfig(h: 8, flows: 2, layers: 3)
            cfg.lpcOrder = lpc
            let model: FlowModel<Float> = glow ? WaveGlowTests.randomModel(cfg, seed: 12) : ModelTests.randomModel(cfg, seed: 12)
            var rng = TestRNG(31)
            let frames = 61, t = (frames - 1) * cfg.hopLength + 8 // T' not a multiple of hop
            let mel: [Float] = (0 ..< cfg.nMels * frames).map { _ in rng.uniform(1) - 2 }
            let x: [Float] = rng.array(t, scale: 0.3)
            let input = Scorer.flowInput(samples: x, logMel: mel, frames: frames, model: model)
            let whole = input.nll(first: t, model: model, context: .fp32, chunkSamples: .max)
            for chunk in [16, 48, 160, 400] {
                let chunked = input.nll(first: t, model: model, context: .fp32, chunkSamples: chunk)
                XCTAssertEqual(chunked, whole, accuracy: 1e-5 * abs(whole), "lpc \(lpc), waveglow \(glow), chunk \(chunk)")
            }
        }
    }
}

/// Mistakes on the command line get one clear line and a non-zero exit.
final class CommandLineMessageTests: XCTestCase {
    func run(_ args: [String]) throws -> CLITests.Result { try CLITests.run(executable: CLITests.toolPath, args) }

    func testMessages() throws {
        let typo = try run(["snyth", "a.npy", "b.wav"])
        XCTAssertNotEqual(typo.status, 0)
        XCTAssertTrue(typo.stderr.contains("did you mean 'synth'"), typo.stderr)
        let help = try run(["help", "nosuch"])
        XCTAssertNotEqual(help.status, 0)
        XCTAssertTrue(help.stderr.contains("no command 'nosuch'"), help.stderr)
        XCTAssertEqual(try run(["help", "synth"]).status, 0)
        let sigma = try run(["synth", "a.npy", "b.wav", "--sigma", "-1"])
        XCTAssertNotEqual(sigma.status, 0)
        XCTAssertTrue(sigma.stderr.contains("--sigma must be from 0.0 to 10.0, not -1.0"), sigma.stderr)
        for bad in ["nan", "1e30"] {
            let r = try run(["synth", "a.npy", "b.wav", "--sigma", bad])
            XCTAssertTrue(r.status != 0 && r.stderr.contains("--sigma must be from 0.0 to 10.0"), r.stderr)
        }
        let eval = try run(["eval", "model.safetensors", "a.wav", "--sigma", "-2"])
        XCTAssertTrue(eval.status != 0 && eval.stderr.contains("--sigma must be from 0.0 to 10.0"), eval.stderr)
        let threads = try run(["mel", "a.wav", "b.npy", "--threads", "100000"])
        XCTAssertTrue(threads.status != 0 && threads.stderr.contains("--threads must be from 1 to 4096"), threads.stderr)
        let mel = try run(["mel", exampleAudio("tank__sv-v-chtel.ogg"), "/tmp/m.npy", "--fmax", "20000"])
        XCTAssertNotEqual(mel.status, 0)
        XCTAssertTrue(mel.stderr.contains("fmax 20000") && !mel.stderr.contains("MelConfig("), mel.stderr)
        let dir = temporaryFolder(self)
        FileManager.default.createFile(atPath: dir + "/file", contents: Data([1]))
        let folder = try run(["mel", exampleAudio(""), dir + "/file/sub"])
        XCTAssertNotEqual(folder.status, 0)
        XCTAssertTrue(folder.stderr.contains("cannot create folder: Not a directory"), folder.stderr)
        // A corpus of bad files says why.
        try makeDirectory(dir + "/bad")
        for i in 0..<2 { FileManager.default.createFile(atPath: dir + "/bad/\(i).wav", contents: Data("not audio".utf8)) }
        let train = try run(["train", dir + "/bad", "--config", "tiny", "--checkpoints", dir, "--steps", "1"])
        XCTAssertNotEqual(train.status, 0)
        XCTAssertTrue(train.stderr.contains("no usable training files") && train.stderr.contains("not a readable audio file"), train.stderr)
    }
}
