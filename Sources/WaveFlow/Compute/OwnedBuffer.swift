import Foundation

/// An owned, fixed-size buffer (scratch and caches that outlive a call).
final class OwnedBuffer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    let count: Int
    /// Whether `pointer` came from calloc (freed with free).
    private let zeroed: Bool

    /// `count` values, all `value`. Zeros of a plain type come from calloc:
    /// memory fresh from the kernel (every large buffer) is zero already,
    /// so it is not written twice.
    init(repeating value: T, count: Int) {
        self.count = count
        if _isPOD(T.self), withUnsafeBytes(of: value, { $0.allSatisfy { $0 == 0 } }),
           let p = calloc(max(1, count), MemoryLayout<T>.stride) {
            pointer = p.bindMemory(to: T.self, capacity: max(1, count))
            zeroed = true
            return
        }
        zeroed = false
        pointer = .allocate(capacity: max(1, count))
        pointer.initialize(repeating: value, count: count)
    }

    /// `count` values left unset, for scratch that the caller writes
    /// completely before reading it (a product's output with beta 0, a
    /// copy's destination): no pass of zeros over memory about to be
    /// overwritten. Plain values only (Float, Double).
    init(unsetCount count: Int) {
        precondition(_isPOD(T.self), "unset buffers hold plain values only")
        self.count = count
        zeroed = false
        pointer = .allocate(capacity: max(1, count))
    }

    /// A copy of `count` values at `source`.
    init(copying source: UnsafePointer<T>, count: Int) {
        self.count = count
        zeroed = false
        pointer = .allocate(capacity: max(1, count))
        pointer.initialize(from: source, count: count)
    }

    deinit {
        if zeroed { free(pointer) } else { pointer.deallocate() }
    }

    var array: [T] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}
