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

    /// out [B, H, W*f] = convT(input [B, H, W]) + bias.
    public static func forward<T: Real>(_ g: UpsampleGeometry, input: UnsafePointer<T>, weight: UnsafePointer<T>,
                                        bias: T, output: UnsafeMutablePointer<T>) {
        output.update(repeating: bias, count: g.outCount)
        Threads.parallelFor(g.batch) { b in
            forEachTap(g, b) { src, dst, tap in output[dst] += input[src] * weight[tap] }
        }
    }

    /// dWeight += sum in * dOut, dBias += sum dOut, dInput += adjoint(dOut).
    public static func backward<T: Real>(_ g: UpsampleGeometry, input: UnsafePointer<T>, weight: UnsafePointer<T>,
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
