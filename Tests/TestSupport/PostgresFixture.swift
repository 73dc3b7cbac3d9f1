import Foundation
import NodeControl

/// A real PostgreSQL 15 server for one test: its own temporary folder and a free port on
/// 127.0.0.1, initialised with initdb, started as a child of the test process (through
/// `setpriv` to the postgres user when the test runs as root), and stopped by pid.
public final class PostgresFixture: @unchecked Sendable {
    // Safety of @unchecked Sendable: `process` is written by `start()` and `stop()` only, which
    // a test calls in order from one task.
    public let folder: TemporaryDirectory
    public let dataDirectory: String
    public let socketDirectory: String
    public let logPath: String
    public let port: Int
    public let installation: PostgresInstallation
    public private(set) var process: ChildProcess?

    /// Creates the cluster with initdb (trust authentication for the `postgres` role).
    public init(installation: PostgresInstallation = PostgresInstallation()) async throws {
        self.installation = installation
        folder = try TemporaryDirectory(prefix: "pgquorum-pg")
        dataDirectory = folder.appending("data")
        socketDirectory = try folder.makeDirectory("socket")
        logPath = folder.appending("postgres.log")
        port = try FreePort.next()
        do {
            try FileManager.default.createDirectory(
                atPath: dataDirectory, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
            try installation.handOver(dataDirectory)
            try installation.handOver(socketDirectory)
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            try installation.handOver(logPath)
            let initdb = try installation.command(
                "initdb",
                ["-D", dataDirectory, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            try await runProgram(initdb.executable, initdb.arguments, timeout: .seconds(120))
        } catch {
            folder.remove()
            throw error
        }
    }

    /// Starts postgres and waits until it accepts connections (at most `timeout`).
    public func start(timeout: Duration = .seconds(60)) async throws {
        let postgres = try installation.command(
            "postgres",
            [
                "-D", dataDirectory, "-p", String(port), "-k", socketDirectory,
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            ],
            parentDeathSignal: "KILL")
        let child = try ChildProcess.spawn(postgres.executable, postgres.arguments, output: .file(path: logPath))
        process = child
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            if let ended = child.poll() {
                throw TestSupportError("postgres \(ended) while starting: \(logTail())")
            }
            if (try? PostgresConnection(connectionOptions())) != nil { return }
            if clock.now >= deadline {
                await child.stop(signal: SIGKILL)
                throw TestSupportError("postgres did not accept connections within \(timeout): \(logTail())")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Options for a TCP connection to this server as the `postgres` role.
    public func connectionOptions(database: String = "postgres") -> PostgresConnectionOptions {
        var options = PostgresConnectionOptions(host: "127.0.0.1", port: port, user: "postgres", database: database)
        options.connectTimeoutSeconds = 2
        return options
    }

    /// Stops postgres with a fast shutdown (SIGINT), escalating to SIGKILL after `grace`.
    @discardableResult
    public func stop(grace: Duration = .seconds(30)) async -> Termination? {
        guard let process else { return nil }
        self.process = nil
        return await process.stop(signal: SIGINT, grace: grace)
    }

    /// Stops postgres if it runs and deletes the folder.
    public func destroy() async {
        await stop()
        folder.remove()
    }

    /// The last lines of the server log, for failure messages.
    public func logTail() -> String {
        tail((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")
    }
}
