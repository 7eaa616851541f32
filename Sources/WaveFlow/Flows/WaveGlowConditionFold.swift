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
// no upsampler at all. F_k is kept by output row o as its transpose with
// the bias appended, [4M + 1, P], so that with the windows given a column
// of ones, [F, 4M + 1], one product per row and column block writes the
// frames' P phases straight into that row of the block: s[o, f*P + p] for
// consecutive f are P apart, exactly a product's rows at stride P.
// Building F_k costs 2CL * MG * P * 4M multiply-adds
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
    /// The folded matrices' size in bytes (Float32; with the bias row).
    public var bytes: Int { flows * outputs * phases * (4 * bands + 1) * MemoryLayout<Float>.size }
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
    /// Per flow: F_k and b'_k by output row, [2CL][4M + 1][P]:
    /// rowPanels[k][(o * (4M + 1) + d*M + c') * P + p] = F_k[o*P + p, d*M + c'],
    /// and b'_k[o] at d*M + c' = 4M (for every p).
    let rowPanels: [OwnedBuffer<T>]
    /// Per flow: b'_k [2CL].
    let biases: [OwnedBuffer<T>]
    /// `checksum` of the weights it was folded from.
    let checksum: UInt64
    private let lock = NSLock()
    /// bf16 copies of F_k [2CL*P, 4M], made on a bf16 context's first use.
    private var bf16: [Int: UnsafeMutablePointer<UInt16>] = [:]

    var outputs: Int { sources.outputs }
    var phases: Int { sources.phases }
    /// 4M, a window's length.
    var window: Int { 4 * sources.bands }
    /// 4M + 1, a window with its 1 (the bias's column).
    var paddedWindow: Int { window + 1 }

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
            // By output row: F_k[o*P ..< (o+1)*P, :]^T, then b'_k[o] in every phase.
            let panels = OwnedBuffer<T>(unsetCount: rows * (win + 1) * p)
            for o in 0..<rows {
                let dst = panels.pointer + o * (win + 1) * p
                for pp in 0..<p { for kk in 0..<win { dst[kk * p + pp] = f.pointer[(o * p + pp) * win + kk] } }
                (dst + win * p).update(repeating: b.pointer[o], count: p)
            }
            ms.append(panels); bs.append(b)
        }
        (rowPanels, biases) = (ms, bs)
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

    /// Windows [F, 4M + 1] of mel [M, F]: row f = mel[:, f-3], ..., mel[:,
    /// f] (frames before 0 are zeros), then 1: the right-hand side of every
    /// projection, the bias's column included.
    func windows(mel: [T], frames: Int) -> OwnedBuffer<T> {
        let (m, win) = (sources.bands, paddedWindow)
        let out = OwnedBuffer<T>(repeating: 0, count: frames * win)
        for f in 0..<frames {
            for d in 0..<4 where f - 3 + d >= 0 {
                let dst = out.pointer + f * win + d * m
                for c in 0..<m { dst[c] = mel[c * frames + f - 3 + d] }
            }
            out.pointer[f * win + win - 1] = 1
        }
        return out
    }

    /// Where `project` writes: columns `columns` of the projection s [2CL,
    /// w] into `pointer` [2CL, columns.count].
    struct Target: @unchecked Sendable {
        let columns: Range<Int>
        let pointer: UnsafeMutablePointer<T>
    }

    /// Flow k's WN projection s [2CL, w] (bias included) of the w = F*P
    /// grouped columns of `condition`'s utterance, written straight into
    /// each target: target i holds column block `blocks[i]` (whole frames,
    /// the blocks side by side over the row) and its halo on either side
    /// (columns of the neighbouring blocks: there is nothing to recompute
    /// in the coupling's halos). The output rows split over the cores; per
    /// row o and block, one product [frames, P] = windows [frames, 4M + 1] x
    /// (F_k, b'_k)'s panel o [4M + 1, P] writes the block's columns of row o
    /// (the windows packed once per block and utterance, the panel read in
    /// place), then the halos are copied from the neighbours. With bf16
    /// products, products over many rows at once instead (`projectByFrames`).
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func project(flow k: Int, condition: FoldedCondition<T>, blocks: [Range<Int>], into targets: [Target], context: ComputeContext) {
        let (p, rows, win) = (phases, outputs, paddedWindow)
        precondition(blocks.count == targets.count && blocks.allSatisfy { $0.lowerBound % p == 0 && $0.upperBound % p == 0 })
        if let b16 = bf16Matrix(k, context: context, frames: condition.frames) {
            projectByFrames(flow: k, windows: condition.windows.pointer, b16: b16, frames: condition.frames, into: targets, context: context)
            return
        }
        let packed = blocks.map { condition.packedWindows(frames: $0.lowerBound / p ..< $0.upperBound / p) }
        let panels = rowPanels[k].pointer
        let parts = max(1, min(context.threads, rows))
        Threads.parallelFor(parts) { part in
            let o0 = rows * part / parts, o1 = rows * (part + 1) / parts
            for o in o0..<o1 {
                for i in targets.indices where packed[i].rows > 0 {
                    let (t, js) = (targets[i], blocks[i])
                    T.packedProduct(packed[i], b: panels + o * win * p, ldb: p, n: p,
                                    c: t.pointer + o * t.columns.count + js.lowerBound - t.columns.lowerBound, ldc: p, accumulate: false)
                }
            }
            // Halos: each target's columns outside its block, from the block that has them.
            for (i, t) in targets.enumerated() {
                for (j, js) in blocks.enumerated() where j != i {
                    let lo = max(js.lowerBound, t.columns.lowerBound), hi = min(js.upperBound, t.columns.upperBound)
                    guard lo < hi else { continue }
                    let source = targets[j]
                    for o in o0..<o1 {
                        (t.pointer + o * t.columns.count + lo - t.columns.lowerBound)
                            .update(from: source.pointer + o * source.columns.count + lo - source.columns.lowerBound, count: hi - lo)
                    }
                }
            }
        }
    }

    /// The most frames per product in `projectByFrames` (equal chunks) and
    /// output rows (R [frames, rows*P] at most 2 MB); each product packs
    /// its rows of F_k once, so it needs many frames.
    static var framesPerProduct: Int { 256 }
    static var rowsPerProduct: Int { 64 }

    /// `project` with bf16 products: R [frames, rows*P] = windows x
    /// F_k[rows]^T (bf16 `b16`) over chunks of frames and output rows, then
    /// each row's P phases of a frame copied into every target that has
    /// them (row o, frame f: columns f*P ..< (f+1)*P), with the bias added.
    func projectByFrames(flow k: Int, windows: UnsafePointer<T>, b16: UnsafePointer<UInt16>, frames: Int, into targets: [Target],
                         context: ComputeContext) {
        let (p, rows, win, lda) = (phases, outputs, window, paddedWindow)
        let parts = max(1, min(context.threads, rows))
        let (frameChunk, rowChunk) = (Self.framesPerProduct, Self.rowsPerProduct)
        let chunks = (frames + frameChunk - 1) / frameChunk, longest = (frames + chunks - 1) / chunks
        let bias = biases[k].pointer, w = frames * p
        Threads.parallelFor(parts) { part in
            let o0 = rows * part / parts, o1 = rows * (part + 1) / parts
            let r = OwnedBuffer<T>(unsetCount: longest * min(rowChunk, o1 - o0) * p)
            for chunk in 0..<chunks {
                let f0 = frames * chunk / chunks, nf = frames * (chunk + 1) / chunks - f0
                for r0 in stride(from: o0, to: o1, by: rowChunk) {
                    let nr = min(rowChunk, o1 - r0), n = nr * p
                    // The Float32 operand is never read when b16 is given.
                    T.product(context, transA: false, transB: true, m: nf, n: n, k: win, a: windows + f0 * lda, a16: nil, lda: lda,
                              b: windows, b16: b16 + r0 * p * win, ldb: win, accumulate: false, c: r.pointer, ldc: n)
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

    /// F_k [2CL*P, 4M] rounded to bf16 when the products of `frames` rows
    /// run in bf16 in `context` (made once, kept); nil otherwise.
    func bf16Matrix(_ k: Int, context: ComputeContext, frames: Int) -> UnsafePointer<UInt16>? {
        let (p, rows, win) = (phases, outputs, window)
        guard context.bf16Products(min(frames, Self.framesPerProduct), rows * p, win) else { return nil }
        lock.lock(); defer { lock.unlock() }
        if let m = bf16[k] { return UnsafePointer(m) }
        let f = OwnedBuffer<T>(unsetCount: rows * p * win), panels = rowPanels[k].pointer
        for o in 0..<rows { for pp in 0..<p { for kk in 0..<win {
            f.pointer[(o * p + pp) * win + kk] = panels[(o * (win + 1) + kk) * p + pp]
        } } }
        guard let copy = T.operandCopy(context, of: f.pointer, count: f.count,
                                       forProductsOf: [min(frames, Self.framesPerProduct), rows * p, win]) else { return nil }
        bf16[k] = copy
        return UnsafePointer(copy)
    }
}

/// The synthesis condition of a model whose projections are folded: the
/// mel's windows, which each coupling projects itself
/// (`WaveGlowConditionFold.project`).
struct FoldedCondition<T: Real>: ConditionRows {
    let fold: WaveGlowConditionFold<T>
    /// [F, 4M + 1] (`WaveGlowConditionFold.windows`).
    let windows: OwnedBuffer<T>
    let mel: [T], frames: Int, rows: Int
    let upsampler: WaveGlowUpsampler<T>
    /// The windows of a block's frames packed for its products, made on
    /// first use and shared by every flow.
    let packed = PackedWindows<T>()
    var bands: Int { fold.sources.bands }

    /// Grid rows of the upsampled condition, for a reader other than
    /// WaveGlow's couplings (none on the synthesis path): the whole
    /// condition upsampled anew for every call.
    func row(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<T>, rowStride: Int) {
        upsampler.upsampledCondition(mel: mel, frames: frames, rows: rows).row(i, columns: js, into: out, rowStride: rowStride)
    }

    /// Windows [fs.count, 4M + 1] of frames `fs`, packed (`PackedWeights`).
    func packedWindows(frames fs: Range<Int>) -> PackedWeights<T> {
        packed.lock.lock(); defer { packed.lock.unlock() }
        if let p = packed.blocks[fs] { return p }
        let win = fold.paddedWindow
        let p = PackedWeights(windows.pointer + fs.lowerBound * win, rows: fs.count, columns: win, lda: win)
        packed.blocks[fs] = p
        return p
    }
}

/// `FoldedCondition`'s packed windows by frames.
final class PackedWindows<T: Real>: @unchecked Sendable {
    let lock = NSLock()
    var blocks: [Range<Int>: PackedWeights<T>] = [:]
}
