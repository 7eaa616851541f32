/// The tool's version.
public let waveflowVersion = "0.1.0"
