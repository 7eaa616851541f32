import Foundation

/// A progress report for long work. On a terminal it redraws one line on
/// standard error (count, rate, ETA); otherwise it prints a plain log line
/// at most every `logInterval` seconds, and always at the end.
public final class ProgressLine: @unchecked Sendable {
    let label: String
    let total: Int
    let unit: String
    let start = Date()
    let isTerminal = isatty(2) != 0
    let logInterval: Double
    private var lastPrint = Date.distantPast
    private var done = 0
    private let lock = NSLock()

    /// - Parameters:
    ///   - label: what is being done ("mel").
    ///   - total: how many items there are.
    ///   - unit: the items' name, for the rate ("files").
    public init(_ label: String, total: Int, unit: String, logInterval: Double = 10) {
        self.label = label
        self.total = total
        self.unit = unit
        self.logInterval = logInterval
    }

    /// Seconds since the start.
    public var elapsed: Double { Date().timeIntervalSince(start) }

    /// False on the ranks of a training job other than rank 0, so that one
    /// progress line reaches the terminal.
    nonisolated(unsafe) public static var enabled = true

    /// Records `n` more finished items and redraws if it is time to.
    public func advance(by n: Int = 1, note: String = "") {
        guard Self.enabled else { return }
        lock.lock(); defer { lock.unlock() }
        done += n
        let now = Date()
        let interval = isTerminal ? 0.2 : logInterval
        if done < total && now.timeIntervalSince(lastPrint) < interval { return }
        lastPrint = now
        let t = now.timeIntervalSince(start)
        let rate = t > 0 ? Double(done) / t : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        var line = "\(label): \(done)/\(total) \(unit), \(String(format: "%.1f", rate)) \(unit)/s, ETA \(formatDuration(eta))"
        if !note.isEmpty { line += ", \(note)" }
        if isTerminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line + (done >= total ? "\n" : "")).utf8))
        } else {
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }
}

/// "1h02m", "3m05s", "12.3s".
public func formatDuration(_ s: Double) -> String {
    if !s.isFinite { return "?" }
    if s >= 3600 { return String(format: "%dh%02dm", Int(s) / 3600, Int(s) % 3600 / 60) }
    if s >= 60 { return String(format: "%dm%02ds", Int(s) / 60, Int(s) % 60) }
    return String(format: "%.1fs", s)
}

/// Writes a line to standard error.
public func logLine(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
