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
}
