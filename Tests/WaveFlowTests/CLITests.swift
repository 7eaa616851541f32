import Foundation
import XCTest
@testable import WaveFlow

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
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.toolPath)
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
}
