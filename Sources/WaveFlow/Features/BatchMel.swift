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
    /// - Returns: the failures (empty when all succeeded).
    public static func run(input: String, output: String, mel: MelSpectrogram) throws -> (done: Int, failures: [FileFailure]) {
        let files = try AudioFile.list(in: input)
        guard !files.isEmpty else { throw WaveFlowError("no audio files found", path: input) }
        try makeDirectory(output)
        let progress = ProgressLine("mel", total: files.count, unit: "files")
        var failures = [FileFailure?](repeating: nil, count: files.count)
        failures.withUnsafeMutableBufferPointer { fail in
            let failBase = fail.baseAddress!
            Threads.parallelFor(files.count) { i in
                let path = files[i]
                let target = (output as NSString).appendingPathComponent(relativePath(of: path, under: input, newExtension: "npy"))
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
        return (files.count - failed.count, failed)
    }
}
