import Foundation

/// Log-mels of corpus files stored on disk, keyed by the file's path, size,
/// modification time and the feature configuration, so a second run does
/// not recompute them and a changed file or config misses the cache.
public struct FeatureCache: Sendable {
    public let folder: String

    public init(folder: String) throws {
        self.folder = folder
        try makeDirectory(folder)
    }

    /// The cache file for `path` under `config` (a stable FNV-1a hash of the key).
    public func entry(for path: String, config: MelConfig) -> String {
        let attrs = try? FileManager.default.attributesOfItem(atPath: path)
        let size = (attrs?[.size] as? Int) ?? -1
        let mtime = (attrs?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        let abs = URL(fileURLWithPath: path).standardizedFileURL.path
        let key = "\(abs)|\(size)|\(mtime)|\(config)"
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 { hash = (hash ^ UInt64(b)) &* 0x100_0000_01b3 }
        return (folder as NSString).appendingPathComponent(String(format: "%016llx.npy", hash))
    }

    /// The cached mel if present and well-formed (right band count), else nil.
    public func lookup(_ path: String, config: MelConfig) -> NPYArray? {
        let e = entry(for: path, config: config)
        guard let m = try? NPY.read(e), m.shape.count == 2, m.shape[0] == config.nMels else { return nil }
        return m
    }

    public func store(_ mel: NPYArray, for path: String, config: MelConfig) {
        try? NPY.write(mel, to: entry(for: path, config: config))
    }
}

/// One utterance in memory: its audio and log-mel.
public struct Utterance: Sendable {
    public var path: String
    public var audio: [Float]
    /// [M, F] row-major.
    public var mel: NPYArray
    public var frames: Int { mel.shape[1] }
}

/// A training corpus: utterances loaded, split into training and validation.
public struct Corpus: Sendable {
    public var train: [Utterance]
    public var validation: [Utterance]
    public var skipped: [FileFailure]

    /// Loads every audio file below `folder` (resampled to the model's rate),
    /// with mels from `cache`. Files that cannot be read or are shorter than
    /// `minSamples` are skipped and listed. Every `validationStride`-th file
    /// (deterministic, by sorted path) is held out, at most `maxValidation`.
    public static func load(folder: String, config: MelConfig, cache: FeatureCache?, minSamples: Int,
                            maxValidation: Int = 8) throws -> Corpus {
        let files = try AudioFile.list(in: folder)
        guard !files.isEmpty else { throw WaveFlowError("no audio files found", path: folder) }
        let mel = try MelSpectrogram(config: config)
        var loaded = [Utterance?](repeating: nil, count: files.count)
        var failures = [FileFailure?](repeating: nil, count: files.count)
        let progress = ProgressLine("features", total: files.count, unit: "files")
        loaded.withUnsafeMutableBufferPointer { out in
            failures.withUnsafeMutableBufferPointer { fail in
                let (o, f) = (out.baseAddress!, fail.baseAddress!)
                Threads.parallelFor(files.count) { i in
                    let path = files[i]
                    do {
                        let audio = try AudioFile.read(path, sampleRate: config.sampleRate)
                        if audio.samples.count < minSamples {
                            throw WaveFlowError("too short: \(audio.samples.count) samples, need \(minSamples)", path: path)
                        }
                        var m = cache?.lookup(path, config: config)
                        if m == nil || m!.shape[1] != config.frames(forSamples: audio.samples.count) {
                            m = try mel.compute(audio.samples)
                            cache?.store(m!, for: path, config: config)
                        }
                        o[i] = Utterance(path: path, audio: audio.samples, mel: m!)
                    } catch {
                        f[i] = FileFailure(path: path, reason: error.describe(at: path))
                    }
                    progress.advance()
                }
            }
        }
        let good = loaded.compactMap { $0 }
        guard good.count >= 2 else {
            throw WaveFlowError("need at least 2 usable audio files, found \(good.count)", path: folder)
        }
        let nVal = max(1, min(maxValidation, good.count / 20))
        let stride = good.count / nVal
        var train: [Utterance] = [], val: [Utterance] = []
        for (i, u) in good.enumerated() {
            if i % stride == stride / 2 && val.count < nVal { val.append(u) } else { train.append(u) }
        }
        return Corpus(train: train, validation: val, skipped: failures.compactMap { $0 })
    }
}

/// A batch of frame-aligned segments: audio [B, S] and mel [B, M, S/hop].
public struct Batch {
    public var audio: [Float]
    public var mel: [Float]
    public var batch: Int
    public var frames: Int

    /// Items of shard i when the batch is split into n nearly equal parts.
    public func shard(_ i: Int, of n: Int) -> Batch {
        let lo = batch * i / n, hi = batch * (i + 1) / n
        let a = audio.count / batch, m = mel.count / batch
        return Batch(audio: Array(audio[lo * a ..< hi * a]), mel: Array(mel[lo * m ..< hi * m]), batch: hi - lo, frames: frames)
    }
}

extension Corpus {
    /// Draws `batch` random segments of `segment` samples (a multiple of hop)
    /// from the training set, each starting on a frame boundary; the mel
    /// frames are those centred on the segment's samples.
    public func sampleBatch(batch: Int, segment: Int, hop: Int, rng: inout SplitMix64) -> Batch {
        let frames = segment / hop
        let m = train[0].mel.shape[0]
        var audio = [Float](repeating: 0, count: batch * segment)
        var mel = [Float](repeating: 0, count: batch * m * frames)
        // Longer utterances are drawn more often (proportional to length).
        let total = train.reduce(0) { $0 + $1.audio.count }
        for b in 0..<batch {
            var pick = rng.int(below: total), u = 0
            while pick >= train[u].audio.count { pick -= train[u].audio.count; u += 1 }
            let utt = train[u]
            let maxFrame = max(0, (utt.audio.count - segment) / hop)
            let f0 = rng.int(below: maxFrame + 1)
            let s0 = f0 * hop
            let n = min(segment, utt.audio.count - s0)
            audio.replaceSubrange(b * segment ..< b * segment + n, with: utt.audio[s0 ..< s0 + n])
            for mi in 0..<m {
                for f in 0..<frames {
                    let src = min(f0 + f, utt.frames - 1)
                    mel[(b * m + mi) * frames + f] = utt.mel.values[mi * utt.frames + src]
                }
            }
        }
        return Batch(audio: audio, mel: mel, batch: batch, frames: frames)
    }
}
