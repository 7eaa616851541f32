import Foundation

/// Release-mode measurements: throughput, real-time factor, GFLOP/s and that
/// as a share of the sgemm rate measured in the same run.
public enum Benchmark {
    public struct Row {
        public var preset: String, phase: String
        public var samplesPerSecond: Double, realTimeFactor: Double, gflops: Double, sgemmShare: Double
        public var peakMemoryMB: Double
    }

    /// Peak resident memory of this process so far, in MB.
    public static var peakMemoryMB: Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }

    /// sgemm GFLOP/s on the shape of a model's dilated convolution
    /// ([2C, 9C] x [9C, n]) with the process's threads; for bf16, oneDNN's bf16 matmul on rounded operands.
    public static func sgemmRate(channels c: Int, n: Int, precision: Precision) -> Double {
        measureSgemm(m: 2 * c, k: 9 * c, n: n, threads: Threads.count, repeats: 10, precision: precision)
    }

    /// sgemm GFLOP/s on the shape of `config`'s main product over `columns`,
    /// as `sgemmRate(channels:n:precision:)`: WaveFlow's dilated 2-D
    /// convolution [2C, 9C] x [9C, n]; WaveGlow's condition projection
    /// [2CL, n_mels G] x [n_mels G, n] (most of its multiply-adds; its
    /// [2C, 3C] convolution is too small a shape to stand for the machine,
    /// above all in bf16).
    public static func sgemmRate(_ config: ModelConfig, columns n: Int, precision: Precision) -> Double {
        let c = config.channels
        if config.isWaveGlow {
            return measureSgemm(m: 2 * c * config.nLayers, k: config.mel.nMels * config.nGroup, n: n,
                                threads: Threads.count, repeats: 10, precision: precision)
        }
        return measureSgemm(m: 2 * c, k: 9 * c, n: n, threads: Threads.count, repeats: 10, precision: precision)
    }

    /// Wall time of the fastest of `repeats` runs of `body` (after one warm-up).
    public static func time(repeats: Int, _ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        for _ in 0..<repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        }
        return best
    }

    /// One residual layer (C, h-1 rows, w columns, batch B): forward and
    /// backward seconds and the multiply-adds performed, on random data.
    public static func residualLayer(channels c: Int, h: Int, width w: Int, batch: Int, mels m: Int = 80, context: ComputeContext)
        -> (forward: Double, backward: Double, macs: Double) {
        var cfg = ModelConfig(); cfg.channels = c; cfg.nGroup = h; cfg.nFlows = 2; cfg.nLayers = 1
        let model = FlowModel<Float>(config: cfg)
        model.initialise(seed: 1)
        var rng = SplitMix64(seed: 2)
        let n = batch * (h - 1) * w
        let xin = (0..<n).map { _ in Float(rng.uniform(-1, 1)) }
        let cin = (0..<(m * n)).map { _ in Float(rng.uniform(-1, 1)) }
        let step = model.coupling(0)!
        var cache: WaveFlowCoupling<Float>.NetworkCache?
        let fwd = time(repeats: 3) {
            cache = step.network(xin: xin, cin: cin, batch: batch, height: h - 1, width: w, keepCache: true,
                                  context: context).cache
        }
        let dp = [Float](repeating: 0.01, count: 2 * n)
        let bwd = time(repeats: 3) { _ = step.networkBackward(cache: cache!, dp: dp, context: context) }
        // By Winograd (Float32 products), the 3x3 convolution performs a share of its multiply-adds.
        let shape = step.convShape(layer: 0, batch: batch, height: h - 1, width: w)
        let saved = context.effectivePrecision == .fp32 && CausalConv.usesWinograd(shape, context)
            ? Double(2 * c * c * 9) * (1 - WidthWinograd.Tiling(dilation: shape.dw, columns: w).macShare) : 0
        return (fwd, bwd, (Double(cfg.macsPerPositionPerFlow) - saved) * Double(n))
    }

    /// Training throughput of `config` at batch x segment: the fastest of
    /// `repeats` whole optimizer steps after a warm-up, FLOPs counted as
    /// three forward passes (forward, and the backward's weight and input
    /// products).
    public static func training(_ config: ModelConfig, batch: Int, segment: Int, repeats: Int = 2, context: ComputeContext) -> (samplesPerSecond: Double, gflops: Double) {
        let model = FlowModel<Float>(config: config)
        model.initialise(seed: 1)
        var o = TrainOptions(); o.batch = batch; o.segment = segment
        let trainer = Trainer(model: model, options: o, runFolder: NSTemporaryDirectory(), context: context)
        var rng = SplitMix64(seed: 3)
        let frames = segment / config.hopLength
        let b = Batch(audio: (0..<(batch * segment)).map { _ in Float(0.1 * rng.normal()) },
                      mel: (0..<(batch * config.nMels * frames)).map { _ in Float(rng.uniform(-8, 0)) },
                      batch: batch, frames: frames)
        // A whole step: forward, backward, weight-norm chain rule, clipping, Adam.
        let t = time(repeats: repeats) { _ = try? trainer.trainStep(b) }
        let samples = Double(batch * segment)
        // Forward, then the backward's two products per layer (weights, inputs),
        // less what the Winograd convolutions save in each of the three.
        var macs = config.performedMacsPerSample
        if context.effectivePrecision == .fp32 {
            let width = segment / config.nGroup
            macs -= config.winogradSavedMacsPerSample(blocks: [width]) {
                context.widthWinograd.applies(dilation: $0, columns: width)
            }
        }
        let flops = 3 * 2 * macs * samples
        return (samples / t, flops / t / 1e9)
    }

    /// Synthesis of `seconds` of audio from a random mel (the fastest of
    /// `repeats` runs after a warm-up); FLOPs counted as the multiply-adds it
    /// performs (WaveFlow's Winograd layers counted as such). For WaveGlow
    /// with `context.conditionFolding` allowing it,
    /// the fold is built first, timed on its own (`foldSeconds`, nil when
    /// not folded), and the FLOPs are the folded path's.
    public static func synthesis(_ config: ModelConfig, seconds: Double, repeats: Int = 2, context: ComputeContext)
        -> (samplesPerSecond: Double, gflops: Double, foldSeconds: Double?) {
        let model = FlowModel<Float>(config: config)
        model.initialise(seed: 1)
        var rng = SplitMix64(seed: 4)
        let frames = Int(seconds * Double(config.sampleRate)) / config.hopLength
        let mel = (0..<(config.nMels * frames)).map { _ in Float(rng.uniform(-8, 0)) }
        let z = Synthesizer.noise(count: frames * config.hopLength, sigma: 0.7, seed: 1)
        var macs = config.performedMacsPerSample, foldSeconds: Double?
        if let up = model.conditioner as? WaveGlowUpsampler<Float> {
            let t0 = DispatchTime.now().uptimeNanoseconds
            if up.foldForSynthesis(columns: frames * config.hopLength / config.nGroup, context: context) != nil {
                foldSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
                macs -= up.foldSources.size.savedMacsPerSample
            }
        }
        if context.effectivePrecision == .fp32 { // Float32 products: the Winograd layers
            let columns = frames * config.hopLength / config.nGroup
            let widths: [Int]
            if let glow = model.steps.lazy.compactMap({ $0 as? WaveGlowCoupling<Float> }).first {
                // WaveGlow's column blocks (their halos are not counted, as elsewhere).
                widths = WaveGlowCoupling<Float>.columnBlocks(width: columns, count: glow.inverseBlocks(width: columns, context: context))
                    .map(\.count)
            } else {
                let bounds = context.synthesisBlockBounds(width: columns)
                widths = (0 ..< bounds.count - 1).map { bounds[$0 + 1] - bounds[$0] }
            }
            macs -= config.winogradSavedMacsPerSample(blocks: widths) {
                context.widthWinograd.applies(dilation: $0, columns: widths.min() ?? 0)
            }
        }
        let t = time(repeats: repeats) { _ = model.synthesise(mel: mel, frames: frames, z: z, context: context) }
        let samples = Double(frames * config.hopLength)
        return (samples / t, 2 * macs * samples / t / 1e9, foldSeconds)
    }
}
