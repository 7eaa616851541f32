// The conditioner's upsampling layer: ConvTranspose2d(1 -> 1, kernel (3, 2f),
// stride (1, f), padding (1, f/2)) on images [B, H, W] (one channel), giving
// [B, H, W*f]. PyTorch semantics: input (y, x) with tap (i, j) lands on
// output (y - 1 + i, x*f - f/2 + j), dropped when outside.

public struct UpsampleGeometry: Equatable, Sendable {
    /// The stride in width (the upsampling factor); even.
    public var factor: Int
    public var batch: Int, height: Int, width: Int

    public init(factor: Int, batch: Int, height: Int, width: Int) {
        self.factor = factor; self.batch = batch; self.height = height; self.width = width
    }

    public var kernelWidth: Int { 2 * factor }
    public var outWidth: Int { width * factor }
    public var inCount: Int { batch * height * width }
    public var outCount: Int { batch * height * outWidth }
}

public enum ConvTranspose {
    /// Calls body(inIndex, outIndex, tapIndex) for every connection. Direct
    /// loops: with kernel 3 x 2f each output gets at most 6 terms.
    @inline(__always)
    static func forEachTap(_ g: UpsampleGeometry, _ b: Int, _ body: (Int, Int, Int) -> Void) {
        let (h, w, f, wo) = (g.height, g.width, g.factor, g.outWidth)
        for y in 0..<h {
            for x in 0..<w {
                let inIndex = (b * h + y) * w + x
                for i in 0..<3 {
                    let yo = y - 1 + i
                    if yo < 0 || yo >= h { continue }
                    for j in 0..<(2 * f) {
                        let xo = x * f - f / 2 + j
                        if xo < 0 || xo >= wo { continue }
                        body(inIndex, (b * h + yo) * wo + xo, i * 2 * f + j)
                    }
                }
            }
        }
    }

    /// Input column x's run of taps within an output row: its first output
    /// column `lo` (x f - f/2) and the taps j0 ..< j1 of 0 ..< 2f whose
    /// outputs lo + j fall inside the row.
    @inline(__always)
    static func tapRun(_ g: UpsampleGeometry, x: Int) -> (lo: Int, j0: Int, j1: Int) {
        let lo = x * g.factor - g.factor / 2
        return (lo, max(0, -lo), min(2 * g.factor, g.outWidth - lo))
    }

    /// out [B, H, W*f] = convT(input [B, H, W]) + bias. By output row (rows
    /// in parallel), each input value adding its 2f taps to a contiguous
    /// run, in the order `forEachTap` visits them (the same sums, bit for bit).
    public static func forward<T: Real>(_ g: UpsampleGeometry, input: UnsafePointer<T>, weight: UnsafePointer<T>,
                                        bias: T, output: UnsafeMutablePointer<T>) {
        let (h, w, f, wo) = (g.height, g.width, g.factor, g.outWidth)
        Threads.parallelFor(g.batch * h) { row in
            let (b, yo) = (row / h, row % h)
            let out = output + row * wo
            out.update(repeating: bias, count: wo)
            for i in stride(from: 2, through: 0, by: -1) { // input rows y = yo + 1 - i, ascending
                let y = yo + 1 - i
                if y < 0 || y >= h { continue }
                let src = input + (b * h + y) * w, taps = weight + i * 2 * f
                for x in 0..<w {
                    let (lo, j0, j1) = tapRun(g, x: x), v = src[x]
                    if j0 >= j1 { continue }
                    let o = out + lo
                    for j in j0..<j1 { o[j] += v * taps[j] }
                }
            }
        }
    }

    /// dWeight += sum in * dOut, dBias += sum dOut, dInput += adjoint(dOut),
    /// each sum in `forEachTap`'s order (the same values, bit for bit).
    public static func backward<T: Real>(_ g: UpsampleGeometry, input: UnsafePointer<T>, weight: UnsafePointer<T>,
                                         dOutput: UnsafePointer<T>, dWeight: UnsafeMutablePointer<T>,
                                         dBias: UnsafeMutablePointer<T>, dInput: UnsafeMutablePointer<T>?) {
        var db: T = 0
        for i in 0..<g.outCount { db += dOutput[i] }
        dBias[0] += db
        let (h, w, f, wo) = (g.height, g.width, g.factor, g.outWidth)
        for b in 0..<g.batch {
            for y in 0..<h {
                let src = input + (b * h + y) * w, dSrc = dInput.map { $0 + (b * h + y) * w }
                for i in 0..<3 {
                    let yo = y - 1 + i
                    if yo < 0 || yo >= h { continue }
                    let dRow = dOutput + (b * h + yo) * wo, dTaps = dWeight + i * 2 * f, taps = weight + i * 2 * f
                    for x in 0..<w {
                        let (lo, j0, j1) = tapRun(g, x: x), v = src[x]
                        if j0 >= j1 { continue }
                        let d = dRow + lo
                        for j in j0..<j1 { dTaps[j] += v * d[j] }
                        if let dSrc {
                            var s = dSrc[x]
                            for j in j0..<j1 { s += taps[j] * d[j] }
                            dSrc[x] = s
                        }
                    }
                }
            }
        }
    }

    /// The naive twin of `forward`: every connection through `forEachTap`.
    static func forwardNaive<T: Real>(_ g: UpsampleGeometry, input: UnsafePointer<T>, weight: UnsafePointer<T>,
                                      bias: T, output: UnsafeMutablePointer<T>) {
        output.update(repeating: bias, count: g.outCount)
        for b in 0..<g.batch { forEachTap(g, b) { src, dst, tap in output[dst] += input[src] * weight[tap] } }
    }

    /// The naive twin of `backward`.
    static func backwardNaive<T: Real>(_ g: UpsampleGeometry, input: UnsafePointer<T>, weight: UnsafePointer<T>,
                                       dOutput: UnsafePointer<T>, dWeight: UnsafeMutablePointer<T>,
                                       dBias: UnsafeMutablePointer<T>, dInput: UnsafeMutablePointer<T>?) {
        var db: T = 0
        for i in 0..<g.outCount { db += dOutput[i] }
        dBias[0] += db
        for b in 0..<g.batch {
            forEachTap(g, b) { src, dst, tap in
                dWeight[tap] += input[src] * dOutput[dst]
                if let dInput { dInput[src] += weight[tap] * dOutput[dst] }
            }
        }
    }
}
