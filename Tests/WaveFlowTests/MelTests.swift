import Foundation
import XCTest
@testable import WaveFlow

final class MelTests: XCTestCase {
    static let config16k = MelConfig(sampleRate: 16000, nFFT: 512, hopLength: 128, winLength: 400,
                                     nMels: 40, fmin: 0, fmax: 8000)

    func testFilterBankEqualsLibrosa() throws {
        for (config, name) in [(MelConfig(), "fb_default.npy"), (Self.config16k, "fb_16k.npy")] {
            let ref = try NPY.read(fixture(name))
            XCTAssertEqual(ref.shape, [config.nMels, config.nBins])
            let ours = MelScale.filterBank(config)
            // 1e-6 relative on every weight that is not zero.
            for i in ours.indices {
                XCTAssertEqual(ours[i] == 0, ref.values[i] == 0, "\(name)[\(i)]")
                if ref.values[i] != 0 {
                    XCTAssertLessThanOrEqual(abs(ours[i] - ref.values[i]) / abs(ref.values[i]), 1e-6, "\(name)[\(i)]")
                }
            }
        }
    }

    /// The log-mel agrees with librosa's within 1e-3 on every bin whose
    /// librosa magnitude is at least 1e-3, and within 1e-4 on average.
    func checkAgainstLibrosa(config: MelConfig, suffix: String) throws {
        let mel = try MelSpectrogram(config: config)
        for clip in 0..<3 {
            let pcm = try NPY.read(fixture("clip\(clip)_pcm.npy")).values.map { $0 / 32768 }
            let ref = try NPY.read(fixture("clip\(clip)\(suffix).npy"))
            let ours = try mel.compute(pcm)
            XCTAssertEqual(ours.shape, ref.shape)
            XCTAssertEqual(ours.shape[1], 1 + pcm.count / config.hopLength)
            var worst: Float = 0, sum: Double = 0
            for i in ref.values.indices {
                let r = log(max(ref.values[i], 1e-5))
                let d = abs(ours.values[i] - r)
                sum += Double(d)
                if ref.values[i] >= 1e-3 { worst = max(worst, d) }
            }
            let mean = sum / Double(ref.values.count)
            XCTAssertLessThanOrEqual(worst, 1e-3, "clip \(clip) \(suffix)")
            XCTAssertLessThanOrEqual(mean, 1e-4, "clip \(clip) \(suffix)")
        }
    }

    func testLogMelMatchesLibrosaDefault() throws {
        try checkAgainstLibrosa(config: MelConfig(), suffix: "_mel")
    }

    func testLogMelMatchesLibrosa16k() throws {
        try checkAgainstLibrosa(config: Self.config16k, suffix: "_mel16k")
    }

    /// Single-threaded and parallel extraction give identical results.
    func testThreadCountDoesNotChangeResult() throws {
        let pcm = try NPY.read(fixture("clip1_pcm.npy")).values.map { $0 / 32768 }
        let mel = try MelSpectrogram()
        let saved = Threads.count
        defer { Threads.count = saved }
        Threads.count = 1
        let one = try mel.compute(pcm)
        Threads.count = 2
        let two = try mel.compute(pcm)
        // The FFTs are the same; only the BLAS filter-bank product may round
        // differently with another thread split.
        XCTAssertEqual(two.shape, one.shape)
        XCTAssertLessThan(zip(one.values, two.values).map { abs($0 - $1) }.max()!, 1e-5)
    }

    /// Decoding the committed Ogg clip gives the samples soundfile gave.
    func testReadingTheOggClipMatchesFixture() throws {
        let a = try AudioFile.read(exampleAudio("alibaba__kni-v-ber.ogg"))
        let pcm = try NPY.read(fixture("clip0_pcm.npy")).values.map { $0 / 32768 }
        let err = zip(a.samples, pcm).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(err, 2e-4)
    }

    func testShortAudioIsAnError() throws {
        let mel = try MelSpectrogram()
        assertFails(["too short"]) { try mel.compute([Float](repeating: 0, count: 512)) }
        XCTAssertEqual(try mel.compute([Float](repeating: 0, count: 513)).shape, [80, 3])
    }

    func testBatchMirrorsTreeAndReportsFailures() throws {
        let dir = temporaryFolder(self)
        try FileManager.default.createDirectory(atPath: dir + "/in/sub", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixture("sine_pcm16.wav"), toPath: dir + "/in/sub/a.wav")
        try FileManager.default.copyItem(atPath: fixture("not_audio.wav"), toPath: dir + "/in/b.wav")
        let (done, failures, _) = try BatchMel.run(input: dir + "/in", output: dir + "/out", mel: try MelSpectrogram())
        XCTAssertEqual(done, 1)
        XCTAssertEqual(failures.count, 1)
        XCTAssertTrue(failures[0].reason.contains("b.wav"))
        XCTAssertEqual(try NPY.read(dir + "/out/sub/a.npy").shape, [80, 1 + 5512 / 256])
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/out/b.npy"))
    }
}

final class MelKernelTests: XCTestCase {
    /// The band-by-band (sparse) filter-bank product equals the dense BLAS one.
    func testSparseFilterBankMatchesDense() throws {
        let pcm = try NPY.read(fixture("clip2_pcm.npy")).values.map { $0 / 32768 }
        for config in [MelConfig(), MelTests.config16k] {
            let mel = try MelSpectrogram(config: config)
            let sparse = try mel.compute(pcm), dense = try mel.computeDense(pcm)
            XCTAssertEqual(sparse.shape, dense.shape)
            // The two use different FFT algorithms (half-length complex vs
            // FFTW's real transform), so bins near the 1e-5 floor, where
            // float rounding of the spectrum is relatively large, differ most.
            let pairs = zip(sparse.values, dense.values)
            let loud = pairs.filter { $0.1 >= log(1e-3) }.map { abs($0.0 - $0.1) }.max()!
            let all = pairs.map { abs($0.0 - $0.1) }
            print("fused vs dense: max \(all.max()!) over all bins, \(loud) over bins >= 1e-3, mean \(all.reduce(0, +) / Float(all.count))")
            XCTAssertLessThanOrEqual(loud, 2e-5)
            XCTAssertLessThanOrEqual(all.max()!, 1e-3)
            XCTAssertLessThanOrEqual(all.reduce(0, +) / Float(all.count), 1e-6)
        }
    }

    /// The fused pipeline reads edge frames from padded copies of the ends
    /// only; at every length (shorter than one frame plus a hop, exactly at
    /// the boundaries, not a multiple of the hop) it equals the twin that
    /// pads the whole signal.
    func testEdgeFramesAtEveryLength() throws {
        let mel = try MelSpectrogram()
        var rng = TestRNG(3)
        let base: [Float] = rng.array(6000, scale: 0.5)
        for n in [513, 600, 1024, 1279, 1280, 1281, 1500, 2048, 2049, 4097, 6000] {
            let x = Array(base[0..<n])
            let fused = try mel.compute(x), dense = try mel.computeDense(x)
            XCTAssertEqual(fused.shape, dense.shape, "n=\(n)")
            XCTAssertLessThanOrEqual(zip(fused.values, dense.values).map { abs($0 - $1) }.max()!, 1e-4, "n=\(n)")
        }
    }
}
