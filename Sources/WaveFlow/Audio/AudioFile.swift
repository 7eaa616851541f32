import CSndFile
import Foundation

/// A mono waveform: Float32 samples in [-1, 1] at `sampleRate` Hz.
public struct Audio: Sendable {
    public var samples: [Float]
    public var sampleRate: Int

    public init(samples: [Float], sampleRate: Int) {
        self.samples = samples
        self.sampleRate = sampleRate
    }

    /// Length in seconds.
    public var duration: Double { Double(samples.count) / Double(sampleRate) }
}

/// The sample encodings `AudioFile.write` offers.
public enum SampleFormat: String, CaseIterable, Sendable {
    /// 16-bit PCM WAV; samples outside [-1, 1] are clipped.
    case pcm16
    /// 32-bit float WAV; samples are stored as they are.
    case float
}

/// Reading and writing audio files through libsndfile (WAV, FLAC, Ogg
/// Vorbis, AIFF and everything else it reads).
public enum AudioFile {
    /// File name endings treated as audio when a folder is scanned.
    /// Frames decoded per libsndfile call.
    static let readChunkFrames = 1 << 16
    /// The longest file read: 2^31 frames (27 hours at 22.05 kHz).
    static let maxFrames = 1 << 31
    /// More channels than this is a corrupt header.
    static let maxChannels = 1024
    /// Sample rates read (a header's rate outside is taken as corrupt: 1 Hz
    /// audio resampled to 22050 Hz would grow 22050-fold).
    static let sampleRates = 1000...1_000_000

    public static let extensions: Set<String> = ["wav", "flac", "ogg", "oga", "aiff", "aif", "aifc", "au", "snd", "caf", "w64", "opus", "mp3"]

    /// Reads `path`, averages its channels to mono and, if `sampleRate` is
    /// given and differs from the file's, resamples with soxr (high quality).
    /// - Throws: `WaveFlowError` naming the file: missing, not audio, empty,
    ///   or truncated (fewer frames than its header promises).
    public static func read(_ path: String, sampleRate: Int? = nil) throws -> Audio {
        guard FileManager.default.fileExists(atPath: path) else {
            throw WaveFlowError("no such file", path: path)
        }
        // Opening a FIFO waits for a writer that may never come, and a device
        // may never end: read regular files (or links to them) only.
        var st = stat()
        if stat(path, &st) == 0, st.st_mode & S_IFMT != S_IFREG {
            throw WaveFlowError("not a regular file (\(fileTypeName(st.st_mode))): not read", path: path)
        }
        var info = SF_INFO()
        guard let file = sf_open(path, Int32(SFM_READ), &info) else {
            let reason = String(cString: sf_strerror(nil))
            throw WaveFlowError("not a readable audio file (\(reason))", path: path)
        }
        defer { sf_close(file) }
        let channels = Int(info.channels)
        guard channels > 0, channels <= maxChannels, info.samplerate > 0 else {
            throw WaveFlowError("audio header is invalid (\(info.channels) channels, \(info.samplerate) Hz)", path: path)
        }
        guard sampleRates.contains(Int(info.samplerate)) else {
            throw WaveFlowError("sample rate \(info.samplerate) Hz is outside \(sampleRates.lowerBound)-\(sampleRates.upperBound) Hz", path: path)
        }
        // The frame count in the header is a claim, not a fact: for a cut-off
        // Ogg Vorbis file libsndfile 1.2.0 reports INT64_MAX. Read in bounded
        // chunks until the decoder stops, and compare afterwards.
        let claimed = Int(info.frames)
        if let (promised, present) = truncatedDataChunk(file) {
            throw WaveFlowError("truncated: header promises \(promised) bytes of audio, file holds \(present)", path: path)
        }
        // Float samples of integer files are scaled to [-1, 1] (16-bit PCM / 32768).
        var interleaved = [Float]()
        var chunk = [Float](repeating: 0, count: readChunkFrames * channels)
        while true {
            let got = chunk.withUnsafeMutableBufferPointer {
                Int(sf_readf_float(file, $0.baseAddress, sf_count_t(readChunkFrames)))
            }
            if got <= 0 { break }
            guard interleaved.count / channels + got <= maxFrames else {
                throw WaveFlowError("longer than \(maxFrames) frames: not read", path: path)
            }
            interleaved += chunk[0 ..< got * channels]
        }
        let frames = interleaved.count / channels
        if frames == 0 {
            if sf_error(file) != 0 {
                throw WaveFlowError("cannot decode audio (\(String(cString: sf_strerror(file))))", path: path)
            }
            throw WaveFlowError("audio file holds no samples", path: path)
        }
        // A plausible claim that was not met is a truncated file; an absurd one
        // (a cut-off stream's unknown length) is not a promise.
        if claimed > frames && claimed <= maxFrames {
            throw WaveFlowError("truncated: \(frames) of \(claimed) frames readable", path: path)
        }
        var mono: [Float]
        if channels == 1 {
            mono = interleaved
        } else {
            mono = [Float](repeating: 0, count: frames)
            let scale = 1 / Float(channels)
            for i in 0..<frames {
                var s: Float = 0
                for c in 0..<channels { s += interleaved[i * channels + c] }
                mono[i] = s * scale
            }
        }
        if let bad = mono.firstIndex(where: { !$0.isFinite }) {
            throw WaveFlowError("sample \(bad) is not a finite number", path: path)
        }
        var audio = Audio(samples: mono, sampleRate: Int(info.samplerate))
        if let rate = sampleRate, rate != audio.sampleRate {
            guard Double(frames) * Double(rate) / Double(audio.sampleRate) <= Double(maxFrames) else {
                throw WaveFlowError("longer than \(maxFrames) frames at \(rate) Hz: not read", path: path)
            }
            audio = try Resampler.resample(audio, to: rate)
        }
        return audio
    }

    /// libsndfile reads a cut-off WAV or AIFF without complaint (it shortens
    /// the data chunk to what is there) but notes the discrepancy in its log
    /// as "data : 11024 (should be 5490)". Returns (promised, present) bytes.
    static func truncatedDataChunk(_ file: OpaquePointer) -> (Int, Int)? {
        var buffer = [CChar](repeating: 0, count: 16384)
        sf_command(file, Int32(SFC_GET_LOG_INFO), &buffer, Int32(buffer.count))
        let log = String(cString: buffer)
        for line in log.split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("data") || t.hasPrefix("SSND"), let r = t.range(of: "(should be ") else { continue }
            let head = t[..<r.lowerBound].split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? ""
            let tail = t[r.upperBound...].prefix { $0.isNumber }
            if let promised = Int(head), let present = Int(tail), present < promised {
                return (promised, present)
            }
        }
        return nil
    }

    /// Writes `audio` as a WAV file, atomically (temporary file, then rename).
    /// - Returns: how many samples were clipped to [-1, 1] (always 0 for `.float`).
    @discardableResult
    public static func write(_ audio: Audio, to path: String, format: SampleFormat = .pcm16) throws -> Int {
        var samples = audio.samples
        var clipped = 0
        if format == .pcm16 {
            // Clip ourselves so the count can be reported; 32767/32768 is the
            // largest 16-bit value.
            for i in samples.indices {
                let s = samples[i]
                if s > 1 || s < -1 || !s.isFinite {
                    clipped += 1
                    samples[i] = s.isNaN ? 0 : min(max(s, -1), 1)
                }
            }
        }
        try AtomicFile.write(to: path) { tmp in
            var info = SF_INFO()
            info.samplerate = Int32(audio.sampleRate)
            info.channels = 1
            let sub = format == .pcm16 ? SF_FORMAT_PCM_16 : SF_FORMAT_FLOAT
            info.format = Int32(SF_FORMAT_WAV | sub)
            guard let file = sf_open(tmp, Int32(SFM_WRITE), &info) else {
                throw WaveFlowError("cannot write (\(String(cString: sf_strerror(nil))))", path: path)
            }
            let wrote: Int
            if format == .pcm16 {
                // x * 32768, rounded, is the inverse of reading (PCM / 32768);
                // +1.0 saturates at 32767.
                let pcm = samples.map { Int16(clamping: Int(($0 * 32768).rounded())) }
                wrote = pcm.withUnsafeBufferPointer {
                    Int(sf_writef_short(file, $0.baseAddress, sf_count_t($0.count)))
                }
            } else {
                wrote = samples.withUnsafeBufferPointer {
                    Int(sf_writef_float(file, $0.baseAddress, sf_count_t($0.count)))
                }
            }
            let closeStatus = sf_close(file)
            guard wrote == samples.count, closeStatus == 0 else {
                throw WaveFlowError("cannot write all samples", path: path)
            }
        }
        return clipped
    }

    /// Every audio file below `folder` (recursively), sorted by path.
    public static func list(in folder: String) throws -> [String] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw WaveFlowError("no such folder", path: folder)
        }
        return listFiles(in: folder) { extensions.contains(($0 as NSString).pathExtension.lowercased()) }
    }
}

/// `path` relative to `folder`, for a path that `listFiles(in: folder)`
/// returned; with its extension replaced by `newExtension` when given.
public func relativePath(of path: String, under folder: String, newExtension: String? = nil) -> String {
    var rel = path.hasPrefix(folder) ? String(path.dropFirst(folder.count)) : (path as NSString).lastPathComponent
    while rel.hasPrefix("/") { rel.removeFirst() }
    if let ext = newExtension { rel = (rel as NSString).deletingPathExtension + "." + ext }
    return rel
}

/// Every regular file below `folder` whose path satisfies `keep`, sorted.
public func listFiles(in folder: String, where keep: (String) -> Bool) -> [String] {
    var out: [String] = []
    guard let walker = FileManager.default.enumerator(atPath: folder) else { return [] }
    while let rel = walker.nextObject() as? String {
        let full = (folder as NSString).appendingPathComponent(rel)
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue, keep(full),
           !(rel as NSString).lastPathComponent.hasPrefix(".") {
            out.append(full)
        }
    }
    return out.sorted()
}

/// libsndfile's version string ("libsndfile-1.2.0").
public var sndfileVersion: String { String(cString: sf_version_string()) }
