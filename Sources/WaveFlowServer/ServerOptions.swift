import Foundation

/// How `waveflow serve` runs: address, concurrency, limits, streaming.
public struct ServerOptions: Sendable {
    /// Address to listen on (loopback by default).
    public var host = "127.0.0.1"
    /// Port (0: any free port, reported through `onRunning`).
    public var port = 8000
    /// Syntheses that run at once, each on its own worker thread.
    public var workers = 1
    /// Requests that may wait for a worker; one more is answered 503.
    public var queue = 8
    /// Longest audio a request may ask for, in seconds (413 beyond).
    public var maxSeconds = 60.0
    /// Largest request body in bytes (413 beyond).
    public var maxBodyBytes = 16 << 20
    /// Time limit of one synthesis request, queueing included (504 beyond).
    public var timeoutSeconds = 120.0
    /// Mel frames of the first streamed piece (`stream=1`); later pieces
    /// double, up to 8 times this.
    public var chunkFrames = 64
    /// Mel frames of context either side of a streamed piece.
    public var contextFrames = 64
    /// Seconds a client should wait after a 503 (`Retry-After`).
    public var retryAfterSeconds = 1

    public init() {}

    /// The first problem with these options, if any.
    public func problem() -> String? {
        if workers < 1 { return "--workers must be at least 1" }
        if queue < 0 { return "--queue must be at least 0" }
        if !(maxSeconds > 0) { return "--max-seconds must be positive" }
        if maxBodyBytes < 1024 { return "--max-body must be at least 1024 bytes" }
        if !(timeoutSeconds > 0) { return "--timeout must be positive" }
        if chunkFrames < 1 { return "--chunk-frames must be at least 1" }
        if contextFrames < 0 { return "--context-frames must be at least 0" }
        if port < 0 || port > 65535 { return "--port must be 0 to 65535" }
        return nil
    }
}
