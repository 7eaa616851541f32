import Foundation

// WaveGlow synthesis with the upsampler folded into every flow's condition
// projection (MODEL-SPEC 12.1 and 12.4 rearranged: the same numbers up to
// float rounding).
//
// Grouped column n holds samples s = nG + j (j < G) of frame f = n / P at
// phase p = n % P (P = hop / G columns per frame), and with kernel 4*hop and
// stride hop those samples depend on mel frames f-3 ... f only:
//   u[c, s] = b_up[c] + sum_{d<4} sum_c' U[c', c, pG + j + (3-d) hop] mel[c', f-3+d]
// so WN_k's projection s = Wc Cg + b_c is, for each phase p, one [2CL, 4M]
// matrix applied to the window [mel[f-3]; mel[f-2]; mel[f-1]; mel[f]]:
//   s[o, n] = b'[o] + sum_{d, c'} F_k[o*P + p, d*M + c'] mel[c', f-3+d]
//   F_k[o*P + p, d*M + c'] = sum_{c, j} Wc[o, cG + j] U[c', c, pG + j + (3-d) hop]
//   b'[o] = b_c[o] + sum_{c, j} Wc[o, cG + j] b_up[c]
// 4M multiply-adds per output instead of MG (half of them for G = 8), and
// no upsampler at all. Building F_k costs 2CL * MG * P * 4M multiply-adds
// per flow, as much as synthesising about 7 s of audio saves, so the fold is
// built once and kept with the model (`WaveGlowUpsampler`), and checked
// against the weights it came from before every use.
//
// Shape letters: K flows, C channels, L layers, M bands, G group, P = hop/G,
// F frames, 2CL projection rows.

/// The size and cost of a WaveGlow model's folded condition projections
/// (`ConditionFolding`), from its config alone (`waveflow info --config`).
public struct ConditionFoldSize: Sendable, Equatable {
    /// M, hop, G, 2CL, K.
    public let bands: Int, hop: Int, group: Int, outputs: Int, flows: Int

    /// The most memory a fold may take (its Float32 matrices): folding is
    /// skipped above it (published sizes: C = 256 would need 2 GB).
    public static var memoryLimit: Int { 1 << 30 }

    /// The fold of a WaveGlow `config` (any other family's is meaningless).
    public init(waveGlow config: ModelConfig) {
        (bands, hop, group) = (config.nMels, config.hopLength, config.nGroup)
        (outputs, flows) = (2 * config.channels * config.nLayers, config.nFlows)
    }

    /// P = hop / G, columns per mel frame.
    public var phases: Int { hop / group }
    /// The folded matrices' size in bytes (Float32).
    public var bytes: Int { flows * outputs * phases * 4 * bands * MemoryLayout<Float>.size }
    /// Multiply-adds to build the fold.
    public var buildMacs: Double { Double(flows) * Double(outputs) * Double(bands * group) * Double(phases * 4 * bands) }
    /// Multiply-adds a folded column saves: the projection's MG - 4M per
    /// row and flow, and the upsampler's 4M*M per sample.
    public var savedMacsPerColumn: Double {
        Double(flows * outputs * (bands * group - 4 * bands)) + Double(group * 4 * bands * bands)
    }
    /// The same per audio sample (a column is G samples).
    public var savedMacsPerSample: Double { savedMacsPerColumn / Double(group) }
    /// Whether folding saves anything (the projection's inputs shrink from
    /// MG to 4M only for G > 4) within `memoryLimit`.
    public var applies: Bool { bands * group > 4 * bands && bytes <= Self.memoryLimit }
    /// Columns of synthesis whose savings pay for building the fold.
    public var breakEvenColumns: Int { Int((buildMacs / savedMacsPerColumn).rounded(.up)) }
    /// The same in mel frames.
    public var breakEvenFrames: Int { (breakEvenColumns + phases - 1) / phases }
}

/// Every flow's condition projection with the upsampler folded in
/// (`ConditionFolding`), for synthesis.
final class WaveGlowConditionFold<T: Real>: @unchecked Sendable {
    /// Where the folded weights live in the arena, and the fold's size.
    struct Sources: Sendable {
        /// `upsample.weight` [M, M, 4*hop] and `upsample.bias` [M].
        var weight: Int, bias: Int
        /// `WN.k.cond_layer.weight` [2CL, MG] and its bias [2CL], per flow.
        var conditionWeights: [Int], conditionBiases: [Int]
        let size: ConditionFoldSize

        init(config: ModelConfig, params: ParameterSet<T>) {
            weight = params.offset("upsample.weight"); bias = params.offset("upsample.bias")
            conditionWeights = (0..<config.nFlows).map { params.offset("WN.\($0).cond_layer.weight") }
            conditionBiases = (0..<config.nFlows).map { params.offset("WN.\($0).cond_layer.bias") }
            size = ConditionFoldSize(waveGlow: config)
        }

        var bands: Int { size.bands }
        var hop: Int { size.hop }
        var group: Int { size.group }
        var outputs: Int { size.outputs }
        var phases: Int { size.phases }
        var flows: Int { size.flows }
        /// The arena ranges the fold is made of, for its checksum.
        var ranges: [Range<Int>] {
            [weight ..< weight + bands * bands * 4 * hop, bias ..< bias + bands]
                + conditionWeights.map { $0 ..< $0 + outputs * bands * group }
                + conditionBiases.map { $0 ..< $0 + outputs }
        }
    }

    let sources: Sources
    /// Per flow: F_k [2CL*P, 4M] (row o*P + p, column d*M + c').
    let matrices: [OwnedBuffer<T>]
    /// Per flow: b'_k [2CL].
    let biases: [OwnedBuffer<T>]
    /// `checksum` of the weights it was folded from.
    let checksum: UInt64
    private let lock = NSLock()
    /// bf16 copies of `matrices`, made on a bf16 context's first use.
    private var bf16: [Int: UnsafeMutablePointer<UInt16>] = [:]

    var outputs: Int { sources.outputs }
    var phases: Int { sources.phases }
    /// 4M, a window's length.
    var window: Int { 4 * sources.bands }

    /// Folds the arena's current weights (`checksum` is theirs).
    init(sources s: Sources, values w: UnsafePointer<T>, checksum: UInt64) {
        (sources, self.checksum) = (s, checksum)
        let (m, g, p, rows) = (s.bands, s.group, s.phases, s.outputs)
        let (mg, win, k) = (m * g, 4 * m, 4 * s.hop)
        // V [MG, P*4M]: V[c*G + j, p*4M + d*M + c'] = U[c', c, p*G + j + (3-d)*hop], shared by every flow.
        let v = OwnedBuffer<T>(repeating: 0, count: mg * p * win)
        for c in 0..<m { for j in 0..<g {
            let row = v.pointer + (c * g + j) * p * win
            for pp in 0..<p { for d in 0..<4 { for c2 in 0..<m {
                row[pp * win + d * m + c2] = w[s.weight + (c2 * m + c) * k + pp * g + j + (3 - d) * s.hop]
            } } }
        } }
        // b_up repeated over the group: [MG], entry c*G + j = b_up[c].
        let bUp = OwnedBuffer<T>(repeating: 0, count: mg)
        for c in 0..<m { for j in 0..<g { bUp.pointer[c * g + j] = w[s.bias + c] } }
        var ms: [OwnedBuffer<T>] = [], bs: [OwnedBuffer<T>] = []
        for flow in 0..<s.flows {
            let wc = w + s.conditionWeights[flow]
            // F_k as [2CL, P*4M] (the same memory as [2CL*P, 4M]) = Wc [2CL, MG] x V.
            let f = OwnedBuffer<T>(repeating: 0, count: rows * p * win)
            T.gemm(transA: false, transB: false, m: rows, n: p * win, k: mg, alpha: 1, a: wc, lda: mg,
                   b: v.pointer, ldb: p * win, beta: 0, c: f.pointer, ldc: p * win)
            let b = OwnedBuffer<T>(copying: w + s.conditionBiases[flow], count: rows)
            T.gemm(transA: false, transB: false, m: rows, n: 1, k: mg, alpha: 1, a: wc, lda: mg,
                   b: bUp.pointer, ldb: 1, beta: 1, c: b.pointer, ldc: 1)
            ms.append(f); bs.append(b)
        }
        (matrices, biases) = (ms, bs)
    }

    deinit { for p in bf16.values { p.deallocate() } }

    /// A checksum of the fold's source weights in `values`: FNV-1a over
    /// their bit patterns in 8 lanes (any single changed value changes it).
    static func checksum(_ s: Sources, values: UnsafePointer<T>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for r in s.ranges {
            let words = UnsafeRawPointer(values + r.lowerBound), n = r.count * MemoryLayout<T>.size / 4
            var lanes = SIMD8<UInt32>(repeating: 0x811c_9dc5)
            var i = 0
            while i + 8 <= n {
                lanes = (lanes ^ words.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self)) &* 0x0100_0193
                i += 8
            }
            for l in 0..<8 { h = (h ^ UInt64(lanes[l])) &* 0x100_0000_01b3 }
            while i < n { h = (h ^ UInt64(words.load(fromByteOffset: 4 * i, as: UInt32.self))) &* 0x100_0000_01b3; i += 1 }
        }
        return h
    }

    /// Windows [F, 4M] of mel [M, F]: row f = mel[:, f-3], ..., mel[:, f]
    /// (frames before 0 are zeros), the right-hand side of every projection.
    func windows(mel: [T], frames: Int) -> OwnedBuffer<T> {
        let (m, win) = (sources.bands, window)
        let out = OwnedBuffer<T>(repeating: 0, count: frames * win)
        for f in 0..<frames { for d in 0..<4 where f - 3 + d >= 0 {
            let dst = out.pointer + f * win + d * m
            for c in 0..<m { dst[c] = mel[c * frames + f - 3 + d] }
        } }
        return out
    }

    /// Where `project` writes: columns `columns` of the projection s [2CL,
    /// w] into `pointer` [2CL, columns.count].
    struct Target: @unchecked Sendable {
        let columns: Range<Int>
        let pointer: UnsafeMutablePointer<T>
    }

    /// The most frames and output rows per product in `project` (R [frames,
    /// rows*P], 2 MB at most). Each product packs its rows of F_k once, so
    /// it needs many frames: measured (Zen 4, wg-c64, 2 s) 256 frames by
    /// 64 rows 102-105k samples/s, 256 by 32 104k, 256 by 128-256 100-108k,
    /// 128 by 8-32 97-99k, 64 by 64 88k; the frames split into equal chunks.
    static var framesPerProduct: Int { 256 }
    static var rowsPerProduct: Int { 64 }

    /// Flow k's WN projection s [2CL, w] (bias included) of the w grouped
    /// columns of an utterance of `frames` frames, from `windows`
    /// (`windows(mel:frames:)`), written straight into each target's
    /// columns (column blocks with their halos, which may overlap: there is
    /// nothing to recompute in the coupling's halos). The output rows split
    /// over the cores; each worker runs products R [frames, rows*P] =
    /// windows x F_k[rows]^T over at most `framesPerProduct` frames (equal
    /// chunks) and `rowsPerProduct` rows, then copies each row's P phases of
    /// a frame into place (row o, frame f: columns f*P ..< (f+1)*P).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func project(flow k: Int, windows: UnsafePointer<T>, frames: Int, width w: Int, into targets: [Target],
                 context: ComputeContext) {
        let (p, rows, win) = (phases, outputs, window)
        let parts = max(1, min(context.threads, rows))
        let (frameChunk, rowChunk) = (Self.framesPerProduct, Self.rowsPerProduct)
        let chunks = (frames + frameChunk - 1) / frameChunk, longest = (frames + chunks - 1) / chunks
        let b16 = bf16Matrix(k, context: context, frames: longest)
        let bias = biases[k].pointer, matrix = matrices[k].pointer
        Threads.parallelFor(parts) { part in
            let o0 = rows * part / parts, o1 = rows * (part + 1) / parts
            let r = OwnedBuffer<T>(unsetCount: longest * min(rowChunk, o1 - o0) * p)
            for chunk in 0..<chunks {
                let f0 = frames * chunk / chunks, nf = frames * (chunk + 1) / chunks - f0
                for r0 in stride(from: o0, to: o1, by: rowChunk) {
                    let nr = min(rowChunk, o1 - r0), n = nr * p
                    T.product(context, transA: false, transB: true, m: nf, n: n, k: win, a: windows + f0 * win, a16: nil, lda: win,
                              b: matrix + r0 * p * win, b16: b16.map { $0 + r0 * p * win }, ldb: win,
                              accumulate: false, c: r.pointer, ldc: n)
                    // R's row f - f0 holds columns f*P ..< (f+1)*P of output row o at (o - r0)*P.
                    for t in targets {
                        let lo = max(t.columns.lowerBound, f0 * p), hi = min(t.columns.upperBound, (f0 + nf) * p, w)
                        guard lo < hi else { continue }
                        let width = t.columns.count
                        for o in r0 ..< r0 + nr {
                            let dst = t.pointer + o * width - t.columns.lowerBound, src = r.pointer + (o - r0) * p - f0 * n, b = bias[o]
                            var j = lo
                            while j < hi {
                                let f = j / p, end = min(hi, (f + 1) * p), from = src + f * n - f * p
                                for q in j..<end { dst[q] = from[q] + b }
                                j = end
                            }
                        }
                    }
                }
            }
        }
    }

    /// F_k rounded to bf16 when the products of `frames` rows run in bf16 in
    /// `context` (made once, kept); nil otherwise.
    func bf16Matrix(_ k: Int, context: ComputeContext, frames: Int) -> UnsafePointer<UInt16>? {
        guard context.bf16Products(frames, outputs * phases, window) else { return nil }
        lock.lock(); defer { lock.unlock() }
        if let m = bf16[k] { return UnsafePointer(m) }
        guard let copy = T.operandCopy(context, of: matrices[k].pointer, count: matrices[k].count,
                                       forProductsOf: [frames, outputs * phases, window]) else { return nil }
        bf16[k] = copy
        return UnsafePointer(copy)
    }
}

/// The synthesis condition of a model whose projections are folded: the
/// mel's windows, which each coupling projects itself
/// (`WaveGlowConditionFold.project`).
struct FoldedCondition<T: Real>: ConditionRows {
    let fold: WaveGlowConditionFold<T>
    /// [F, 4M].
    let windows: OwnedBuffer<T>
    let mel: [T], frames: Int, rows: Int
    let upsampler: WaveGlowUpsampler<T>
    var bands: Int { fold.sources.bands }

    /// Grid rows of the upsampled condition, for a reader other than
    /// WaveGlow's couplings (none on the synthesis path): the whole
    /// condition upsampled anew for every call.
    func row(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<T>, rowStride: Int) {
        upsampler.upsampledCondition(mel: mel, frames: frames, rows: rows).row(i, columns: js, into: out, rowStride: rowStride)
    }
}
