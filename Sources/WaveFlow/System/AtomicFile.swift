import Foundation

/// Writes a file so that readers see either the old file or the complete new
/// one, never a half-written one: the bytes go to a temporary file in the
/// same folder, which is renamed over the target only after it is closed.
public enum AtomicFile {
    /// A temporary path in the same folder as `path` (same file system, so
    /// the final rename is atomic).
    public static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        let name = url.lastPathComponent
        return "\(dir)/.\(name).\(getpid()).\(UInt32.random(in: 0 ... .max)).tmp"
    }

    /// Runs `body` with a temporary path, then renames it to `path`. If
    /// `body` throws, the temporary file is removed and `path` is untouched.
    public static func write(to path: String, _ body: (String) throws -> Void) throws {
        let dir = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw WaveFlowError("output folder does not exist", path: dir)
        }
        let tmp = temporaryPath(for: path)
        do {
            try body(tmp)
        } catch {
            unlink(tmp)
            throw error
        }
        if rename(tmp, path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw WaveFlowError("cannot write: \(reason)", path: path)
        }
    }

    /// Writes `data` atomically to `path`.
    public static func write(_ data: Data, to path: String) throws {
        try write(to: path) { tmp in
            guard FileManager.default.createFile(atPath: tmp, contents: data) else {
                throw WaveFlowError("cannot write: \(String(cString: strerror(errno)))", path: path)
            }
        }
    }
}

/// Makes a folder and its parents; an existing folder is fine.
public func makeDirectory(_ path: String) throws {
    do {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
        throw WaveFlowError("cannot create folder", path: path)
    }
}
