import XCTest
@testable import WaveFlow

/// Central finite differences in Float64: (f(x+eps) - f(x-eps)) / 2eps.
enum GradientCheck {
    /// Step for central differences on O(1) values in Float64: rounding
    /// error ~ 1e-16 |f| / eps and truncation error ~ eps^2 |f'| both
    /// stay near 1e-10.
    static let eps = 1e-5
    /// Allowed relative error between analytic and numeric gradients.
    static let tolerance = 1e-6
    /// Gradients smaller than this are compared absolutely (relative error
    /// of a near-zero quantity is noise).
    static let absoluteFloor = 1e-4

    /// Compares `analytic[i]` with the numeric derivative of `loss` with
    /// respect to `x[i]`, for the given indices (all by default).
    static func check(_ x: inout [Double], analytic: [Double], indices: [Int]? = nil, label: String,
                      file: StaticString = #filePath, line: UInt = #line, loss: ([Double]) -> Double) {
        var worst = 0.0
        for i in indices ?? Array(x.indices) {
            let saved = x[i]
            x[i] = saved + eps; let up = loss(x)
            x[i] = saved - eps; let down = loss(x)
            x[i] = saved
            let numeric = (up - down) / (2 * eps)
            let err = abs(numeric - analytic[i]) / max(abs(numeric), absoluteFloor)
            worst = max(worst, err)
            if err > tolerance {
                XCTFail("\(label)[\(i)]: analytic \(analytic[i]) vs numeric \(numeric)", file: file, line: line)
                return
            }
        }
        XCTAssertLessThanOrEqual(worst, tolerance, label, file: file, line: line)
    }

    /// Up to `n` indices spread over 0..<count (all of them when count <= n).
    static func sample(_ count: Int, _ n: Int, seed: UInt64 = 1) -> [Int] {
        if count <= n { return Array(0..<count) }
        var rng = TestRNG(seed)
        return (0..<n).map { _ in Int(rng.next() % UInt64(count)) }
    }
}

/// sum(a * b).
func dot(_ a: [Double], _ b: [Double]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } }

extension GradientCheck {
    /// Checks a few entries of every tensor of `model`'s batch-mean NLL
    /// gradient (its backward pass) against central differences.
    static func checkModel(_ model: FlowModel<Double>, audio x: [Double], mel: [Double], batch: Int, frames: Int, label: String,
                           context: ComputeContext = .fp32, file: StaticString = #filePath, line: UInt = #line) {
        func loss(_ p: [Double]) -> Double {
            model.params.values = p
            return model.forward(audio: x, mel: mel, batch: batch, frames: frames, keepCache: false, context: context)
                .nll.reduce(0, +) / Double(batch)
        }
        let p0 = model.params.values
        model.params.zeroGrad()
        model.backward(model.forward(audio: x, mel: mel, batch: batch, frames: frames, context: context), context: context)
        let analytic = model.params.grads
        var p = p0
        var indices: [Int] = []
        for v in model.params.views {
            indices += sample(v.count, 4, seed: UInt64(v.offset + 1)).map { v.offset + $0 }
        }
        check(&p, analytic: analytic, indices: indices, label: label, file: file, line: line) { loss($0) }
        model.params.values = p0
    }

    /// log|det dz/dx| of `model` at audio `x` (one item), from a Jacobian
    /// built column by column with central differences.
    static func bruteForceLogDet(_ model: FlowModel<Double>, audio x: [Double], mel: [Double], frames: Int) -> Double {
        let t = x.count
        var jac = [Double](repeating: 0, count: t * t)
        let eps = 1e-6
        for j in 0..<t {
            var xp = x, xm = x
            xp[j] += eps; xm[j] -= eps
            let zp = model.forward(audio: xp, mel: mel, batch: 1, frames: frames, keepCache: false, context: .fp32).z
            let zm = model.forward(audio: xm, mel: mel, batch: 1, frames: frames, keepCache: false, context: .fp32).z
            for i in 0..<t { jac[i * t + j] = (zp[i] - zm[i]) / (2 * eps) }
        }
        return logAbsDeterminant(jac, t)
    }
}
