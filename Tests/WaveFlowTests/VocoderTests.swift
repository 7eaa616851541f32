import Foundation
import XCTest
// Not @testable: these tests use only what a library user can reach.
import WaveFlow

/// The public Swift API (`Vocoder`, `Training`) against the command line,
/// and the QuickStart example program.
final class VocoderTests: XCTestCase {
    static var shippedCheckpoint: String { CLITests.repoRoot + "/Checkpoints/shipped/model.safetensors" }
    static var examplePath: String {
        URL(fileURLWithPath: CLITests.toolPath).deletingLastPathComponent().appendingPathComponent("waveflow-example").path
    }
    static let clip = "columns__sl-v-pust.ogg"

    /// Runs the `waveflow` tool with this process's OpenBLAS kernel and
    /// thread count, so that the two compute the same products the same way.
    func tool(_ args: [String]) throws -> CLITests.Result {
        try CLITests.run(executable: CLITests.toolPath, args + ["--threads", "\(Threads.count)"],
                         env: [BLAS.coreVariable: BLAS.coreName])
    }

    /// A short real mel (the first `frames` frames of the clip's), written
    /// to `dir/m.npy`; the Vocoder's mel is checked against `waveflow mel`.
    func shortMel(in dir: String, frames: Int = 48) throws -> NPYArray {
        let vocoder = try Vocoder(checkpoint: Self.shippedCheckpoint)
        let r = try tool(["mel", exampleAudio(Self.clip), dir + "/full.npy"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let full = try vocoder.melSpectrogram(file: exampleAudio(Self.clip))
        let toolMel = try NPY.read(dir + "/full.npy")
        XCTAssertTrue(full == toolMel, "Vocoder.melSpectrogram differs from waveflow mel")
        let f = min(frames, full.shape[1])
        var values: [Float] = []
        for b in 0..<full.shape[0] { values += full.values[b * full.shape[1] ..< b * full.shape[1] + f] }
        let mel = NPYArray(shape: [full.shape[0], f], values: values)
        try NPY.write(mel, to: dir + "/m.npy")
        return mel
    }

    /// The float WAV the tool writes for `args` (after `synth IN OUT`).
    func toolSynth(_ input: String, _ output: String, _ options: [String]) throws -> [Float] {
        let r = try tool(["synth", input, output, "--checkpoint", Self.shippedCheckpoint, "--format", "float"] + options)
        XCTAssertEqual(r.status, 0, r.stderr)
        return try AudioFile.read(output).samples
    }

    func assertIdentical(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        guard a.count == b.count else { return }
        let differ = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
        let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
        XCTAssertEqual(differ, 0, "\(what): \(differ) of \(a.count) samples differ (max |diff| \(worst))", file: file, line: line)
    }

    /// fp32: the same samples as `waveflow synth --precision fp32`, with and
    /// without the denoiser, from an NPYArray, from rows and from the file.
    func testBitIdenticalToToolFP32() throws {
        let dir = temporaryFolder(self)
        let mel = try shortMel(in: dir)
        let vocoder = try Vocoder(checkpoint: Self.shippedCheckpoint)
        XCTAssertEqual(vocoder.sampleRate, 22050)
        XCTAssertEqual(vocoder.bands, 80)
        XCTAssertEqual(vocoder.melConfig, MelConfig())
        do { // the Vocoder's default context: fp32
            let cli = try toolSynth(dir + "/m.npy", dir + "/a.wav", ["--sigma", "0.7", "--seed", "5", "--precision", "fp32"])
            let audio = try vocoder.synthesise(mel: mel, sigma: 0.7, seed: 5)
            XCTAssertEqual(audio.count, mel.shape[1] * 256)
            assertIdentical(audio, cli, "synthesise(mel:) vs waveflow synth")
            assertIdentical(try vocoder.synthesise(melFile: dir + "/m.npy", sigma: 0.7, seed: 5), cli, "synthesise(melFile:)")
            let rows = (0..<mel.shape[0]).map { Array(mel.values[$0 * mel.shape[1] ..< ($0 + 1) * mel.shape[1]]) }
            assertIdentical(try vocoder.synthesise(mel: rows, sigma: 0.7, seed: 5), cli, "synthesise(mel: rows)")
            // [frames, n_mels] with transpose.
            assertIdentical(try vocoder.synthesise(mel: mel.transposed(), transpose: true, sigma: 0.7, seed: 5), cli, "transpose")

            let cliDenoised = try toolSynth(dir + "/m.npy", dir + "/d.wav", ["--sigma", "0.7", "--seed", "5", "--denoise", "0.05", "--precision", "fp32"])
            assertIdentical(try vocoder.synthesise(mel: mel, sigma: 0.7, seed: 5, denoise: 0.05), cliDenoised, "denoise 0.05")

            // The defaults are the tool's (sigma 0.9, seed 0, no denoiser).
            let cliDefaults = try toolSynth(dir + "/m.npy", dir + "/0.wav", ["--precision", "fp32"])
            assertIdentical(try vocoder.synthesise(mel: mel), cliDefaults, "defaults")

            // write() gives the tool's file: 16-bit PCM samples equal after reading back.
            _ = try tool(["synth", dir + "/m.npy", dir + "/pcm.wav", "--checkpoint", Self.shippedCheckpoint, "--precision", "fp32"])
            try vocoder.write(cliDefaults, to: dir + "/mine.wav")
            XCTAssertEqual(try AudioFile.read(dir + "/mine.wav").samples, try AudioFile.read(dir + "/pcm.wav").samples)
            assertFails(["a folder"]) { try vocoder.write(cliDefaults, to: dir) }
        }
    }

    /// In the tool's default precision (`auto`): bit-identical to
    /// `waveflow synth` without --precision (bf16 where it is available).
    func testBitIdenticalToToolDefaultPrecision() throws {
        let dir = temporaryFolder(self)
        let mel = try shortMel(in: dir)
        let vocoder = try Vocoder(checkpoint: Self.shippedCheckpoint, context: ComputeContext(precision: .automatic))
        do {
            let cli = try toolSynth(dir + "/m.npy", dir + "/a.wav", ["--seed", "2", "--denoise", "0.02"])
            assertIdentical(try vocoder.synthesise(mel: mel, seed: 2, denoise: 0.02), cli, "auto (\(Precision.automatic))")
        }
    }

    /// A bad mel is refused with the tool's message: from a file the whole
    /// line (naming the file), from an array the same message.
    func testBadMelsGiveTheToolsErrors() throws {
        let dir = temporaryFolder(self)
        let vocoder = try Vocoder(checkpoint: Self.shippedCheckpoint)
        var nan = [Float](repeating: -5, count: 80 * 5); nan[7] = .nan
        var inf = [Float](repeating: -5, count: 80 * 5); inf[399] = -.infinity
        let cases: [(String, NPYArray, [String], String)] = [
            ("m40.npy", NPYArray(shape: [40, 5], values: [Float](repeating: 0, count: 200)), [], "40 bands"),
            ("rows.npy", NPYArray(shape: [5, 80], values: [Float](repeating: 0, count: 400)), [], "use --transpose"),
            ("cols.npy", NPYArray(shape: [80, 5], values: [Float](repeating: 0, count: 400)), ["--transpose"], "drop --transpose"),
            ("nan.npy", NPYArray(shape: [80, 5], values: nan), [], "not finite"),
            ("inf.npy", NPYArray(shape: [80, 5], values: inf), [], "frame 4"),
            ("empty.npy", NPYArray(shape: [80, 0], values: []), [], "empty"),
            ("oned.npy", NPYArray(shape: [80], values: [Float](repeating: 0, count: 80)), [], "2-D"),
        ]
        for (name, array, options, words) in cases {
            let path = dir + "/" + name
            try NPY.write(array, to: path)
            let r = try tool(["synth", path, dir + "/never.wav", "--checkpoint", Self.shippedCheckpoint] + options)
            XCTAssertNotEqual(r.status, 0, name)
            XCTAssertTrue(r.stderr.contains(words), r.stderr)
            let transpose = options.contains("--transpose")
            do {
                _ = try vocoder.synthesise(melFile: path, transpose: transpose)
                XCTFail("\(name) accepted")
            } catch let e as WaveFlowError {
                XCTAssertEqual("waveflow: error: \(e.description)\n", r.stderr, name)
                do {
                    _ = try vocoder.synthesise(mel: array, transpose: transpose)
                    XCTFail("\(name) accepted as an array")
                } catch let a as WaveFlowError {
                    XCTAssertEqual(a.message, e.message, name)
                    XCTAssertNil(a.path)
                }
            }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/never.wav"))
        // The same through the rows form; ragged rows and bad options are refused.
        assertFails(["mel array is empty"]) { try vocoder.synthesise(mel: [[Float]]()) }
        assertFails(["mel has 2 bands, the model expects 80"]) { try vocoder.synthesise(mel: [[0, 0], [0, 0]]) }
        assertFails(["mel row 1 has 1 values, row 0 has 2"]) { try vocoder.synthesise(mel: [[0, 0], [0]]) }
        let silent = NPYArray(shape: [80, 4], values: [Float](repeating: -11.5, count: 320))
        assertFails(["sigma must be non-negative"]) { try vocoder.synthesise(mel: silent, sigma: -1) }
        assertFails(["denoise must be non-negative"]) { try vocoder.synthesise(mel: silent, denoise: .nan) }
        assertFails(["missing.npy", "no such file"]) { try vocoder.synthesise(melFile: dir + "/missing.npy") }
        assertFails(["m40.npy"]) { try Vocoder(checkpoint: dir + "/m40.npy") }
    }

    /// Two threads synthesising on one fresh Vocoder at the same time (one
    /// with the denoiser, made on first use) get what sequential calls get.
    func testConcurrentCallsEqualSequentialCalls() throws {
        let dir = temporaryFolder(self)
        let mel = try shortMel(in: dir, frames: 32)
        let vocoder = try Vocoder(checkpoint: Self.shippedCheckpoint)
        let jobs: [(UInt64, Float)] = [(1, 0), (2, 0.05)]
        final class Box: @unchecked Sendable { var audio: [[Float]] = [[], []]; var errors: [String] = [] }
        let box = Box(), lock = NSLock(), start = DispatchSemaphore(value: 0), done = DispatchGroup()
        for (i, (seed, denoise)) in jobs.enumerated() {
            done.enter()
            let t = Thread {
                start.wait()
                do {
                    let a = try vocoder.synthesise(mel: mel, seed: seed, denoise: denoise)
                    lock.lock(); box.audio[i] = a; lock.unlock()
                } catch {
                    lock.lock(); box.errors.append(error.describe()); lock.unlock()
                }
                done.leave()
            }
            t.start()
        }
        start.signal(); start.signal()
        done.wait()
        XCTAssertEqual(box.errors, [])
        for (i, (seed, denoise)) in jobs.enumerated() {
            assertIdentical(box.audio[i], try vocoder.synthesise(mel: mel, seed: seed, denoise: denoise), "concurrent call \(i)")
        }
    }

    /// `Training.train` runs `waveflow train`'s steps; its checkpoint loads
    /// into a Vocoder; a second run into the same folder is refused.
    func testTrainingEntryPoint() throws {
        let dir = temporaryFolder(self)
        var options = TrainOptions()
        options.batch = 2; options.segment = 4096; options.warmup = 1; options.validationSeconds = 1
        let run = dir + "/run"
        let s = try Training.train(corpus: exampleAudio(""), config: "tiny", runFolder: run, steps: 2, options: options,
                                   featureCache: dir + "/cache")
        XCTAssertEqual(s.step, 2)
        XCTAssertFalse(s.stoppedEarly)
        XCTAssertEqual(s.trainingFiles, 19)
        XCTAssertEqual(s.validationFiles, 1)
        XCTAssertTrue(s.skipped.isEmpty)
        XCTAssertTrue(s.bestValidationNLL.isFinite)
        for name in ["latest.safetensors", "best.safetensors", "metrics.jsonl", "validation.txt"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/" + name), name)
        }
        let ck = try Checkpoint.load(s.latestCheckpoint)
        XCTAssertEqual(ck.config, ModelConfig.presets["tiny"]!)
        XCTAssertEqual(ck.configJSON["step"] as? Int, 2)
        XCTAssertNotNil(ck.configJSON["training"])
        let mine = try Vocoder(checkpoint: s.latestCheckpoint)
        XCTAssertEqual(try mine.synthesise(mel: NPYArray(shape: [80, 3], values: [Float](repeating: -4, count: 240))).count, 3 * 256)
        assertFails(["run already exists", run]) {
            try Training.train(corpus: exampleAudio(""), config: "tiny", runFolder: run, steps: 2, options: options)
        }
        assertFails(["no preset or file named 'nope'"]) {
            try Training.train(corpus: exampleAudio(""), config: "nope", runFolder: dir + "/other", steps: 2)
        }
        assertFails(["steps must be positive"]) {
            try Training.train(corpus: exampleAudio(""), config: "tiny", runFolder: dir + "/other", steps: 0)
        }
    }

    /// The QuickStart example (built with the package) runs: it writes the
    /// copy-synthesis WAV of the clip's length and trains 3 steps.
    func testQuickStartExampleRuns() throws {
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: Self.examplePath),
                      "waveflow-example not built at \(Self.examplePath)")
        let dir = temporaryFolder(self) + "/out"
        let started = Date()
        let r = try CLITests.run(executable: Self.examplePath, [dir])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertLessThan(Date().timeIntervalSince(started), 120, "the example should take seconds")
        XCTAssertTrue(r.stdout.contains("trained to step 3"), r.stdout)
        let samples = try AudioFile.read(exampleAudio(Self.clip), sampleRate: 22050).samples.count
        let frames = MelConfig().frames(forSamples: samples)
        for name in ["copy-synthesis.wav", "copy-synthesis-denoised.wav", "tiny-model.wav"] {
            let audio = try AudioFile.read(dir + "/" + name)
            XCTAssertEqual(audio.sampleRate, 22050, name)
            XCTAssertEqual(audio.samples.count, frames * 256, name)
        }
        // Usage errors are refused with the usage line.
        let bad = try CLITests.run(executable: Self.examplePath, ["--bogus"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stdout.contains("usage: waveflow-example"), bad.stdout)
    }
}
