import Foundation

// The pieces a flow model is made of (MODEL-SPEC sections 3-8, 12): a
// conditioner that turns the mel into a sample-rate condition, an ordered
// list of invertible steps on the squeezed grid, and a prior on the last
// step's output. `FlowModel` composes them; a family (`ModelFamily`) says
// which pieces, in which order, with which parameters.
//
// Grid layout (both families): audio [B, T'] is squeezed into X [B, h, w]
// with X[b, i, j] = x[b, j*h + i] (h = n_group, w = T'/h); the condition
// c [B, M, cw] into Cd [M, B, h, w] the same way. WaveGlow's channels are
// the grid's rows.

/// The shape of the squeezed grid: X [batch, rows, width].
public struct GridShape: Equatable, Sendable {
    public var batch: Int, rows: Int, width: Int
    public init(batch: Int, rows: Int, width: Int) { (self.batch, self.rows, self.width) = (batch, rows, width) }
    /// batch * rows * width.
    public var count: Int { batch * rows * width }
}

/// What one step's forward pass returns.
public struct StepForward<T: Real> {
    /// Z [B, h, w].
    public var output: [T]
    /// log |det dZ/dX| per batch item.
    public var logdet: [T]
    /// The same per column, [B, w] (only when asked for: chunked scoring); else empty.
    public var columnLogdet: [T]
    /// What the step's backward pass needs (only with `keepCache`); the step's own type.
    var cache: Any?
}

/// One invertible, mel-conditioned step X -> Z on the grid.
///
/// A step's parameters are tensors of its model's `ParameterSet` under the
/// step's name prefix (`flows.3.`); it reads them through the arena's
/// buffers and accumulates its gradients there. A step holds nothing that
/// changes after `init`, so one model serves several threads at once.
public protocol FlowStep<Scalar>: AnyObject, Sendable {
    associatedtype Scalar: Real
    /// The prefix of the step's tensors in the arena ("" if it has none).
    var name: String { get }
    /// Z and its log-determinant from X [B, h, w] and the condition Cd [M, B, h, w].
    func forward(_ x: [Scalar], condition cd: [Scalar], grid: GridShape, keepCache: Bool, columnLogdet: Bool,
                 context: ComputeContext) -> StepForward<Scalar>
    /// dX from dZ and dLogdet (per batch item) for the forward pass `f`
    /// (made with `keepCache`); adds the condition's gradient to
    /// `dCondition` [M, B, h, w] and the parameters' to the arena.
    func backward(_ f: StepForward<Scalar>, dOutput dZ: [Scalar], dLogdet: [Scalar], dCondition: inout [Scalar],
                  grid: GridShape, context: ComputeContext) -> [Scalar]
    /// X [h, w] from Z [h, w] for one utterance (B = 1), with the condition
    /// rows computed on demand: the step's fast inverse.
    func inverse(_ z: [Scalar], condition: any ConditionRows<Scalar>, width: Int, context: ComputeContext) -> [Scalar]
    /// The inverse by the simplest correct method, from the whole condition
    /// Cd [M, 1, h, w]: the tests' oracle for `inverse`.
    func inverseNaive(_ z: [Scalar], condition cd: [Scalar], width: Int, context: ComputeContext) -> [Scalar]
}

/// The condition of one utterance for synthesis, one grid row at a time:
/// row i is c[m, j*h + i] for every band m and column j.
public protocol ConditionRows<Scalar> {
    associatedtype Scalar: Real
    /// M, the condition's channels.
    var bands: Int { get }
    /// Columns `js` of row i into `out` [M, js.count] with row stride `rowStride`.
    func row(_ i: Int, columns js: Range<Int>, into out: UnsafeMutablePointer<Scalar>, rowStride: Int)
}

/// Turns the mel into the sample-rate condition the steps read.
public protocol Conditioner<Scalar>: AnyObject, Sendable {
    associatedtype Scalar: Real
    /// c [B, M, F*hop] from mel [B, M, F], and what `backward` needs.
    func forward(mel: [Scalar], batch: Int, frames: Int) -> (condition: [Scalar], cache: Any)
    /// Accumulates the parameters' gradients from dc [B, M, F*hop].
    func backward(mel: [Scalar], cache: Any, dCondition: [Scalar])
    /// The condition of mel [M, F] (B = 1) as grid rows of `rows` (h), for
    /// synthesis in `context` (which may choose a faster form of it that the
    /// family's steps read directly).
    func synthesisCondition(mel: [Scalar], frames: Int, rows: Int, context: ComputeContext) -> any ConditionRows<Scalar>
}

/// The standard normal prior on z and the likelihood (MODEL-SPEC section 7):
/// NLL = -(sum log N(z; 0, 1) + log-det) / T', per batch item.
public struct StandardNormalPrior: Sendable {
    public init() {}

    /// NLL in nats per sample of each batch item, z [B, count].
    public func nll<T: Real>(z: [T], logdet: [T], batch: Int, count: Int) -> [T] {
        GaussianNLL.perSample(z: z, logdet: logdet, batch: batch, count: count)
    }

    /// dz of the batch-mean NLL (written to `dZ`) and dLogdet per item.
    public func backward<T: Real>(z: [T], dZ: inout [T], batch: Int, count: Int) -> [T] {
        GaussianNLL.backward(z: z, dZ: &dZ, batch: batch, count: count)
    }
}
