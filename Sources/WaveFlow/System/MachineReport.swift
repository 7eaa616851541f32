import Foundation

/// The "build" line of a build whose CPU is not checked at start.
private var buildWithoutCheck: String {
    #if arch(x86_64)
    "compiled for the WAVEFLOW_MARCH given (an older baseline than x86-64-v3, or a CPU name); no start-up check"
    #else
    "not x86-64: the Swift SIMD code throughout"
    #endif
}

/// What `waveflow info` prints: versions, the BLAS kernel, threads, CPU.
public func machineReport() -> [(String, String)] {
    let cpu = CPUInfo.current
    return [
        ("waveflow", waveflowVersion),
        ("BLAS", BLAS.config),
        ("BLAS core", "\(BLAS.coreName) (\(BLAS.coreSource))"),
        ("threads", "\(Threads.count) (BLAS \(BLAS.threads)) of \(ProcessInfo.processInfo.activeProcessorCount) cores"),
        ("FFTW", fftwVersion),
        ("libsndfile", sndfileVersion),
        ("soxr", soxrVersion),
        ("CPU", "\(cpu.modelName) (\(cpu.vendor), family \(cpu.family), model \(cpu.model))"),
        ("CPU features", cpu.notableFeatures.joined(separator: " ")),
        ("caches", CPUCaches.current.description),
        ("work sizes", "synthesis blocks of \(BlockColumnsChoice.current.columns) columns (\(BlockColumnsChoice.current.source))"),
        ("build", VectorKernels.buildRequiredLevel.map {
            "compiled for x86-64-v\($0) (\($0 == 4 ? "AVX-512" : "AVX2 + FMA"); for an older CPU: WAVEFLOW_MARCH=x86-64-v2, README \"Other CPUs\")"
        } ?? buildWithoutCheck),
        ("elementwise", "\(VectorKernels.level.rawValue) kernels (gate, row sums, bf16 rounding, panel product)"),
        ("winograd", "the width taps of WaveFlow's and WaveGlow's convolutions by F(4,3) with Float32 products (--winograd auto; never with bf16)"),
        ("MPI", MPICommunicator.availability),
        ("bf16", OneDNN.availability),
        ("fp32 dW", "weight-gradient products (long reductions) on \(WeightGradients.description(.fp32))"
            + (FreshOutputs.avx512 && WeightGradients.runOnOneDNN(.fp32) ? "; fresh outputs of short reductions too (AVX-512)" : "")),
    ]
}

/// sgemm throughput in GFLOP/s for C[m,n] = A[m,k] B[k,n] on `threads`
/// BLAS threads: the best of `repeats` timed calls after one warm-up.
public func measureSgemm(m: Int, k: Int, n: Int, threads: Int, repeats: Int = 5, precision: Precision = .fp32) -> Double {
    let a = (0..<(m * k)).map { Float($0 % 13) * 0.01 }
    let b = (0..<(k * n)).map { Float($0 % 7) * 0.01 }
    var c = [Float](repeating: 0, count: m * n)
    let saved = BLAS.threads
    BLAS.threads = threads
    defer { BLAS.threads = saved }
    // With bf16 products the reference is oneDNN's matmul on operands
    // already in bf16 (the rate of the products alone, as the model's
    // synthesis and convolutions use them).
    var a16 = [UInt16](), b16 = [UInt16]()
    let context = ComputeContext(precision: precision)
    let bf16 = context.bf16Products(m, n, k)
    if bf16 {
        a16 = [UInt16](repeating: 0, count: m * k); b16 = [UInt16](repeating: 0, count: k * n)
        BF16Operands.convert(a, count: m * k, into: &a16)
        BF16Operands.convert(b, count: k * n, into: &b16)
    }
    var best = Double.infinity
    for r in 0...repeats {
        let t0 = DispatchTime.now().uptimeNanoseconds
        if bf16 {
            BF16Operands.gemm(context, m: m, n: n, k: k, a: a16, lda: k, b: b16, ldb: n, accumulate: false, c: &c, ldc: n)
        } else {
            Float.gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: a, lda: k, b: b, ldb: n, beta: 0, c: &c, ldc: n)
        }
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        if r > 0 { best = min(best, dt) }
    }
    return 2 * Double(m) * Double(n) * Double(k) / best / 1e9
}
