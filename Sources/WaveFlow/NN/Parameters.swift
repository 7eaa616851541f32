import Foundation

// Parameters and their gradients in one contiguous arena each, with named
// views: the optimizer, clipping and checkpoint code are flat loops.

/// One named tensor inside an arena.
public struct ParameterView: Equatable, Sendable {
    public var name: String
    public var shape: [Int]
    public var offset: Int
    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset ..< offset + count }
}

/// Named tensors laid end to end in one allocation (`valueBuffer`), with
/// their gradients in a second of the same layout (`gradBuffer`): the
/// optimizer, clipping, checkpoints and MPI are flat loops over them, and
/// layers read their weights through pointer views (`pointer(_:)`,
/// `gradient(_:)`, or an offset into the buffers) instead of array closures.
///
/// A reference type: the model's flow steps and conditioner share their
/// model's arena. `values` and `grads` are copies (get) and copy-ins (set)
/// for tests and whole-arena moves; hot code uses the buffers.
public final class ParameterSet<T: Real>: @unchecked Sendable {
    public private(set) var views: [ParameterView] = []
    private var index: [String: Int] = [:]
    /// All values, view after view.
    public private(set) var valueBuffer: UnsafeMutableBufferPointer<T>
    /// Gradients, same layout; backward passes accumulate into it.
    public private(set) var gradBuffer: UnsafeMutableBufferPointer<T>

    /// Allocated values (>= count): the buffers grow by doubling, so
    /// building a model of n tensors copies O(total) values, not O(n total).
    private var capacity = 0

    public init() {
        valueBuffer = UnsafeMutableBufferPointer(start: .allocate(capacity: 1), count: 0)
        gradBuffer = UnsafeMutableBufferPointer(start: .allocate(capacity: 1), count: 0)
    }

    deinit {
        if valueOwner == nil { valueBuffer.baseAddress!.deallocate() }
        gradBuffer.baseAddress!.deallocate()
    }

    /// The set whose values this one reads in place (`shareValues(of:)`),
    /// kept alive by this reference; nil when the values are this set's own.
    private var valueOwner: ParameterSet<T>?

    /// Makes this set read and write `other`'s values in place, from now on,
    /// instead of its own (same layout; gradients stay this set's own):
    /// training's shard replicas, which would otherwise copy every weight
    /// before every step. Nothing may add tensors to either set afterwards.
    public func shareValues(of other: ParameterSet<T>) {
        precondition(other.views == views, "shared values need the same layout")
        guard other !== self, valueOwner !== other else { return }
        if valueOwner == nil { valueBuffer.baseAddress!.deallocate() }
        valueOwner = other
        valueBuffer = other.valueBuffer
        capacity = count
    }

    /// Makes room for `total` values in all, so that adding tensors up to
    /// that size allocates nothing more (a model's arena is then exact).
    public func reserve(_ total: Int) {
        guard total > capacity else { return }
        grow(to: total)
    }

    private func grow(to newCapacity: Int) {
        let used = count
        func moved(_ old: UnsafeMutableBufferPointer<T>) -> UnsafeMutableBufferPointer<T> {
            let new = UnsafeMutablePointer<T>.allocate(capacity: max(1, newCapacity))
            new.initialize(from: old.baseAddress!, count: used)
            old.baseAddress!.deallocate()
            return UnsafeMutableBufferPointer(start: new, count: used)
        }
        valueBuffer = moved(valueBuffer)
        gradBuffer = moved(gradBuffer)
        capacity = newCapacity
    }

    /// Appends a zero tensor named `name` (while the model is being built:
    /// the buffers may move, so pointers taken earlier become invalid).
    public func add(_ name: String, _ shape: [Int]) {
        precondition(index[name] == nil, "duplicate parameter \(name)")
        precondition(valueOwner == nil, "\(name) added to a set that shares another's values")
        let v = ParameterView(name: name, shape: shape, offset: count)
        index[name] = views.count
        views.append(v)
        let used = count, needed = used + v.count
        if needed > capacity { grow(to: max(needed, 2 * capacity)) }
        (valueBuffer.baseAddress! + used).initialize(repeating: 0, count: v.count)
        (gradBuffer.baseAddress! + used).initialize(repeating: 0, count: v.count)
        valueBuffer = UnsafeMutableBufferPointer(start: valueBuffer.baseAddress!, count: needed)
        gradBuffer = UnsafeMutableBufferPointer(start: gradBuffer.baseAddress!, count: needed)
    }

    public var count: Int { valueBuffer.count }

    public func view(_ name: String) -> ParameterView {
        guard let i = index[name] else { preconditionFailure("no parameter \(name)") }
        return views[i]
    }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    /// Offset of `name` in the buffers.
    public func offset(_ name: String) -> Int { view(name).offset }

    /// The values of `name`, in place.
    public func pointer(_ name: String) -> UnsafeMutablePointer<T> { valueBuffer.baseAddress! + offset(name) }

    /// The gradient of `name`, in place.
    public func gradient(_ name: String) -> UnsafeMutablePointer<T> { gradBuffer.baseAddress! + offset(name) }

    /// A copy of every value (get); every value replaced by a copy (set).
    public var values: [T] {
        get { Array(valueBuffer) }
        set {
            precondition(newValue.count == count, "\(newValue.count) values for \(count)")
            _ = valueBuffer.update(from: newValue)
        }
    }

    /// A copy of every gradient (get); every gradient replaced (set).
    public var grads: [T] {
        get { Array(gradBuffer) }
        set {
            precondition(newValue.count == count, "\(newValue.count) gradients for \(count)")
            _ = gradBuffer.update(from: newValue)
        }
    }

    /// A copy of one tensor's values.
    public subscript(name: String) -> [T] {
        get { Array(valueBuffer[view(name).range]) }
        set {
            let r = view(name).range
            precondition(newValue.count == r.count, "\(name): \(newValue.count) values for \(r.count)")
            _ = UnsafeMutableBufferPointer(rebasing: valueBuffer[r]).update(from: newValue)
        }
    }

    /// Sets every value from `other` (the same layout).
    public func copyValues(from other: ParameterSet<T>) {
        precondition(other.count == count)
        guard other.valueBuffer.baseAddress != valueBuffer.baseAddress else { return }
        valueBuffer.baseAddress?.update(from: other.valueBuffer.baseAddress!, count: count)
    }

    /// Sets every gradient to zero.
    public func zeroGrad() {
        gradBuffer.baseAddress?.update(repeating: 0, count: count)
    }

    /// The same set in another precision.
    public func converted<U: Real>(to: U.Type) -> ParameterSet<U> {
        let out = ParameterSet<U>()
        for v in views { out.add(v.name, v.shape) }
        for i in 0..<count { out.valueBuffer[i] = U(valueBuffer[i]) }
        return out
    }
}

/// Weight normalisation (Salimans & Kingma): w = g * v / ||v||, with one
/// norm per output channel (the first dimension).
public enum WeightNorm {
    /// w [out, rest] from v [out, rest] and g [out].
    public static func forward<T: Real & SIMDScalar>(v: UnsafePointer<T>, g: UnsafePointer<T>, w: UnsafeMutablePointer<T>,
                                                     out: Int, rest: Int) {
        for o in 0..<out {
            let vo = v + o * rest, wo = w + o * rest
            let scale = g[o] / squaredNorm(vo, count: rest).squareRoot()
            for i in 0..<rest { wo[i] = vo[i] * scale }
        }
    }

    /// Sets dg and dv from dw:
    /// dg = (dw . v) / n,  dv = (g / n) * (dw - (dw . v) / n^2 * v),  n = ||v||.
    public static func backward<T: Real & SIMDScalar>(v: UnsafePointer<T>, g: UnsafePointer<T>, dw: UnsafePointer<T>,
                                                      dv: UnsafeMutablePointer<T>, dg: UnsafeMutablePointer<T>, out: Int, rest: Int) {
        for o in 0..<out {
            let vo = v + o * rest, dwo = dw + o * rest, dvo = dv + o * rest
            let n2 = squaredNorm(vo, count: rest), dot = dotProduct(dwo, vo, count: rest)
            let n = n2.squareRoot()
            let a = g[o] / n, b = dot / n2
            dg[o] = dot / n
            for i in 0..<rest { dvo[i] = a * (dwo[i] - b * vo[i]) }
        }
    }

    /// x . x over `count` values, in eight interleaved partial sums (the
    /// optimizer's passes over every weight were bound by one serial sum).
    static func squaredNorm<T: Real & SIMDScalar>(_ x: UnsafePointer<T>, count: Int) -> T {
        dotProduct(x, x, count: count)
    }

    /// x . y over `count` values, in eight interleaved partial sums, then the tail.
    static func dotProduct<T: Real & SIMDScalar>(_ x: UnsafePointer<T>, _ y: UnsafePointer<T>, count: Int) -> T {
        var acc = SIMD8<T>(repeating: 0)
        let whole = count / 8 * 8
        var i = 0
        while i < whole {
            acc += UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<T>.self) * UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<T>.self)
            i += 8
        }
        var sum = acc.sum()
        while i < count { sum += x[i] * y[i]; i += 1 }
        return sum
    }

    /// Initial (v, g) for a weight w: v = w, g = ||w|| per channel, so the
    /// effective weight starts equal to w.
    public static func initialise<T: Real & SIMDScalar>(from w: [T], out: Int) -> (v: [T], g: [T]) {
        let rest = w.count / out
        let g = w.withUnsafeBufferPointer { wp in
            (0..<out).map { o in squaredNorm(wp.baseAddress! + o * rest, count: rest).squareRoot() }
        }
        return (w, g)
    }
}

/// Adam (Kingma & Ba) with bias correction, over a flat parameter arena.
public struct Adam: Codable, Equatable, Sendable {
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var epsilon = 1e-8
    /// Steps taken so far.
    public var step = 0
    public var m: [Float]
    public var v: [Float]

    public init(count: Int) {
        m = [Float](repeating: 0, count: count)
        v = [Float](repeating: 0, count: count)
    }

    /// One update of `params` by `grads` at learning rate `lr`.
    public mutating func update(_ params: inout [Float], _ grads: [Float], lr: Double) {
        params.withUnsafeMutableBufferPointer { p in grads.withUnsafeBufferPointer { g in update(p, g, lr: lr) } }
    }

    /// One update of the values `params` by `grads` at learning rate `lr`, in place.
    public mutating func update(_ params: UnsafeMutableBufferPointer<Float>, _ grads: UnsafeBufferPointer<Float>, lr: Double) {
        precondition(params.count == m.count && grads.count == m.count)
        step += 1
        let b1 = Float(beta1), b2 = Float(beta2), eps = Float(epsilon)
        let c1 = Float(1 - pow(beta1, Double(step))), c2 = Float(1 - pow(beta2, Double(step)))
        let lrF = Float(lr)
        let p = UnsafeSendable(params.baseAddress!), g = UnsafeSendable(UnsafeMutablePointer(mutating: grads.baseAddress!))
        m.withUnsafeMutableBufferPointer { mb in
            v.withUnsafeMutableBufferPointer { vb in
                let (m, v) = (UnsafeSendable(mb.baseAddress!), UnsafeSendable(vb.baseAddress!))
                // Element by element (a vector kernel where the CPU has one,
                // else a scalar loop: the same operations in the same order,
                // each rounded once), so neither the chunks over the cores nor
                // the kernel change any value.
                let level = VectorKernels.level
                Threads.parallelChunks(params.count) { range in
                    let (p, g, m, v) = (p.p + range.lowerBound, g.p + range.lowerBound, m.p + range.lowerBound, v.p + range.lowerBound)
                    if VectorKernels.adam(p, g, m, v, count: range.count, b1: b1, b2: b2, c1: c1, c2: c2, lr: lrF, eps: eps, level: level) {
                        return
                    }
                    for i in 0..<range.count {
                        m[i] = b1 * m[i] + (1 - b1) * g[i]
                        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                        let mHat = m[i] / c1, vHat = v[i] / c2
                        p[i] -= lrF * mHat / (vHat.squareRoot() + eps)
                    }
                }
            }
        }
    }
}

/// The global L2 norm of `grads`; if it exceeds `maxNorm`, scales them down
/// to it. Returns the norm before clipping.
@discardableResult
public func clipGradientNorm(_ grads: inout [Float], maxNorm: Float) -> Float {
    grads.withUnsafeMutableBufferPointer { clipGradientNorm($0, maxNorm: maxNorm) }
}

/// `clipGradientNorm` on gradients in place.
@discardableResult
public func clipGradientNorm(_ grads: UnsafeMutableBufferPointer<Float>, maxNorm: Float) -> Float {
    // Sums of squares in Float64 over fixed chunks (spread over the cores),
    // then the chunks' sums in order: the same norm on any number of cores.
    guard let base = grads.baseAddress else { return 0 }
    let g = UnsafeSendable(base), size = Threads.chunkSize
    var partial = [Double](repeating: 0, count: (grads.count + size - 1) / size)
    partial.withUnsafeMutableBufferPointer { out in
        let sums = UnsafeSendable(out.baseAddress!)
        Threads.parallelChunks(grads.count) { range in
            // Eight interleaved partial sums (one serial sum was latency-bound), then the tail.
            var acc = SIMD8<Double>(repeating: 0), i = range.lowerBound
            while i + 8 <= range.upperBound {
                let x = SIMD8<Double>(UnsafeRawPointer(g.p + i).loadUnaligned(as: SIMD8<Float>.self))
                acc += x * x
                i += 8
            }
            var s = acc.sum()
            while i < range.upperBound { s += Double(g.p[i]) * Double(g.p[i]); i += 1 }
            sums.p[range.lowerBound / size] = s
        }
    }
    let norm = Float(partial.reduce(0, +).squareRoot())
    if norm > maxNorm && norm.isFinite {
        let k = maxNorm / norm
        Threads.parallelChunks(grads.count) { range in for i in range { g.p[i] *= k } }
    }
    return norm
}
