import Foundation

/// A training run's folder and what is written in it: step checkpoints
/// (`step-NNNNNNN.safetensors`, the newest `keep` kept) with
/// `latest.safetensors` a symbolic link to the newest, `best.safetensors`,
/// the log `metrics.jsonl` and its plot `nll.svg`, and `validation.txt`.
///
/// Only rank 0 of a job writes here. Checkpoints themselves are written by
/// the caller (the `write` closures), which knows the model.
struct RunFolder {
    let path: String

    init(_ path: String) { self.path = path }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
    var latest: String { file("latest.safetensors") }
    var best: String { file("best.safetensors") }
    var metrics: String { file("metrics.jsonl") }
    var plot: String { file("nll.svg") }
    var validationList: String { file("validation.txt") }

    /// Whether the run has a checkpoint to resume from.
    var hasLatest: Bool { FileManager.default.fileExists(atPath: latest) }

    /// The step checkpoints, oldest first.
    func stepFiles() -> [String] {
        listFiles(in: path) { ($0 as NSString).lastPathComponent.hasPrefix("step-") }.sorted()
    }

    // MARK: - Checkpoints

    /// Writes the checkpoint of `step` with `write` (given the path), points
    /// `latest.safetensors` at it, and removes step files beyond the newest
    /// `keep`. A failed write throws; a link or removal that fails is
    /// reported as a warning (the checkpoint itself is on disk).
    func saveStep(_ step: Int, keep: Int, write: (String) throws -> Void) throws -> String {
        try makeDirectory(path)
        let name = String(format: "step-%07d.safetensors", step)
        let target = file(name)
        try write(target)
        pointLatest(at: name)
        for old in stepFiles().dropLast(keep) {
            do { try FileManager.default.removeItem(atPath: old) } catch {
                warn(old, "old checkpoint not removed: \(error.describe())")
            }
        }
        return target
    }

    /// Writes `best.safetensors` with `write` (given the path).
    func saveBest(write: (String) throws -> Void) throws {
        try write(best)
    }

    /// Replaces `latest.safetensors` by a link to `name` atomically: the
    /// link is made under a temporary name and renamed over it.
    private func pointLatest(at name: String) {
        let tmp = AtomicFile.temporaryPath(for: latest)
        do { try FileManager.default.createSymbolicLink(atPath: tmp, withDestinationPath: name) } catch {
            warn(latest, "not pointed at \(name): \(error.describe())")
            return
        }
        if rename(tmp, latest) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            warn(latest, "not pointed at \(name): \(reason)")
        }
    }

    private func warn(_ path: String, _ message: String) {
        logLine("waveflow: warning: \(WaveFlowError(message, path: path).description)")
    }

    // MARK: - Log, plot, validation list

    /// Makes the folder, cleans up after an interrupted run (leftovers,
    /// replayed metrics rows after `step`) and opens `metrics.jsonl` for appending.
    func openMetrics(resumingAt step: Int) throws -> MetricsLog {
        try makeDirectory(path)
        removeLeftovers()
        try dropReplayedMetrics(after: step)
        if !FileManager.default.fileExists(atPath: metrics) { _ = FileManager.default.createFile(atPath: metrics, contents: nil) }
        guard let handle = FileHandle(forWritingAtPath: metrics) else { throw WaveFlowError("cannot write", path: metrics) }
        handle.seekToEndOfFile()
        return MetricsLog(handle)
    }

    /// Removes what an interrupted writer left in the run folder: atomic
    /// writes' temporary files (`.NAME.PID.N.tmp`, Foundation's `.dat.nosync*`).
    func removeLeftovers() {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        for name in names where (name.hasPrefix(".") && name.hasSuffix(".tmp")) || name.hasPrefix(".dat.nosync") {
            try? FileManager.default.removeItem(atPath: file(name))
        }
    }

    /// After a hard stop (kill -9) the steps since the last checkpoint are
    /// trained again on resume: their old rows in metrics.jsonl (step >
    /// `step`) are dropped so that every step appears once.
    func dropReplayedMetrics(after step: Int) throws {
        guard let text = try? String(contentsOfFile: metrics, encoding: .utf8) else { return }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        let kept = lines.filter { line in
            guard let d = line.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: d) as? [String: Any],
                  let s = o["step"] as? Int else { return true }
            return s <= step
        }
        if kept.count < lines.count {
            try AtomicFile.write(Data((kept.joined(separator: "\n") + (kept.isEmpty ? "" : "\n")).utf8), to: metrics)
        }
    }

    /// Redraws `nll.svg` from `metrics.jsonl` (best effort: a plot that
    /// cannot be written is skipped).
    func writePlot() {
        try? TrainingPlot.write(metrics: metrics, to: plot)
    }

    /// Writes `validation.txt`: the validation files' paths, one a line.
    func writeValidationList(_ paths: [String]) throws {
        try makeDirectory(path)
        try AtomicFile.write(Data((paths.joined(separator: "\n") + "\n").utf8), to: validationList)
    }
}

/// `metrics.jsonl` open for appending: one JSON object a line, keys sorted.
final class MetricsLog {
    private let handle: FileHandle

    init(_ handle: FileHandle) { self.handle = handle }

    func append(_ object: [String: Any]) {
        if let d = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
            handle.write(d); handle.write(Data("\n".utf8))
        }
    }

    func close() { handle.closeFile() }
}
