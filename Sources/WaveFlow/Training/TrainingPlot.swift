import Foundation

/// An SVG picture of training and validation NLL against steps, drawn from
/// a run's `metrics.jsonl`.
public enum TrainingPlot {
    public static func write(metrics path: String, to svgPath: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        var train: [(Double, Double)] = [], val: [(Double, Double)] = []
        for line in text.split(separator: "\n") {
            guard let o = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any],
                  let step = o["step"] as? Double ?? (o["step"] as? Int).map(Double.init) else { continue }
            if let v = o["val_nll"] as? Double { val.append((step, v)) }
            if let l = o["loss"] as? Double, l.isFinite { train.append((step, l)) }
        }
        // Smooth the training curve (mean over windows of 20 steps).
        var smooth: [(Double, Double)] = []
        let window = 20
        var i = 0
        while i < train.count {
            let chunk = train[i ..< min(train.count, i + window)]
            smooth.append((chunk.map(\.0).reduce(0, +) / Double(chunk.count), chunk.map(\.1).reduce(0, +) / Double(chunk.count)))
            i += window
        }
        let all = smooth + val
        guard !all.isEmpty else { return }
        let (w, h, pad) = (640.0, 400.0, 50.0)
        let xMax = max(1, all.map(\.0).max()!)
        var yMin = all.map(\.1).min()!, yMax = all.map(\.1).max()!
        if yMax - yMin < 1e-6 { yMax += 0.5; yMin -= 0.5 }
        func px(_ p: (Double, Double)) -> String {
            String(format: "%.1f,%.1f", pad + (w - 2 * pad) * p.0 / xMax, h - pad - (h - 2 * pad) * (p.1 - yMin) / (yMax - yMin))
        }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <line x1="\(pad)" y1="\(h - pad)" x2="\(w - pad)" y2="\(h - pad)" stroke="black"/>
        <line x1="\(pad)" y1="\(pad)" x2="\(pad)" y2="\(h - pad)" stroke="black"/>
        <text x="\(w / 2)" y="\(h - 15)" text-anchor="middle">step (max \(Int(xMax)))</text>
        <text x="10" y="\(pad - 10)">NLL, nats/sample: \(String(format: "%.3f", yMin)) .. \(String(format: "%.3f", yMax))</text>
        <text x="\(w - 200)" y="\(pad)" fill="steelblue">training (mean of 20 steps)</text>
        <text x="\(w - 200)" y="\(pad + 16)" fill="darkorange">validation</text>

        """
        if smooth.count > 1 { svg += "<polyline fill=\"none\" stroke=\"steelblue\" points=\"\(smooth.map(px).joined(separator: " "))\"/>\n" }
        if val.count > 1 { svg += "<polyline fill=\"none\" stroke=\"darkorange\" stroke-width=\"2\" points=\"\(val.map(px).joined(separator: " "))\"/>\n" }
        for p in val { let c = px(p).split(separator: ","); svg += "<circle cx=\"\(c[0])\" cy=\"\(c[1])\" r=\"3\" fill=\"darkorange\"/>\n" }
        svg += "</svg>\n"
        try AtomicFile.write(Data(svg.utf8), to: svgPath)
    }
}
