import Foundation

/// Every failure the engine reports to a user: what went wrong and, where
/// there is one, the file it concerns. `description` is a single line.
public struct WaveFlowError: Error, CustomStringConvertible, Equatable {
    /// The file the problem concerns, if any.
    public var path: String?
    /// What is wrong, in a few words ("truncated: 1000 of 4000 frames").
    public var message: String

    public init(_ message: String, path: String? = nil) {
        self.message = message
        self.path = path
    }

    public var description: String {
        if let path { return "\(path): \(message)" }
        return message
    }

    /// The same error, attributed to `path` unless it already names a file.
    public func at(_ path: String) -> WaveFlowError {
        self.path == nil ? WaveFlowError(message, path: path) : self
    }
}

extension Error {
    /// A one-line description of any error, naming `path` when the error
    /// does not already name a file.
    public func describe(at path: String? = nil) -> String {
        if let e = self as? WaveFlowError {
            if let path { return e.at(path).description }
            return e.description
        }
        let text = (self as NSError).localizedDescription
        if let path { return "\(path): \(text)" }
        return text
    }
}
