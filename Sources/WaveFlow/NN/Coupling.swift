import Foundation

// The affine coupling of one flow (MODEL-SPEC section 5) and the Gaussian
// likelihood (section 7). Rows are the autoregressive axis; one "row" of a
// batch is B*w values. X, Z: [B, h, w] (one channel).

public enum AffineCoupling {
    /// Z row 0 = X row 0; Z rows 1..h-1 = X * exp(logS) + t.
    /// logS, t: [B, h-1, w]. Returns the log-determinant per batch item.
    public static func forward<T: Real>(x: UnsafePointer<T>, logS: UnsafePointer<T>, t: UnsafePointer<T>,
                                        z: UnsafeMutablePointer<T>, batch: Int, h: Int, w: Int) -> [T] {
        var logdet = [T](repeating: 0, count: batch)
        for b in 0..<batch {
            let xb = x + b * h * w, zb = z + b * h * w
            let sb = logS + b * (h - 1) * w, tb = t + b * (h - 1) * w
            zb.update(from: xb, count: w)
            var ld: T = 0
            for i in 0 ..< (h - 1) * w {
                zb[w + i] = xb[w + i] * T.exp(sb[i]) + tb[i]
                ld += sb[i]
            }
            logdet[b] = ld
        }
        return logdet
    }

    /// Given dZ and dLogdet (per batch item), writes dLogS, dT and
    /// overwrites dX with the coupling's direct contribution.
    public static func backward<T: Real>(x: UnsafePointer<T>, logS: UnsafePointer<T>, dZ: UnsafePointer<T>,
                                         dLogdet: [T], dX: UnsafeMutablePointer<T>, dLogS: UnsafeMutablePointer<T>,
                                         dT: UnsafeMutablePointer<T>, batch: Int, h: Int, w: Int) {
        for b in 0..<batch {
            let xb = x + b * h * w, dzb = dZ + b * h * w, dxb = dX + b * h * w
            let sb = logS + b * (h - 1) * w
            let dsb = dLogS + b * (h - 1) * w, dtb = dT + b * (h - 1) * w
            dxb.update(from: dzb, count: w)
            for i in 0 ..< (h - 1) * w {
                let e = T.exp(sb[i])
                dxb[w + i] = dzb[w + i] * e
                dsb[i] = dzb[w + i] * xb[w + i] * e + dLogdet[b]
                dtb[i] = dzb[w + i]
            }
        }
    }

    /// The inverse of one row: x = (z - t) * exp(-logS), over `count` values.
    @inlinable public static func inverseRow<T: Real>(z: UnsafePointer<T>, logS: UnsafePointer<T>, t: UnsafePointer<T>,
                                                      x: UnsafeMutablePointer<T>, count: Int) {
        for i in 0..<count { x[i] = (z[i] - t[i]) * T.exp(-logS[i]) }
    }
}

public enum GaussianNLL {
    /// log(2*pi)/2.
    public static let halfLog2Pi = 0.5 * Foundation.log(2 * Double.pi)

    /// Negative log-likelihood in nats per sample of each batch item:
    /// -(sum(-z^2/2 - log(2 pi)/2) + logdet) / count, z: [B, count].
    public static func perSample<T: Real>(z: UnsafePointer<T>, logdet: [T], batch: Int, count: Int) -> [T] {
        (0..<batch).map { b in
            var s: T = 0
            let zb = z + b * count
            for i in 0..<count { s += zb[i] * zb[i] }
            let logp = -s / 2 - T(halfLog2Pi) * T(count) + logdet[b]
            return -logp / T(count)
        }
    }

    /// Gradients of the batch mean of `perSample`: dz = z / (B*count);
    /// dLogdet = -1 / (B*count) per item.
    public static func backward<T: Real>(z: UnsafePointer<T>, dZ: UnsafeMutablePointer<T>, batch: Int, count: Int) -> [T] {
        let scale = 1 / T(batch * count)
        for i in 0 ..< batch * count { dZ[i] = z[i] * scale }
        return [T](repeating: -scale, count: batch)
    }
}
