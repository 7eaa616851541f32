import Foundation
import XCTest
@testable import WaveFlow

final class AudioTests: XCTestCase {
    /// Every format libsndfile reads comes back as the same 440 Hz sine.
    func testReadsEveryFormat() throws {
        let reference = try AudioFile.read(fixture("sine_float.wav"))
        XCTAssertEqual(reference.sampleRate, 22050)
        XCTAssertEqual(reference.samples.count, 5512)
        let peak = reference.samples.map(abs).max()!
        XCTAssertEqual(peak, 0.5, accuracy: 0.01)
        let tolerances: [String: Float] = [
            "sine_pcm16.wav": 1e-4, "sine_pcm24.wav": 1e-4, "sine_pcm32.wav": 1e-4,
            "sine.flac": 1e-4, "sine.aiff": 1e-4, "sine.ogg": 0.05,
        ]
        for (name, tol) in tolerances {
            let a = try AudioFile.read(fixture(name))
            XCTAssertEqual(a.sampleRate, 22050, name)
            XCTAssertEqual(a.samples.count, reference.samples.count, name)
            // sox dithers integer output; Vorbis is lossy.
            let err = zip(a.samples, reference.samples).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(err, tol, name)
        }
        // stereo.wav: the sine on the left, silence on the right -> half the sine.
        let stereo = try AudioFile.read(fixture("stereo.wav"))
        let err = zip(stereo.samples, reference.samples).map { abs($0 - 0.5 * $1) }.max()!
        XCTAssertLessThan(err, 1e-4)
    }

    /// 16-bit PCM reads as value / 32768, and writing inverts reading exactly.
    func testPCM16RoundTripIsExact() throws {
        let dir = temporaryFolder(self)
        let samples: [Float] = [0, 1 / 32768, -1, 0.5, -0.25, 32767 / 32768, 1.5, -3]
        let out = dir + "/x.wav"
        let clipped = try AudioFile.write(Audio(samples: samples, sampleRate: 16000), to: out)
        XCTAssertEqual(clipped, 2)
        let back = try AudioFile.read(out)
        XCTAssertEqual(back.sampleRate, 16000)
        XCTAssertEqual(Array(back.samples[0..<6]), Array(samples[0..<6]))
        XCTAssertEqual(back.samples[6], 32767 / 32768)
        XCTAssertEqual(back.samples[7], -1)
        // Float output stores values as they are.
        try AudioFile.write(Audio(samples: samples, sampleRate: 16000), to: out, format: .float)
        XCTAssertEqual(try AudioFile.read(out).samples, samples)
        // No temporary files are left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["x.wav"])
    }

    /// A 1 kHz sine at 44.1 kHz resampled to 22.05 kHz keeps its frequency
    /// and its level within 0.1 dB.
    func testResamplingKeepsFrequencyAndLevel() throws {
        let a = try AudioFile.read(fixture("sine1k_44100.wav"), sampleRate: 22050)
        XCTAssertEqual(a.sampleRate, 22050)
        XCTAssertEqual(a.samples.count, 22050)
        let mid = Array(a.samples[2000 ..< 20000]) // away from the filter's edges
        let rms = (mid.map { Double($0 * $0) }.reduce(0, +) / Double(mid.count)).squareRoot()
        let levelDB = 20 * log10(rms / (0.5 / 2.0.squareRoot()))
        XCTAssertLessThan(abs(levelDB), 0.1)
        // Frequency: correlate with 1 kHz and 1.05 kHz sinusoids.
        func power(_ f: Double) -> Double {
            var re = 0.0, im = 0.0
            for (i, s) in mid.enumerated() {
                let ph = 2 * Double.pi * f * Double(i) / 22050
                re += Double(s) * cos(ph); im += Double(s) * sin(ph)
            }
            return (re * re + im * im) / Double(mid.count * mid.count)
        }
        XCTAssertGreaterThan(power(1000), 1000 * power(1050))
    }

    /// Our soxr resampling matches librosa's `soxr_hq` on a real clip.
    func testResamplingMatchesLibrosa() throws {
        let pcm = try NPY.read(fixture("clip0_pcm.npy")).values.map { $0 / 32768 }
        let ours = try Resampler.resample(Audio(samples: pcm, sampleRate: 22050), to: 16000).samples
        let ref = try NPY.read(fixture("clip0_resampled16k.npy")).values
        XCTAssertEqual(ours.count, ref.count)
        let err = zip(ours, ref).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(err, 1e-4)
    }

    func testBadAudioGivesClearErrors() {
        assertFails(["missing.wav", "no such file"]) { try AudioFile.read("/nonexistent/missing.wav") }
        assertFails(["not_audio.wav", "not a readable audio file"]) { try AudioFile.read(fixture("not_audio.wav")) }
        assertFails(["empty.wav"]) { try AudioFile.read(fixture("empty.wav")) }
        assertFails(["zero_length.wav", "no samples"]) { try AudioFile.read(fixture("zero_length.wav")) }
        assertFails(["truncated.wav", "truncated"]) { try AudioFile.read(fixture("truncated.wav")) }
    }

    /// A FIFO named .wav is refused at once (opening it would wait for a
    /// writer forever), and so is a header whose sample rate would make
    /// resampling grow the audio thousands of times (found by scripts/probe.sh).
    func testNonRegularFilesAndAbsurdRatesAreRefused() throws {
        let dir = temporaryFolder(self)
        let fifo = dir + "/pipe.wav"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let t0 = Date()
        assertFails(["pipe.wav", "not a regular file", "FIFO"]) { try AudioFile.read(fifo) }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 2)
        for rate in [1, 999, 2_000_000] {
            let path = dir + "/rate\(rate).wav"
            var wav = try Data(contentsOf: URL(fileURLWithPath: fixture("sine_float.wav")))
            withUnsafeBytes(of: UInt32(rate).littleEndian) { wav.replaceSubrange(24 ..< 28, with: $0) }
            try wav.write(to: URL(fileURLWithPath: path))
            assertFails(["rate\(rate).wav", "sample rate \(rate) Hz"]) { try AudioFile.read(path, sampleRate: 22050) }
        }
    }

    /// A cut-off Ogg Vorbis stream, whose length libsndfile reports as
    /// INT64_MAX, is read in bounded chunks: what it holds, no crash.
    func testTruncatedOggReadsWhatItHolds() throws {
        let cut = try AudioFile.read(fixture("truncated.ogg"))
        let whole = try AudioFile.read(exampleAudio("tank__sv-v-chtel.ogg"))
        XCTAssertGreaterThan(cut.samples.count, 0)
        XCTAssertLessThan(cut.samples.count, whole.samples.count)
        XCTAssertEqual(cut.samples, Array(whole.samples[0 ..< cut.samples.count]))
    }

    func testWritingIntoMissingFolderFails() {
        assertFails(["/nonexistent/dir", "does not exist"]) {
            try AudioFile.write(Audio(samples: [0], sampleRate: 8000), to: "/nonexistent/dir/x.wav")
        }
    }
}
