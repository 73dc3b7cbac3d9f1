import ArgumentParser
import Foundation
import Logging
import Manager
import Synchronization

/// `--log-level` and `--log-format` of the long-running commands (`witness run`, `node run`).
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(help: ArgumentHelp("text (default): one readable line per message; json: one JSON object per line (time, level, label, message, metadata, source).", valueName: "text|json"))
    var logFormat: String = "text"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown log level \(logLevel); use one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format must be text or json, not \(logFormat)") }
    }

    /// Sets up logging to standard error, once per process, and returns the command's logger.
    func bootstrap(label: String) -> Logger {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            if json { return JSONLogHandler(label: label, logLevel: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}

/// A swift-log handler that writes each message as one JSON object on standard error, for log
/// collectors: `{"time", "level", "label", "message", "metadata", "source"}`.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, logLevel: Logger.Level) {
        self.label = label
        self.logLevel = logLevel
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    struct Line: Encodable {
        var time: String
        var level: String
        var label: String
        var message: String
        var metadata: [String: String]
        var source: String
    }

    /// One writer at a time, so that lines from different threads never interleave.
    private static let output = Mutex(())

    func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let line = Line(
            time: formatter.string(from: Date()), level: event.level.rawValue, label: label, message: event.message.description,
            metadata: merged.mapValues { "\($0)" }, source: event.source)
        let text = JSONDocument.line(line) + "\n"
        Self.output.withLock { _ in FileHandle.standardError.write(Data(text.utf8)) }
    }
}
