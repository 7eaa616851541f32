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
        try checkReplaceable(path)
        let tmp = temporaryPath(for: path)
        let slot = TemporaryFiles.register(tmp)
        defer { TemporaryFiles.unregister(slot) }
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

    /// Throws unless `path` is absent or a regular file: a symbolic link, a
    /// device, a pipe or a folder is never replaced by a regular file.
    public static func checkReplaceable(_ path: String) throws {
        var st = stat()
        guard lstat(path, &st) == 0 else { return } // absent
        if st.st_mode & S_IFMT == S_IFREG { return }
        throw WaveFlowError("output is \(fileTypeName(st.st_mode)): not replaced (remove it or choose another name)", path: path)
    }

    /// Throws if `output` is the same file as one of `inputs` (same device
    /// and inode, however the paths are spelled): an output never clobbers
    /// its own input.
    public static func checkDistinct(output: String, from inputs: [String]) throws {
        var o = stat()
        guard stat(output, &o) == 0 else { return }
        for input in inputs {
            var i = stat()
            if stat(input, &i) == 0, i.st_dev == o.st_dev, i.st_ino == o.st_ino {
                throw WaveFlowError("output is the input file \(input): not overwritten", path: output)
            }
        }
    }

    /// Writes `data` atomically to `path`.
    public static func write(_ data: Data, to path: String) throws {
        try write(to: path) { tmp in
            // Written in place: the temporary file is already the atomic step
            // (Foundation's own atomic write would add a second, untracked one).
            do {
                try data.write(to: URL(fileURLWithPath: tmp))
            } catch {
                throw WaveFlowError("cannot write: \((error as NSError).localizedDescription)", path: path)
            }
        }
    }
}

/// What a file of `mode` (from `stat`/`lstat`) is, for messages about
/// files that are not regular ones.
func fileTypeName(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFREG: return "a regular file"
    case S_IFLNK: return "a symbolic link"
    case S_IFDIR: return "a folder"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFIFO: return "a FIFO (named pipe)"
    case S_IFSOCK: return "a socket"
    default: return "not a regular file"
    }
}

/// The temporary files `AtomicFile` is writing right now, so that an
/// interrupted process removes them instead of leaving them behind.
///
/// Paths live in a fixed table allocated up front: the signal handler only
/// reads it and calls `unlink`, which is async-signal-safe.
public enum TemporaryFiles {
    static let slots = 64, length = 4096
    nonisolated(unsafe) static let table: UnsafeMutablePointer<CChar> = {
        let p = UnsafeMutablePointer<CChar>.allocate(capacity: slots * length)
        p.initialize(repeating: 0, count: slots * length)
        return p
    }()
    /// Serialises `register` and `unregister` (a slot is free when its first
    /// byte is 0).
    static let lock = NSLock()

    /// Records `path`; returns its slot (nil when the table is full or the
    /// path too long: that file is then simply not cleaned up on a signal).
    static func register(_ path: String) -> Int? {
        let bytes = Array(path.utf8CString)
        guard bytes.count <= length else { return nil }
        lock.lock(); defer { lock.unlock() }
        guard let i = (0..<slots).first(where: { table[$0 * length] == 0 }) else { return nil }
        let p = table + i * length
        // The first byte last: the handler sees either nothing or the whole path.
        for k in stride(from: bytes.count - 1, through: 1, by: -1) { p[k] = bytes[k] }
        p.pointee = bytes[0]
        return i
    }

    static func unregister(_ slot: Int?) {
        guard let slot else { return }
        lock.lock(); defer { lock.unlock() }
        table[slot * length] = 0
    }

    /// On SIGINT, SIGTERM or SIGHUP: removes the temporary files being
    /// written, then dies of the signal as if there were no handler (so the
    /// shell sees 128 + signal). Completed outputs are complete; the one being
    /// written is not left half-done. A signal the process ignores (a
    /// background job of a script, `nohup`) stays ignored.
    public static func removeOnSignals() {
        _ = table
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            let previous = signal(sig) { s in
                for i in 0..<TemporaryFiles.slots {
                    let p = TemporaryFiles.table + i * TemporaryFiles.length
                    if p.pointee != 0 { unlink(p) }
                }
                signal(s, SIG_DFL)
                raise(s)
            }
            if let previous, unsafeBitCast(previous, to: Int.self) == 1 /* SIG_IGN */ { signal(sig, SIG_IGN) }
        }
    }
}

/// Makes a folder and its parents; an existing folder is fine.
public func makeDirectory(_ path: String) throws {
    var isDir: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
        if isDir.boolValue { return }
        throw WaveFlowError("cannot create folder: a file of that name exists", path: path)
    }
    do {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
        // The OS's reason for the first component that could not be made.
        var reason = (error as NSError).localizedDescription
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if !FileManager.default.fileExists(atPath: prefix) {
                if mkdir(prefix, 0o755) != 0 { reason = String(cString: strerror(errno)) }
                break
            }
        }
        throw WaveFlowError("cannot create folder: \(reason)", path: path)
    }
}
