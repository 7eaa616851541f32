import Foundation

// WaveGlow's conditioner (MODEL-SPEC 12.1): ConvTranspose1d(M -> M, kernel
// K = 4*hop, stride hop) of the mel, PyTorch semantics, weight [M_in,
// M_out, K]: u[o, f*hop + k] = bias[o] + sum_i W[i, o, k] mel[i, f], of
// which the first F*hop columns are kept (scoring keeps the first T of
// those). Computed as P = W^T mel ([M_out*K, F], one product per block of
// frames) and an overlap-add of P's columns.

/// The ConvTranspose1d upsampler (`upsample.weight`, `upsample.bias`).
public final class WaveGlowUpsampler<T: Real>: Conditioner {
    public typealias Scalar = T
    let params: ParameterSet<T>
    let bands: Int, hop: Int
    let weight: Int, bias: Int
    /// Frames per product: bounds the scratch P to [M*K, 64].
    static var framesPerBlock: Int { 64 }
    /// The weights every flow's folded projection is made of.
    let foldSources: WaveGlowConditionFold<T>.Sources
    /// The fold last built (`foldForSynthesis`), while its weights are unchanged.
    private let kept = KeptFold()

    /// The fold and its lock.
    private final class KeptFold: @unchecked Sendable {
        let lock = NSLock()
        var fold: WaveGlowConditionFold<T>?
    }

    /// The upsampler of `config`; every `WN.k.cond_layer` must already be in `params` (for the fold).
    init(config: ModelConfig, params: ParameterSet<T>) {
        self.params = params
        (bands, hop) = (config.nMels, config.hopLength)
        weight = params.offset("upsample.weight")
        bias = params.offset("upsample.bias")
        foldSources = WaveGlowConditionFold.Sources(config: config, params: params)
    }

    var kernel: Int { 4 * hop }

    /// c [M, F*hop] of one item's mel [M, F].
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    func upsample(_ mel: UnsafePointer<T>, frames: Int, into c: UnsafeMutablePointer<T>) {
        let (m, k, width) = (bands, kernel, frames * hop)
        let w = params.valueBuffer.baseAddress! + weight, b = params.valueBuffer.baseAddress! + bias
        for o in 0..<m { (c + o * width).update(repeating: b[o], count: width) }
        let block = Self.framesPerBlock
        let p = OwnedBuffer<T>(repeating: 0, count: m * k * min(block, frames))
        for f0 in stride(from: 0, to: frames, by: block) {
            let nf = min(block, frames - f0)
            // P [M_out*K, nf] = W^T [M_out*K, M_in] x mel[:, f0..<f0+nf].
            T.gemm(transA: true, transB: false, m: m * k, n: nf, k: m, alpha: 1, a: w, lda: m * k,
                   b: mel + f0, ldb: frames, beta: 0, c: p.pointer, ldc: nf)
            for o in 0..<m {
                let row = c + o * width
                for kk in 0..<k {
                    let pr = p.pointer + (o * k + kk) * nf
                    for f in 0..<nf {
                        let col = (f0 + f) * hop + kk
                        if col < width { row[col] += pr[f] }
                    }
                }
            }
        }
    }

    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func forward(mel: [T], batch: Int, frames: Int) -> (condition: [T], cache: Any) {
        let (m, width) = (bands, frames * hop)
        var c = [T](repeating: 0, count: batch * m * width)
        mel.withUnsafeBufferPointer { mp in c.withUnsafeMutableBufferPointer { cp in
            for b in 0..<batch { upsample(mp.baseAddress! + b * m * frames, frames: frames, into: cp.baseAddress! + b * m * width) }
        } }
        return (c, frames)
    }

    /// dW [M_in, M_out*K] += mel dP^T with dP[o*K + k, f] = dc[o, f*hop + k]; dbias[o] += sum dc[o, :].
    @_specialize(where T == Float)
    @_specialize(where T == Double)
    public func backward(mel: [T], cache: Any, dCondition dc: [T]) {
        guard let frames = cache as? Int else { preconditionFailure("not a WaveGlow upsampler cache") }
        let (m, k, width) = (bands, kernel, frames * hop)
        let batch = mel.count / (m * frames)
        let gw = params.gradBuffer.baseAddress! + weight, gb = params.gradBuffer.baseAddress! + bias
        let block = Self.framesPerBlock
        let dp = OwnedBuffer<T>(repeating: 0, count: m * k * min(block, frames))
        mel.withUnsafeBufferPointer { mp in dc.withUnsafeBufferPointer { dcp in
            for b in 0..<batch {
                let melB = mp.baseAddress! + b * m * frames, dcB = dcp.baseAddress! + b * m * width
                accumulateRowSums(dcB, into: gb, rows: m, cols: width)
                for f0 in stride(from: 0, to: frames, by: block) {
                    let nf = min(block, frames - f0)
                    for o in 0..<m {
                        for kk in 0..<k {
                            let pr = dp.pointer + (o * k + kk) * nf
                            for f in 0..<nf {
                                let col = (f0 + f) * hop + kk
                                pr[f] = col < width ? dcB[o * width + col] : 0
                            }
                        }
                    }
                    T.gemm(transA: false, transB: true, m: m, n: m * k, k: nf, alpha: 1, a: melB + f0, lda: frames,
                           b: dp.pointer, ldb: nf, beta: 1, c: gw, ldc: m * k)
                }
            }
        } }
    }

    /// The folded projections' windows when `foldForSynthesis` gives a fold,
    /// else the whole upsampled condition.
    public func synthesisCondition(mel: [T], frames: Int, rows: Int, context: ComputeContext) -> any ConditionRows<T> {
        if let fold = foldForSynthesis(columns: frames * hop / rows, context: context) {
            return FoldedCondition(fold: fold, windows: fold.windows(mel: mel, frames: frames), mel: mel, frames: frames, rows: rows,
                                   upsampler: self)
        }
        return upsampledCondition(mel: mel, frames: frames, rows: rows)
    }

    /// The whole upsampled condition of mel [M, F] as grid rows.
    func upsampledCondition(mel: [T], frames: Int, rows: Int) -> UpsampledCondition<T> {
        UpsampledCondition(values: forward(mel: mel, batch: 1, frames: frames).condition, bands: bands, width: frames * hop, rows: rows)
    }

    /// The fold to synthesise `columns` grouped columns with under
    /// `context.conditionFolding` (`ConditionFolding`): the kept one if its
    /// weights are unchanged (checksum), else a new one when the policy and
    /// `ConditionFoldSize.memoryLimit` allow; nil for the unfolded path.
    /// Concurrent callers wait for one build.
    func foldForSynthesis(columns: Int, context: ComputeContext) -> WaveGlowConditionFold<T>? {
        let s = foldSources
        guard context.conditionFolding != .never, s.size.applies else { return nil }
        kept.lock.lock(); defer { kept.lock.unlock() }
        let wanted = context.conditionFolding == .always || columns >= s.size.breakEvenColumns
        guard kept.fold != nil || wanted else { return nil }
        let values = UnsafePointer(params.valueBuffer.baseAddress!)
        let sum = WaveGlowConditionFold<T>.checksum(s, values: values)
        if let fold = kept.fold, fold.checksum == sum { return fold }
        kept.fold = nil // the weights changed since
        guard wanted else { return nil }
        let built = WaveGlowConditionFold(sources: s, values: values, checksum: sum)
        kept.fold = built
        return built
    }

    /// Whether a fold is kept (tests, `bench`).
    var hasFold: Bool { kept.lock.lock(); defer { kept.lock.unlock() }; return kept.fold != nil }
}

/// A whole upsampled condition c [M, cw] served as grid rows: row i is
/// c[m, j*h + i].
struct UpsampledCondition<T: Real>: ConditionRows {
    let values: [T]
    let bands: Int, width: Int, rows: Int

    /// Cg [M*h, cw/h]: Cg[m*h + i, j] = c[m, j*h + i] (MODEL-SPEC 12.1's grouping), all rows at once.
    @_specialize(where T == Float)
    func grouped(into out: UnsafeMutablePointer<T>) {
        let w = width / rows
        values.withUnsafeBufferPointer { v in
            for m in 0..<bands {
                let src = v.baseAddress! + m * width
                for i in 0..<rows {
                    let dst = out + (m * rows + i) * w
                    for j in 0..<w { dst[j] = src[j * rows + i] }
                }
            }
        }
    }

    func row(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<T>, rowStride: Int) {
        values.withUnsafeBufferPointer { v in
            for m in 0..<bands {
                let src = v.baseAddress! + m * width + i, dst = out + m * rowStride
                for (jj, j) in js.enumerated() { dst[jj] = src[j * rows] }
            }
        }
    }
}
