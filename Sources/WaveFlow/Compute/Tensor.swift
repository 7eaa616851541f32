import Foundation

/// A dense Float32 tensor: a shape and its row-major values. The one tensor
/// type of the project: `.npy` files (`NPYArray` is this type) and
/// safetensors checkpoints read and write it.
public struct Tensor: Equatable, Sendable {
    /// `[n]`, `[rows, cols]`, or any rank (safetensors).
    public var shape: [Int]
    /// Row-major values, `shape.reduce(1, *)` of them.
    public var values: [Float]

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape does not match value count")
        self.shape = shape
        self.values = values
    }

    /// The transpose of a 2-D tensor.
    public func transposed() -> Tensor {
        precondition(shape.count == 2)
        let (r, c) = (shape[0], shape[1])
        // No values, no loop: a shape like [2^62, 0] read from a file must not
        // spin through 2^62 empty rows (found by the npy fuzz target).
        if values.isEmpty { return Tensor(shape: [c, r], values: []) }
        var out = [Float](repeating: 0, count: values.count)
        for i in 0..<r { for j in 0..<c { out[j * r + i] = values[i * c + j] } }
        return Tensor(shape: [c, r], values: out)
    }
}
