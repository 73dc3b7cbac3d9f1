import EventLog
import Foundation
import Manager
import NodeControl

/// What whole-cluster tests and benchmarks do with a cluster: a table of acknowledged rows,
/// the CLI, the current primary.
extension PGClusterFixture {
    /// Creates the table a `RowWriter` fills, through the multi-host URI.
    public func createTable(_ name: String = "acked") async throws {
        let uri = try await uri()
        try await onOwnThread {
            var options = PostgresConnectionOptions(uri: uri, user: "postgres")
            options.connectTimeoutSeconds = 3
            let connection = try PostgresConnection(options)
            defer { connection.close() }
            _ = try connection.query("CREATE TABLE IF NOT EXISTS \(name) (id integer PRIMARY KEY)")
        }
    }

    /// The ids in the writer's table on `node` (a blocking query).
    public func rows(on node: PGNodeID, table: String = "acked") throws -> Set<Int> {
        Set(try sql(on: node, "SELECT id FROM \(table)").compactMap { $0.flatMap(Int.init) })
    }

    /// The rows `writer` had acknowledged when this was called that are missing on `node`.
    public func lostRows(_ writer: RowWriter, on node: PGNodeID) async throws -> [Int] {
        let acknowledged = writer.acknowledged
        let present = try await onOwnThread { try self.rows(on: node, table: writer.table) }
        return acknowledged.filter { !present.contains($0) }
    }

    /// Runs `pgquorum ARGUMENTS` against the cluster's witnesses, from the test process.
    public func cli(_ arguments: [String]) async throws -> CommandResult {
        let executable = try BuiltProducts.path(of: "pgquorum")
        let connection = ["--witnesses", witnesses.endpoints.map(\.description).joined(separator: ","), "--credentials", witnesses.credentialsPath]
        return try await onOwnThread { try runCommand(executable, arguments + connection, timeout: .seconds(150), check: false) }
    }

    /// The node that reached a primary state and is converged there, if any.
    public static func primary(_ state: ClusterState) -> PGNodeID? {
        state.sortedNodes.first { [.primary, .waitPrimary, .single].contains($0.reached) && $0.isConverged }?.id
    }

    /// Whether node `id`'s postgres takes writes now, asked from the host it runs on (a cut
    /// between it and the test process does not matter): it accepts a connection, is not in
    /// recovery and is not read-only, so a `target_session_attrs=read-write` client would
    /// write to it. nil when the question got no answer within `timeout` seconds.
    public func isWritableSeenFromItsHost(_ id: PGNodeID, timeout: Int = 2) -> Bool? {
        let psql = PostgresInstallation().binDirectory + "/psql"
        let conninfo = "host=\(address(of: id)) port=\(port(of: id)) user=postgres dbname=postgres connect_timeout=\(timeout)"
        let query = "SELECT NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off'"
        let arguments = ["-X", "-At", "-d", conninfo, "-c", query]
        let (program, full): (String, [String])
        if let lab, let host = host(of: id) {
            (program, full) = lab.command(on: host, psql, arguments)
        } else {
            (program, full) = (psql, arguments)
        }
        guard let result = try? runCommand(program, full, timeout: .seconds(timeout + 2), check: false) else { return nil }
        guard result.termination == .exited(code: 0) else {
            // Refused, or reset: postgres is down or on its way down.
            return result.output.contains("timeout expired") ? nil : false
        }
        return result.output.trimmingCharacters(in: .whitespacesAndNewlines) == "t"
    }
}
