import Foundation

/// How the numerics run: passed explicitly to the model, the trainer and
/// the synthesiser instead of being read from process-wide variables, so
/// that two callers (say two requests of a service) can use different
/// settings on one loaded model at the same time.
///
/// A context is a value; `Float.product` and the operand choice of the
/// convolutions and of synthesis read it, nothing else does.
public struct ComputeContext: Sendable, Equatable {
    /// The precision of the matrix products. `.bf16` runs bf16 products only
    /// where this CPU and oneDNN can (`OneDNN.bf16`), and fp32 elsewhere:
    /// `effectivePrecision` says which.
    public var precision: Precision
    /// Workers for the model's own splits of work: synthesis column blocks
    /// and training batch shards. (Kernels spread their loops over the
    /// process's pool, `Threads.count`.)
    public var threads: Int
    /// Columns per block in synthesis: the per-row work (row expansion,
    /// products, gate) runs on blocks of this many columns, so its scratch
    /// stays small whatever the duration. 1024 keeps a block's products and
    /// gate in a 1 MB L2: 30 s of h16-c64 went from 19.0-21.1k (4096) to
    /// 25.6k samples/s in bf16 (512: 23.8k), with 4 s unchanged. The default
    /// scales that with this machine's L2 (`defaultSynthesisBlockColumns`).
    public var synthesisBlockColumns: Int
    /// Whether Float32 weight-gradient products (and fresh outputs of short
    /// reductions on AVX-512) may run on oneDNN's f32 matmul (see
    /// `WeightGradients`, `FreshOutputs`); from `WAVEFLOW_WEIGHT_GRADIENTS`.
    public var weightGradientsOnOneDNN: Bool
    /// Whether WaveGlow synthesis may fold the upsampler into each flow's
    /// condition projection (`ConditionFolding`); other families ignore it.
    public var conditionFolding: ConditionFolding = .auto
    /// Whether WaveFlow synthesis and training compute their width
    /// convolutions with Winograd's F(4, 3) (`WidthWinograd`) where the
    /// operands are Float32 or Float64 (never bf16: the transforms would
    /// magnify bf16's rounding).
    public var widthWinograd: WinogradPolicy = .auto

    /// - Parameters:
    ///   - precision: `.fp32` (the reference) or `.bf16`.
    ///   - threads: workers for synthesis blocks and training shards (default: the process pool).
    public init(precision: Precision = .fp32, threads: Int? = nil,
                synthesisBlockColumns: Int = ComputeContext.defaultSynthesisBlockColumns,
                weightGradientsOnOneDNN: Bool = WeightGradients.allowedByEnvironment) {
        self.precision = precision
        self.threads = max(1, threads ?? Threads.count)
        self.synthesisBlockColumns = max(1, synthesisBlockColumns)
        self.weightGradientsOnOneDNN = weightGradientsOnOneDNN
    }

    /// The synthesis block for this machine (``BlockColumnsChoice``):
    /// `WAVEFLOW_BLOCK_COLUMNS` if set, else the width `waveflow info --tune`
    /// measured fastest on this machine, else 1024 columns per MB of L2
    /// (measured best on a 1 MB L2), a multiple of 128 from 256 to 4096;
    /// 1024 where the L2 is unknown.
    public static var defaultSynthesisBlockColumns: Int { BlockColumnsChoice.current.columns }

    /// 1024 columns per MB of L2, a multiple of 128 in 256...4096.
    public static func blockColumns(forL2 l2: Int?) -> Int {
        guard let l2, l2 > 0 else { return 1024 }
        return min(4096, max(256, 1024 * l2 / (1 << 20) / 128 * 128))
    }

    /// Float32 products on OpenBLAS (weight gradients on oneDNN where it
    /// loads), every core of the process pool.
    public static var fp32: ComputeContext { ComputeContext(precision: .fp32) }

    /// The same context with another precision.
    public func with(precision p: Precision) -> ComputeContext {
        var c = self
        c.precision = p
        return c
    }

    /// Whether a product of these sizes (every one at least 16) takes bf16
    /// operands in this context: bf16 asked for and oneDNN's bf16 matmul
    /// available. Smaller products gain nothing and stay Float32.
    @inlinable
    public func bf16Products(_ sizes: Int...) -> Bool { bf16Products(sizes) }

    @inlinable
    public func bf16Products(_ sizes: [Int]) -> Bool {
        guard precision == .bf16, sizes.allSatisfy({ $0 >= 16 }), case .success = OneDNN.bf16 else { return false }
        return true
    }

    /// The same context with another condition-folding policy.
    public func with(conditionFolding f: ConditionFolding) -> ComputeContext {
        var c = self
        c.conditionFolding = f
        return c
    }

    /// The same context with another Winograd policy.
    public func with(widthWinograd p: WinogradPolicy) -> ComputeContext {
        var c = self
        c.widthWinograd = p
        return c
    }

    /// The precision products really run in: `.bf16` only where it is available.
    public var effectivePrecision: Precision {
        if precision == .bf16, case .success = OneDNN.bf16 { return .bf16 }
        return .fp32
    }
}

/// When WaveGlow synthesis folds the ConvTranspose1d upsampler into each
/// flow's condition projection (`WaveGlowConditionFold`): half the
/// projection's multiply-adds and no upsampler per synthesis, for a one-time
/// fold that costs as much as synthesising about 7 s of audio and memory of
/// `n_flows * 2CL * hop/G * (4M + 1)` values (252 MB for wg-c32; never above
/// `ConditionFoldSize.memoryLimit`). The fold is kept with the model and
/// rebuilt when its weights change.
public enum ConditionFolding: String, Sendable, Equatable, CaseIterable {
    /// Fold when a valid fold is already kept, or this utterance alone is
    /// long enough to pay for building one (a one-off `synth`).
    case auto
    /// Fold whenever the memory limit allows (a service, batch vocoding,
    /// `bench`: many utterances from one loaded model).
    case always
    /// Never fold (the reference path).
    case never
}

/// Where WaveFlow computes a layer's kernel-3 width convolution by
/// Winograd's F(4, 3) (`WidthWinograd`), in synthesis and training: half the
/// multiply-adds of the direct products, the same numbers up to float
/// rounding. Only for Float32 and Float64 operands.
public enum WinogradPolicy: String, Sendable, Equatable, CaseIterable {
    /// Layers whose tiles fit their column blocks or rows (at most 60% more
    /// outputs computed than the block's: `WidthWinograd.pays`).
    case auto
    /// Every layer, however many outputs its tiles drop (the tests).
    case always
    /// Never: the direct products (the reference path).
    case never

    /// Whether a convolution of width dilation `dilation` over blocks (or
    /// rows) of `columns` columns runs by Winograd under this policy.
    public func applies(dilation: Int, columns: Int) -> Bool {
        switch self {
        case .never: return false
        case .always: return true
        case .auto: return WidthWinograd.pays(dilation: dilation, columns: columns)
        }
    }
}
