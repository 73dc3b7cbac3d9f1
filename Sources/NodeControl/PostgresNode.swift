import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One PostgreSQL instance on this host, supervised as a direct child of this process.
///
/// Postgres is started through `setpriv` with a parent-death signal (SIGKILL), so it dies
/// with the process that started it (DESIGN §5 rule 2); as root, `setpriv` also drops to the
/// postgres OS user. Every operation is idempotent where it can be and throws a
/// `NodeControlError` that carries the failing command's output tail.
public final class PostgresNode: Sendable {
    public let configuration: PostgresNodeConfiguration
    private let child = Mutex<ChildProcess?>(nil)
    /// The observations' connection, kept between them: a new one each time cost postgres a
    /// backend (a fork) and the manager a connection setup, twice a second.
    let observationConnection = Mutex<KeptConnection?>(nil)
    /// Called when a postmaster this node started ends (`onPostmasterExit`).
    private let exitHandler = Mutex<(@Sendable () -> Void)?>(nil)
    /// The parameters managed through the log (`pgquorum pg set`), as last given; nil until
    /// then (the file in the data directory is left as it is).
    let managedParameters = Mutex<[String: String]?>(nil)

    public init(_ configuration: PostgresNodeConfiguration) throws(NodeControlError) {
        try configuration.validate()
        self.configuration = configuration
    }

    var installation: PostgresInstallation { configuration.installation }
    public var dataDirectory: String { configuration.dataDirectory }
    public var logPath: String { configuration.runDirectory + "/postgres.log" }
    var passfilePath: String { configuration.runDirectory + "/replication.pgpass" }

    /// Options for a local superuser connection over the private Unix socket.
    public func localConnectionOptions(database: String = "postgres") -> PostgresConnectionOptions {
        var options = PostgresConnectionOptions(host: configuration.runDirectory, port: configuration.port, user: "postgres", database: database)
        options.connectTimeoutSeconds = 5
        options.applicationName = "pgquorum_manager"
        return options
    }

    /// Opens a local superuser connection.
    public func connect(_ operation: String) throws(NodeControlError) -> PostgresConnection {
        do {
            return try PostgresConnection(localConnectionOptions())
        } catch {
            throw .postgres(operation: operation, error: error)
        }
    }

    /// Runs `body` on a fresh local connection, mapping errors to `operation`.
    @discardableResult
    func withConnection<T>(_ operation: String, _ body: (PostgresConnection) throws(PostgresError) -> T) throws(NodeControlError) -> T {
        let connection = try connect(operation)
        defer { connection.close() }
        do {
            return try body(connection)
        } catch {
            throw .postgres(operation: operation, error: error)
        }
    }

    // MARK: - The postgres process

    /// The postmaster's pid while it runs under us.
    public var pid: pid_t? {
        child.withLock { $0?.isRunning == true ? $0?.pid : nil }
    }

    /// Calls `handler` whenever a postmaster started from now on ends (on a thread of its
    /// own): a supervisor learns of a crash at once, without polling.
    public func onPostmasterExit(_ handler: @escaping @Sendable () -> Void) {
        exitHandler.withLock { $0 = handler }
    }

    /// Whether the postmaster we started is still running.
    public var isRunning: Bool { pid != nil }

    /// How the postmaster ended, once it has.
    public var termination: Termination? {
        child.withLock { $0?.poll() }
    }

    /// Starts postgres and waits until it accepts connections. Does nothing if it runs.
    public func start() async throws(NodeControlError) {
        if isRunning { return }
        try requireDataDirectory()
        let command: (executable: String, arguments: [String])
        do {
            command = try installation.command("postgres", ["-D", dataDirectory], parentDeathSignal: "KILL")
        } catch {
            throw .startFailed(dataDirectory: dataDirectory, reason: String(describing: error), logTail: "")
        }
        let process: ChildProcess
        do {
            try ensureFile(logPath)
            process = try ChildProcess.spawn(command.executable, command.arguments, output: .file(path: logPath))
        } catch let error as ProcessError {
            throw .startFailed(dataDirectory: dataDirectory, reason: String(describing: error), logTail: "")
        } catch let error as NodeControlError {
            throw error
        } catch {
            throw .startFailed(dataDirectory: dataDirectory, reason: String(describing: error), logTail: "")
        }
        child.withLock { $0 = process }
        process.onExit { [self] in exitHandler.withLock { $0 }?() }
        let clock = ContinuousClock()
        let deadline = clock.now + configuration.startTimeout
        while true {
            if let ended = process.poll() {
                // Its logging collector may still be writing the reason out.
                await logSettled()
                throw .startFailed(dataDirectory: dataDirectory, reason: "postgres \(ended)", logTail: logTail())
            }
            if let connection = try? PostgresConnection(localConnectionOptions()) {
                connection.close()
                return
            }
            if clock.now >= deadline {
                await process.stop(signal: SIGKILL, grace: .seconds(5))
                throw .startFailed(dataDirectory: dataDirectory, reason: "no connection within \(configuration.startTimeout)", logTail: logTail())
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Stops postgres in `mode`, escalating to the next mode (and finally SIGKILL) when it
    /// does not end within the stop timeout. Does nothing if it is not running.
    @discardableResult
    public func stop(_ mode: ShutdownMode = .fast) async -> Termination? {
        dropObservationConnection()
        guard let process = child.withLock({ $0 }) else { return nil }
        let signals: [Int32]
        switch mode {
        case .smart: signals = [SIGTERM, SIGINT, SIGQUIT, SIGKILL]
        case .fast: signals = [SIGINT, SIGQUIT, SIGKILL]
        case .immediate: signals = [SIGQUIT, SIGKILL]
        }
        for signal in signals {
            process.send(signal)
            if let ended = await process.wait(timeout: configuration.stopTimeout) { return ended }
        }
        return await process.wait(timeout: .seconds(60))
    }

    /// Asks the running postgres to re-read its configuration files.
    public func reload() throws(NodeControlError) {
        _ = try withConnection("reload the configuration of \(dataDirectory)") { connection throws(PostgresError) in
            try connection.query("SELECT pg_reload_conf()")
        }
    }

    /// The last lines of the server log, for error messages.
    public func logTail() -> String {
        tail(recentLog())
    }

    /// The folder of the server's log files, in the data directory (`logging_collector`).
    static let logDirectoryName = "log"
    public var logDirectory: String { dataDirectory + "/" + Self.logDirectoryName }

    /// The log file the server writes now (`ServerLog.currentFile`).
    public var currentLogFile: String? { ServerLog.currentFile(dataDirectory: dataDirectory) }

    /// The end of the server log (at most `bytes` of each file), without reading a log that
    /// grew large: what postgres wrote to its standard error (before its logging collector
    /// started, or when it never could), then the collector's current file.
    func recentLog(bytes: Int = 16_384) -> String {
        [logPath, currentLogFile].compactMap { $0.map { fileTail($0, bytes: bytes) } }.filter { !$0.isEmpty }.joined()
    }

    /// The WAL segment the upstream no longer has, when the latest attempt of this standby's
    /// WAL receiver failed for that reason ("requested WAL segment … has already been
    /// removed"): streaming cannot resume, only a fresh copy helps.
    public func upstreamLacksWAL() -> String? {
        for line in recentLog().split(separator: "\n").reversed() {
            if line.contains("started streaming WAL") { continue }
            guard line.contains("WAL stream") || line.contains("WAL segment") else { continue }
            // The receiver's latest failure, or a line saying it streams fine.
            guard let start = line.range(of: "requested WAL segment "), let end = line.range(of: " has already been removed") else {
                return nil
            }
            return String(line[start.upperBound..<end.lowerBound])
        }
        return nil
    }

    /// Waits until the server log stops growing (for 100 ms, at most 1 s): a postmaster that
    /// exited leaves its logging collector to write out what it was sent.
    func logSettled() async {
        var last = -1
        for _ in 0..<10 {
            let size = [logPath, currentLogFile].compactMap { $0 }.map { fileSize($0) }.reduce(0, +)
            if size == last { return }
            last = size
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    private func fileSize(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : 0
    }

    /// The last `bytes` of a file, from a line's start; "" when it cannot be read.
    func fileTail(_ path: String, bytes: Int) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0 else { return "" }
        let start = max(0, size - off_t(bytes))
        var buffer = [UInt8](repeating: 0, count: Int(size - start))
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, start) }
        guard count > 0 else { return "" }
        var text = String(decoding: buffer[0..<count], as: UTF8.self)
        // Started mid-line: drop the partial first line.
        if start > 0, let newline = text.firstIndex(of: "\n") { text = String(text[text.index(after: newline)...]) }
        return text.hasSuffix("\n") ? text : text + "\n"
    }

    func requireDataDirectory() throws(NodeControlError) {
        guard fileExists(dataDirectory) else { throw .dataDirectoryMissing(path: dataDirectory) }
        guard fileExists(dataDirectory + "/PG_VERSION") else { throw .notADataDirectory(path: dataDirectory) }
    }

    /// Creates `path` empty if missing, owned by the server user.
    func ensureFile(_ path: String) throws(NodeControlError) {
        if !fileExists(path) { try writeFile(path, "", mode: 0o640) }
    }
}

/// Where a PostgreSQL server's log is.
public enum ServerLog {
    /// The file the server's logging collector writes now, as it names it in
    /// `current_logfiles`; nil before the collector first started.
    /// When postgres has stopped (it removes that file), the file in `log/` written last.
    public static func currentFile(dataDirectory: String) -> String? {
        if let text = try? String(contentsOfFile: dataDirectory + "/current_logfiles", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("stderr ") })
        {
            let path = String(line.dropFirst("stderr ".count))
            return path.hasPrefix("/") ? path : dataDirectory + "/" + path
        }
        let folder = dataDirectory + "/" + PostgresNode.logDirectoryName
        let files = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return files.map { folder + "/" + $0 }.max { modified($0) < modified($1) }
    }

    private static func modified(_ path: String) -> Int {
        var info = stat()
        guard stat(path, &info) == 0 else { return 0 }
        return info.st_mtim.tv_sec * 1_000_000_000 + info.st_mtim.tv_nsec
    }
}
