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
    /// Position in the corpus's training list (every listed training file
    /// counts, loaded or not): data-parallel part p of n draws from the
    /// files with `trainIndex % n == p`.
    public var trainIndex = 0
    /// With an LPC front: the excitation e of the whole file (MODEL-SPEC
    /// 11, computed once at load from the file's own mel) and its envelope.
    public var excitation: [Float]? = nil
    public var envelope: LPCEnvelope? = nil
    public var frames: Int { mel.shape[1] }
    /// What the flows model: the excitation with a front, else the audio.
    public var flowSamples: [Float] { excitation ?? audio }

    /// Adds the front's excitation and envelope (nothing without a front).
    mutating func analyse(with front: LPCFront?) {
        guard let front else { return }
        let env = front.envelope(logMel: mel.values, frames: frames)
        excitation = front.analyse(audio, envelope: env)
        envelope = env
    }
}

/// A training corpus: utterances loaded, split into training and validation.
public struct Corpus: Sendable {
    public var train: [Utterance]
    public var validation: [Utterance]
    public var skipped: [FileFailure]

    /// Splits a sorted file list: every `stride`-th file (deterministic) is
    /// held out for validation, at most `maxValidation` and about 1 in 20.
    /// Returns the training and validation paths.
    public static func split(_ files: [String], maxValidation: Int = 8) -> (train: [String], validation: [String]) {
        let nVal = max(1, min(maxValidation, files.count / 20))
        let stride = max(1, files.count / nVal)
        var train: [String] = [], val: [String] = []
        for (i, f) in files.enumerated() {
            if i % stride == stride / 2 && val.count < nVal { val.append(f) } else { train.append(f) }
        }
        return (train, val)
    }

    /// Loads the audio files below `folder` (resampled to the model's rate),
    /// with mels from `cache`. Files that cannot be read or are shorter than
    /// `minSamples` are skipped and listed. The split into training and
    /// validation files is ``split(_:maxValidation:)`` of the sorted listing.
    ///
    /// With `parts` > 1 (one part per rank of a data-parallel job) only the
    /// training files of part `part` are loaded (those whose training-list
    /// index is `part` modulo `parts`), and the validation files only if
    /// `loadValidation`.
    ///
    /// With an LPC `front`, each file's excitation is computed once here.
    public static func load(folder: String, config: MelConfig, cache: FeatureCache?, minSamples: Int,
                            maxValidation: Int = 8, part: Int = 0, of parts: Int = 1,
                            loadValidation: Bool = true, front: LPCFront? = nil) throws -> Corpus {
        let files = try AudioFile.list(in: folder)
        guard files.count >= 2 else {
            throw WaveFlowError("need at least 2 audio files (one is held out for validation), found \(files.count)", path: folder)
        }
        let (trainFiles, valFiles) = split(files, maxValidation: maxValidation)
        guard trainFiles.count >= parts else {
            throw WaveFlowError("\(trainFiles.count) training files cannot be shared among \(parts) ranks", path: folder)
        }
        // (path, train index or -1 for validation)
        var wanted: [(String, Int)] = trainFiles.enumerated().filter { $0.offset % parts == part }.map { ($0.element, $0.offset) }
        if loadValidation { wanted += valFiles.map { ($0, -1) } }
        let mel = try MelSpectrogram(config: config)
        var loaded = [Utterance?](repeating: nil, count: wanted.count)
        var failures = [FileFailure?](repeating: nil, count: wanted.count)
        let progress = ProgressLine("features", total: wanted.count, unit: "files")
        loaded.withUnsafeMutableBufferPointer { out in
            failures.withUnsafeMutableBufferPointer { fail in
                let (o, f) = (out.baseAddress!, fail.baseAddress!)
                Threads.parallelFor(wanted.count) { i in
                    let (path, index) = wanted[i]
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
                        var u = Utterance(path: path, audio: audio.samples, mel: m!, trainIndex: index)
                        u.analyse(with: front)
                        o[i] = u
                    } catch {
                        f[i] = FileFailure(path: path, reason: error.describe(at: path))
                    }
                    progress.advance()
                }
            }
        }
        let good = loaded.compactMap { $0 }
        let train = good.filter { $0.trainIndex >= 0 }
        guard !train.isEmpty else {
            let reasons = failures.compactMap { $0 }
            let why = reasons.isEmpty ? "" : " (\(reasons.count) failed; first: \(reasons[0].reason))"
            throw WaveFlowError((parts > 1 ? "no usable training files in part \(part) of \(parts)" : "no usable training files") + why,
                                path: folder)
        }
        return Corpus(train: train, validation: good.filter { $0.trainIndex < 0 }, skipped: failures.compactMap { $0 })
    }
}

/// A batch of frame-aligned segments: the flows' input [B, S] (audio, or
/// with an LPC front its excitation) and mel [B, M, S/hop].
public struct Batch {
    public var audio: [Float]
    public var mel: [Float]
    public var batch: Int
    public var frames: Int
    /// [B] nats/sample added to each item's flow NLL: the LPC front's mean
    /// log-gain over the segment (zeros without a front).
    public var nllOffset: [Double]

    public init(audio: [Float], mel: [Float], batch: Int, frames: Int, nllOffset: [Double]? = nil) {
        self.audio = audio; self.mel = mel; self.batch = batch; self.frames = frames
        self.nllOffset = nllOffset ?? [Double](repeating: 0, count: batch)
    }

    /// Items of shard i when the batch is split into n nearly equal parts.
    public func shard(_ i: Int, of n: Int) -> Batch {
        let lo = batch * i / n, hi = batch * (i + 1) / n
        let a = audio.count / batch, m = mel.count / batch
        return Batch(audio: Array(audio[lo * a ..< hi * a]), mel: Array(mel[lo * m ..< hi * m]), batch: hi - lo, frames: frames,
                     nllOffset: Array(nllOffset[lo..<hi]))
    }
}

extension Corpus {
    /// Part `part` of `parts` of one training batch of `batch` segments:
    /// items `batch*part/parts ..< batch*(part+1)/parts`, drawn from the
    /// training files of that part with a generator seeded by `seed` and
    /// `part`. Concatenating the parts 0 ..< parts gives the whole batch, the
    /// same whether the parts are drawn by one process or by `parts` ranks.
    public func samplePart(_ part: Int, of parts: Int, batch: Int, segment: Int, hop: Int, seed: UInt64) -> Batch {
        var rng = SplitMix64(seed: seed &+ UInt64(part) &* 0x9E37_79B9_7F4A_7C15)
        let files = train.filter { $0.trainIndex % parts == part }
        precondition(!files.isEmpty, "no training files in part \(part) of \(parts)")
        let count = batch * (part + 1) / parts - batch * part / parts
        return Self.sample(from: files, batch: count, segment: segment, hop: hop, rng: &rng)
    }

    /// The whole batch drawn as `parts` parts (see ``samplePart``).
    public func sampleBatch(parts: Int, batch: Int, segment: Int, hop: Int, seed: UInt64) -> Batch {
        let pieces = (0..<parts).map { samplePart($0, of: parts, batch: batch, segment: segment, hop: hop, seed: seed) }
        return Batch(audio: pieces.flatMap(\.audio), mel: pieces.flatMap(\.mel), batch: batch, frames: pieces[0].frames,
                     nllOffset: pieces.flatMap(\.nllOffset))
    }

    /// Draws `batch` random segments of `segment` samples (a multiple of hop)
    /// from `files`, each starting on a frame boundary; the mel frames are
    /// those centred on the segment's samples.
    static func sample(from files: [Utterance], batch: Int, segment: Int, hop: Int, rng: inout SplitMix64) -> Batch {
        let frames = segment / hop
        let m = files[0].mel.shape[0]
        var audio = [Float](repeating: 0, count: batch * segment)
        var mel = [Float](repeating: 0, count: batch * m * frames)
        var offsets = [Double](repeating: 0, count: batch)
        // Longer utterances are drawn more often (proportional to length).
        let total = files.reduce(0) { $0 + $1.audio.count }
        for b in 0..<batch {
            var pick = rng.int(below: total), u = 0
            while pick >= files[u].audio.count { pick -= files[u].audio.count; u += 1 }
            let utt = files[u]
            let maxFrame = max(0, (utt.audio.count - segment) / hop)
            let f0 = rng.int(below: maxFrame + 1)
            let s0 = f0 * hop
            let n = min(segment, utt.audio.count - s0)
            audio.replaceSubrange(b * segment ..< b * segment + n, with: utt.flowSamples[s0 ..< s0 + n])
            if let env = utt.envelope { offsets[b] = env.logGainSum(samples: s0 ..< s0 + n) / Double(segment) }
            for mi in 0..<m {
                for f in 0..<frames {
                    let src = min(f0 + f, utt.frames - 1)
                    mel[(b * m + mi) * frames + f] = utt.mel.values[mi * utt.frames + src]
                }
            }
        }
        return Batch(audio: audio, mel: mel, batch: batch, frames: frames, nllOffset: offsets)
    }
}
