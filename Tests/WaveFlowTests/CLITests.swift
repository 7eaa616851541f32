import Foundation
import XCTest
@testable import WaveFlow
#if arch(x86_64)
import CKernels
#endif

/// Runs the built `waveflow` tool as a user would.
final class CLITests: XCTestCase {
    struct Result { var status: Int32; var stdout: String; var stderr: String }

    static var toolPath: String {
        // The test bundle sits in the same products folder as the tool.
        var dir = URL(fileURLWithPath: Bundle.main.bundlePath)
        for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
            dir = URL(fileURLWithPath: bundle.bundlePath).deletingLastPathComponent()
        }
        return dir.appendingPathComponent("waveflow").path
    }

    func run(_ args: [String], env: [String: String] = [:]) throws -> Result {
        try Self.run(executable: Self.toolPath, args, env: env)
    }

    /// Runs `executable` with `args` (and extra environment), collecting its
    /// exit status and output.
    static func run(executable: String, _ args: [String], env: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        var e = ProcessInfo.processInfo.environment
        for (k, v) in env { e[k] = v }
        p.environment = e
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let r = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                      stderr: String(decoding: r, as: UTF8.self))
    }

    override func setUpWithError() throws {
        // `swift test` builds the tool beside the test bundle; its absence is a failure.
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: Self.toolPath),
                      "waveflow tool not built at \(Self.toolPath)")
    }

    /// `info` reports a kernel chosen for this CPU without any user setting.
    func testInfoReportsChosenKernel() throws {
        let r = try run(["info"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("BLAS core"))
        if ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] == nil,
           let core = BLAS.recommendedCore(for: .current) {
            XCTAssertTrue(r.stdout.contains("BLAS core     \(core)"), r.stdout)
        }
        // A value the user set is kept.
        let user = try run(["info"], env: ["OPENBLAS_CORETYPE": "Haswell"])
        XCTAssertTrue(user.stdout.contains("set by the user"), user.stdout)
    }

    /// `bench` prints one row per preset and phase, whatever the length of
    /// the preset's name (a name of 12 characters, lpc-h128-c32, was cut to
    /// 11 and then left out of multi-preset tables).
    func testBenchPrintsARowForEveryPreset() throws {
        let r = try run(["bench", "--presets", "tiny,lpc-h128-c32", "--phases", "synth", "--seconds", "0.25",
                         "--repeats", "1", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = r.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        for preset in ["tiny", "lpc-h128-c32"] {
            XCTAssertTrue(rows.contains { $0.first == preset && $0.count >= 8 && $0[2] == "synth" && Double($0[3]) != nil },
                          "no row for \(preset) in:\n\(r.stdout)")
        }
        XCTAssertNotEqual(try run(["bench", "--presets", "tiny", "--phases", "fly"]).status, 0)
    }

    /// On a CPU without x86-64-v3 (AVX2, FMA ...) a default build stops
    /// before any of its code runs, with one line saying how to build for
    /// that CPU, instead of dying of SIGILL somewhere (cpu_check.c).
    func testCPUWithoutTheBuildsBaselineGetsAMessage() throws {
        guard let level = VectorKernels.buildRequiredLevel else { throw XCTSkip("this build has no start-up check (WAVEFLOW_MARCH)") }
        let r = try run(["synth", "never.npy", "never.wav"], env: ["WAVEFLOW_TEST_CPU_BASELINE": "old"])
        XCTAssertEqual(r.status, 69)
        XCTAssertEqual(r.stdout, "")
        XCTAssertTrue(r.stderr.hasPrefix("waveflow: error: this CPU lacks AVX2, FMA or another x86-64-v\(level) feature"), r.stderr)
        XCTAssertTrue(r.stderr.contains("WAVEFLOW_MARCH=x86-64-v2 swift build -c release"), r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        XCTAssertTrue(try run(["info"]).stdout.contains("compiled for x86-64-v\(level)"))
    }

    /// The start-up check's reading of the CPU agrees with the kernel's
    /// (/proc/cpuinfo): every x86-64-v3 feature, and v4's AVX-512 set.
    func testBaselineCheckReadsTheCPULikeTheKernel() throws {
        #if arch(x86_64)
        let flags = CPUInfo.current.flags
        let v3 = ["avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "xsave"].allSatisfy(flags.contains)
        let v4 = v3 && ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"].allSatisfy(flags.contains)
        XCTAssertEqual(wf_cpu_has_x86_64_level(3) != 0, v3)
        XCTAssertEqual(wf_cpu_has_x86_64_level(4) != 0, v4)
        #else
        throw XCTSkip("x86-64 only")
        #endif
    }

    /// What a CPU without AVX2 runs: the Swift SIMD kernels (forced here by
    /// WAVEFLOW_KERNELS=swift) vocode the same audio as the C kernels, to
    /// float rounding.
    func testSwiftKernelsSynthesiseTheSameAudio() throws {
        guard CPUInfo.current.hasAVX2 else { throw XCTSkip("no C kernels run on this CPU to compare with") }
        let dir = temporaryFolder(self)
        XCTAssertEqual(try run(["mel", exampleAudio("columns__sl-v-pust.ogg"), dir + "/m.npy"]).status, 0)
        let mel = try NPY.read(dir + "/m.npy")
        let frames = min(mel.shape[1], 40)
        try NPY.write(NPYArray(shape: [mel.shape[0], frames], values: (0..<mel.shape[0]).flatMap { b in
            mel.values[b * mel.shape[1] ..< b * mel.shape[1] + frames] }), to: dir + "/short.npy")
        let args = ["synth", dir + "/short.npy", "--precision", "fp32", "--format", "float", "--threads", "2"]
        // (The C side explicitly so: this suite may itself run under WAVEFLOW_KERNELS=swift.)
        let auto = ["WAVEFLOW_KERNELS": "auto"]
        XCTAssertFalse(try run(["info"], env: auto).stdout.contains("Swift SIMD kernels"))
        let c = try run(args + [dir + "/c.wav"], env: auto)
        XCTAssertEqual(c.status, 0, c.stderr)
        let info = try run(["info"], env: ["WAVEFLOW_KERNELS": "swift"])
        XCTAssertTrue(info.stdout.contains("Swift SIMD kernels"), info.stdout)
        let swift = try run(args + [dir + "/swift.wav"], env: ["WAVEFLOW_KERNELS": "swift"])
        XCTAssertEqual(swift.status, 0, swift.stderr)
        let (a, b) = (try AudioFile.read(dir + "/c.wav").samples, try AudioFile.read(dir + "/swift.wav").samples)
        XCTAssertEqual(a.count, frames * 256)
        XCTAssertEqual(a.count, b.count)
        let peak = a.map(abs).max()!, diff = zip(a, b).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(peak, 0.01)
        XCTAssertLessThanOrEqual(diff, 1e-4 * peak, "Swift kernels' audio differs by \(diff) (peak \(peak))")
    }

    func testMelOfFileAndErrors() throws {
        let dir = temporaryFolder(self)
        let ok = try run(["mel", exampleAudio("tank__sv-v-chtel.ogg"), dir + "/m.npy"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(try NPY.read(dir + "/m.npy").shape[0], 80)

        for (input, words) in [("/nonexistent/a.wav", "no such file"),
                               (fixture("not_audio.wav"), "not a readable audio file"),
                               (fixture("truncated.wav"), "truncated")] {
            let r = try run(["mel", input, dir + "/bad.npy"])
            XCTAssertNotEqual(r.status, 0)
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(input) && r.stderr.contains(words), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad.npy"))
        }
    }

    static var repoRoot: String { URL(fileURLWithPath: exampleAudio("")).deletingLastPathComponent().path }

    /// The README's short form works from the repository with the shipped model.
    func testSynthWithShippedModelAndBadInputs() throws {
        let dir = temporaryFolder(self)
        let mel = try run(["mel", exampleAudio("columns__sl-v-pust.ogg"), dir + "/m.npy"])
        XCTAssertEqual(mel.status, 0, mel.stderr)
        let frames = try NPY.read(dir + "/m.npy").shape[1]
        let r = try run(["synth", dir + "/m.npy", dir + "/out.wav", "--sigma", "0.7"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // The default precision is auto: bf16 where oneDNN runs bf16 here and it pays (`AutoPrecisionChoice`).
        let expected = Precision.automatic.rawValue
        XCTAssertTrue(r.stdout.contains(", \(expected))"), r.stdout)
        let fp32 = try run(["synth", dir + "/m.npy", dir + "/fp32.wav", "--sigma", "0.7", "--precision", "fp32"])
        XCTAssertTrue(fp32.stdout.contains(", fp32)"), fp32.stdout)
        let audio = try AudioFile.read(dir + "/out.wav")
        XCTAssertEqual(audio.samples.count, frames * 256)
        XCTAssertEqual(audio.sampleRate, 22050)
        // A fixed latent reproduces the same audio; --noise of the wrong length is refused.
        try NPY.write(NPYArray(shape: [frames * 256], values: Synthesizer.noise(count: frames * 256, sigma: 0.7, seed: 0)), to: dir + "/z.npy")
        XCTAssertEqual(try run(["synth", dir + "/m.npy", dir + "/out2.wav", "--noise", dir + "/z.npy"]).status, 0)
        XCTAssertTrue(try AudioFile.read(dir + "/out2.wav").samples == audio.samples, "--noise output differs")
        try NPY.write(NPYArray(shape: [7], values: [Float](repeating: 0, count: 7)), to: dir + "/short.npy")
        let badNoise = try run(["synth", dir + "/m.npy", dir + "/never.wav", "--noise", dir + "/short.npy"])
        XCTAssertNotEqual(badNoise.status, 0)
        XCTAssertTrue(badNoise.stderr.contains("short.npy"), badNoise.stderr)

        try NPY.write(NPYArray(shape: [40, 5], values: [Float](repeating: 0, count: 200)), to: dir + "/m40.npy")
        var nan = [Float](repeating: -5, count: 80 * 5); nan[7] = .nan
        try NPY.write(NPYArray(shape: [80, 5], values: nan), to: dir + "/nan.npy")
        try NPY.write(NPYArray(shape: [80, 0], values: []), to: dir + "/empty.npy")
        for (file, words) in [("m40.npy", "40 bands"), ("nan.npy", "not finite"), ("empty.npy", "empty"),
                              ("missing.npy", "no such file")] {
            let b = try run(["synth", dir + "/" + file, dir + "/never.wav"])
            XCTAssertNotEqual(b.status, 0)
            XCTAssertEqual(b.stderr.split(separator: "\n").count, 1, b.stderr)
            XCTAssertTrue(b.stderr.contains(file) && b.stderr.contains(words), b.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/never.wav"))
        let badCk = try run(["synth", dir + "/m.npy", dir + "/never.wav", "--checkpoint", dir + "/m.npy"])
        XCTAssertNotEqual(badCk.status, 0)
        XCTAssertTrue(badCk.stderr.contains("m.npy"), badCk.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/never.wav"))
    }

    /// Ctrl-C during training saves a checkpoint and exits cleanly; --resume continues.
    func testTrainingSurvivesInterruptAndResumes() throws {
        let dir = temporaryFolder(self)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.toolPath)
        p.arguments = ["train", exampleAudio(""), "--config", "tiny", "--steps", "100000", "--batch", "2",
                       "--segment", "2048", "--checkpoints", dir, "--run", "r", "--threads", "1"]
        p.standardError = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let metrics = dir + "/r/metrics.jsonl"
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let lines = (try? String(contentsOfFile: metrics, encoding: .utf8))?.split(separator: "\n").count ?? 0
            if lines >= 3 { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 128 + SIGINT) // interrupted, checkpoint saved: the shell's 130
        let ck = try Checkpoint.load(dir + "/r/latest.safetensors")
        let step = ck.configJSON["step"] as? Int ?? 0
        XCTAssertGreaterThanOrEqual(step, 2)
        let r = try run(["train", exampleAudio(""), "--resume", "--steps", "\(step + 2)", "--checkpoints", dir, "--run", "r", "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("done at step \(step + 2)"), r.stderr)
        // Starting a new run over an existing one is refused.
        let again = try run(["train", exampleAudio(""), "--config", "tiny", "--checkpoints", dir, "--run", "r"])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("--resume"), again.stderr)
    }

    func testScoreWithShippedModel() throws {
        let r = try run(["score", Self.repoRoot + "/Checkpoints/shipped/model.safetensors", exampleAudio("tank__sv-v-chtel.ogg")])
        XCTAssertEqual(r.status, 0, r.stderr)
        let nll = Double(r.stdout.split(separator: "\n")[0].split(separator: "\t")[1])!
        XCTAssertLessThan(nll, 0) // a trained model beats the identity flow's ~0.9 nats/sample
    }
}

/// The LPC front through every command a user runs: train, score, synth
/// (random and fixed latent, denoise), eval with the baselines and a report.
final class LPCFrontCLITests: XCTestCase {
    func run(_ args: [String]) throws -> CLITests.Result { try CLITests.run(executable: CLITests.toolPath, args) }

    func testFrontModelTrainsScoresSynthesisesAndEvaluates() throws {
        let dir = temporaryFolder(self)
        let train = try run(["train", exampleAudio(""), "--config", "lpc-tiny", "--steps", "3", "--batch", "2", "--segment", "2048",
                             "--validate-every", "3", "--checkpoints", dir, "--run", "r", "--threads", "1"])
        XCTAssertEqual(train.status, 0, train.stderr)
        XCTAssertTrue(train.stderr.contains("LPC front of order 16"), train.stderr)
        let ck = dir + "/r/latest.safetensors"
        XCTAssertEqual(try Checkpoint.load(ck).config.lpcOrder, 16)
        // The trainer's validation NLL and `score` agree on what the front adds:
        // the same file scored twice gives the same figure.
        let clip = exampleAudio("tank__sv-v-chtel.ogg")
        let score = try run(["score", ck, clip])
        XCTAssertEqual(score.status, 0, score.stderr)
        let nll = try XCTUnwrap(Double(score.stdout.split(separator: "\n")[0].split(separator: "\t")[1]))
        let model = try Checkpoint.load(ck).model
        let audio = try AudioFile.read(clip, sampleRate: 22050).samples
        XCTAssertEqual(nll, try Scorer.score(samples: audio, model: model, mel: MelSpectrogram(), context: .fp32), accuracy: 1e-4)
        // Synthesis: F frames give F*hop samples, at a level near the original's
        // (the front's envelope carries the level even for an untrained flow).
        let mel = dir + "/m.npy", wav = dir + "/o.wav"
        XCTAssertEqual(try run(["mel", clip, mel]).status, 0)
        let synth = try run(["synth", mel, wav, "--checkpoint", ck, "--denoise", "0.01"])
        XCTAssertEqual(synth.status, 0, synth.stderr)
        let frames = try NPY.read(mel).shape[1]
        let out = try AudioFile.read(wav, sampleRate: 22050).samples
        XCTAssertEqual(out.count, frames * 256)
        func rms(_ v: [Float]) -> Double { (v.reduce(0.0) { $0 + Double($1 * $1) } / Double(v.count)).squareRoot() }
        XCTAssertEqual(rms(out) / rms(audio), 1, accuracy: 0.6)
        // eval prints the model and both baselines, and writes a report.
        let report = dir + "/report"
        let ev = try run(["eval", ck, clip, "--report", report, "--threads", "1"])
        XCTAssertEqual(ev.status, 0, ev.stderr)
        XCTAssertTrue(ev.stdout.contains("noise-excited LPC"), ev.stdout)
        XCTAssertTrue(ev.stdout.contains("Griffin-Lim 32"), ev.stdout)
        let page = try String(contentsOfFile: report + "/report.html", encoding: .utf8)
        XCTAssertTrue(page.contains("000-model.png") && page.contains("000-original.wav"))
        let png = try XCTUnwrap(FileManager.default.contents(atPath: report + "/000-griffin-lim.png"))
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    }
}

final class WaveGlowCLITests: XCTestCase {
    func run(_ args: [String]) throws -> CLITests.Result { try CLITests.run(executable: CLITests.toolPath, args) }

    /// The WaveGlow family through the same commands: train (a preset),
    /// score equal to the library's, synth (fp32 and --noise in the layout of
    /// MODEL-SPEC 12.5, with --denoise), eval, export; `info --config` lists
    /// the sizes of the presets and of the authors' published models.
    func testWaveGlowTrainsScoresSynthesisesAndEvaluates() throws {
        let dir = temporaryFolder(self)
        let train = try run(["train", exampleAudio(""), "--config", "wg-tiny", "--steps", "3", "--batch", "2", "--segment", "2048",
                             "--validate-every", "3", "--checkpoints", dir, "--run", "g", "--threads", "1"])
        XCTAssertEqual(train.status, 0, train.stderr)
        let ck = dir + "/g/latest.safetensors"
        let loaded = try Checkpoint.load(ck)
        XCTAssertEqual(loaded.config.family, "waveglow")
        let clip = exampleAudio("tank__sv-v-chtel.ogg")
        let score = try run(["score", ck, clip])
        XCTAssertEqual(score.status, 0, score.stderr)
        let nll = try XCTUnwrap(Double(score.stdout.split(separator: "\n")[0].split(separator: "\t")[1]))
        let audio = try AudioFile.read(clip, sampleRate: 22050).samples
        XCTAssertEqual(nll, try Scorer.score(samples: audio, model: loaded.model, mel: MelSpectrogram(), context: .fp32), accuracy: 1e-4)

        let mel = dir + "/m.npy", wav = dir + "/o.wav", fixed = dir + "/z.wav", noise = dir + "/z.npy"
        XCTAssertEqual(try run(["mel", clip, mel]).status, 0)
        let synth = try run(["synth", mel, wav, "--checkpoint", ck, "--precision", "fp32", "--denoise", "0.01"])
        XCTAssertEqual(synth.status, 0, synth.stderr)
        let frames = try NPY.read(mel).shape[1]
        XCTAssertEqual(try AudioFile.read(wav, sampleRate: 22050).samples.count, frames * 256)
        // A fixed latent: the same audio as the library's inverse of it.
        var rng = TestRNG(5)
        let z: [Float] = rng.array(frames * 256, scale: 0.5)
        try NPY.write(NPYArray(shape: [frames * 256], values: z), to: noise)
        let fromNoise = try run(["synth", mel, fixed, "--checkpoint", ck, "--precision", "fp32", "--noise", noise, "--format", "float"])
        XCTAssertEqual(fromNoise.status, 0, fromNoise.stderr)
        let expected = loaded.model.synthesise(mel: try NPY.read(mel).values, frames: frames, z: z, context: .fp32)
        XCTAssertLessThan(normRelativeError(try AudioFile.read(fixed, sampleRate: 22050).samples, expected), Tolerance.float32Reordered)

        let ev = try run(["eval", ck, clip, "--threads", "1", "--no-baselines"])
        XCTAssertEqual(ev.status, 0, ev.stderr)
        let export = try run(["export", ck, dir + "/e.safetensors"])
        XCTAssertEqual(export.status, 0, export.stderr)
        XCTAssertEqual(try Checkpoint.load(dir + "/e.safetensors").model.params.values, loaded.model.params.values)

        let info = try run(["info", "--config", "wg-c32,wg-c256,wg-c512"])
        XCTAssertEqual(info.status, 0, info.stderr)
        for count in ["11282408", "87731816", "267999848"] { XCTAssertTrue(info.stdout.contains(count), info.stdout) }
        // The folded synthesis of wg-c32 (0.614 - 0.271 M per sample, 12 x 512 x 32 x 320 floats); wg-c256's is over the limit.
        for line in ["folded        0.343 M per sample in synthesis (--fold); the fold: 252 MB",
                     "folded        not folded (2019 MB, over the 1024 MB limit)"] {
            XCTAssertTrue(info.stdout.contains(line), info.stdout)
        }
    }
}
