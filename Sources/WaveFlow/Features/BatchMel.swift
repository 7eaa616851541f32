import Foundation

/// One file that a batch job could not process, and why.
public struct FileFailure: Sendable {
    public var path: String
    public var reason: String
}

/// Converts many audio files to `.npy` log-mels, mirroring the folder tree.
public enum BatchMel {
    /// Every audio file below `input` becomes `output/<same relative path>.npy`.
    /// Files are processed in parallel; a failing file is recorded and the
    /// others carry on.
    /// Files whose targets would collide (`a.wav` and `a.flac`) keep their
    /// extension in the name instead: `a.wav.npy`, `a.flac.npy`.
    /// - Returns: how many were written, the failures (empty when all
    ///   succeeded) and the (input, target) pairs renamed to avoid a collision.
    public static func run(input: String, output: String, mel: MelSpectrogram) throws
        -> (done: Int, failures: [FileFailure], renamed: [(String, String)]) {
        let files = try AudioFile.list(in: input)
        guard !files.isEmpty else { throw WaveFlowError("no audio files found", path: input) }
        var targets = files.map { (output as NSString).appendingPathComponent(relativePath(of: $0, under: input, newExtension: "npy")) }
        let counts = Dictionary(targets.map { ($0, 1) }, uniquingKeysWith: +)
        var renamed: [(String, String)] = []
        for i in targets.indices where counts[targets[i]]! > 1 {
            targets[i] = (output as NSString).appendingPathComponent(relativePath(of: files[i], under: input) + ".npy")
            renamed.append((files[i], targets[i]))
        }
        try makeDirectory(output)
        let progress = ProgressLine("mel", total: files.count, unit: "files")
        var failures = [FileFailure?](repeating: nil, count: files.count)
        failures.withUnsafeMutableBufferPointer { fail in
            let failBase = fail.baseAddress!
            Threads.parallelFor(files.count) { i in
                let path = files[i]
                let target = targets[i]
                do {
                    try makeDirectory((target as NSString).deletingLastPathComponent)
                    let m = try mel.compute(file: path)
                    try NPY.write(m, to: target)
                } catch {
                    failBase[i] = FileFailure(path: path, reason: error.describe())
                }
                progress.advance()
            }
        }
        let failed = failures.compactMap { $0 }
        return (files.count - failed.count, failed, renamed)
    }
}
