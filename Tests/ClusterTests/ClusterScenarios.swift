import EventLog
import Foundation
import Manager
import NodeControl
import Testing
import TestSupport

/// What the whole-cluster suites share: a writer's table, the expectations on acknowledged
/// rows, the CLI, the primary.
protocol ClusterScenarios {}

extension ClusterScenarios {
    func createTable(_ cluster: PGClusterFixture) async throws {
        try await cluster.createTable()
    }

    /// The ids of the writer's rows on `node` (a blocking query).
    func rows(on node: PGNodeID, _ cluster: PGClusterFixture) throws -> Set<Int> {
        try cluster.rows(on: node)
    }

    /// Every row acknowledged so far is on `node` (the writer may still be writing: what it
    /// acknowledged is taken before the rows are read).
    func expectAllAcknowledged(_ writer: RowWriter, on node: PGNodeID, _ cluster: PGClusterFixture, sourceLocation: SourceLocation = #_sourceLocation)
        async throws
    {
        let lost = try await cluster.lostRows(writer, on: node)
        #expect(lost.isEmpty, "\(lost.count) acknowledged rows missing on node \(node): \(lost.prefix(10))", sourceLocation: sourceLocation)
    }

    /// `node` is a standby again and, within 30 s, holds every row acknowledged so far.
    func expectStandbyWithEveryAcknowledgedRow(
        _ node: PGNodeID, _ writer: RowWriter, _ cluster: PGClusterFixture, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let inRecovery = try await onOwnThread { try cluster.sql(on: node, "SELECT pg_is_in_recovery()") }
        #expect(inRecovery == ["t"], "node \(node) is not a standby", sourceLocation: sourceLocation)
        let acknowledged = writer.acknowledged
        try await waitUntil("node \(node) replays every row acknowledged so far", timeout: .seconds(30)) {
            let present = try cluster.rows(on: node)
            return acknowledged.allSatisfy(present.contains)
        }
    }

    /// Runs `pgquorum ARGUMENTS` against the cluster's witnesses.
    func cli(_ cluster: PGClusterFixture, _ arguments: [String]) async throws -> CommandResult {
        try await cluster.cli(arguments)
    }

    func primary(_ state: ClusterState) -> PGNodeID? {
        PGClusterFixture.primary(state)
    }
}
