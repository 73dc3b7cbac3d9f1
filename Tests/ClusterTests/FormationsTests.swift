import EventLog
import Foundation
import Manager
import NodeControl
import Testing
import TestSupport

/// Several formations on one witness quorum (issue 18 item 5), in the whole-cluster suite.
extension FailoverTests {
    @Test("two formations of three nodes on one witness quorum: the log is compacted, a manager of each restarted from the snapshot finds its node, both healthy; a failover in one leaves the other alone")
    func twoFormations() async throws {
        // A snapshot every 60 entries: the log is compacted within seconds.
        let witnesses = try WitnessClusterFixture(extraArguments: ["--snapshot-entries", "60", "--keep-entries", "5"])
        try witnesses.startAll()
        let first = try PGClusterFixture(sharedWitnesses: witnesses)
        let second = try PGClusterFixture(formation: "orders", sharedWitnesses: witnesses)
        do {
            try await first.start()
            try await second.start()

            // Compacted: the witnesses' snapshot holds both formations, three nodes each.
            let client = witnesses.client()
            defer { client.close() }
            let start = try await client.snapshot().index
            try await waitUntilAsync("the log is compacted past both formations' start", timeout: .seconds(60)) {
                let snapshot = try await client.snapshot()
                guard snapshot.index > start + 60 else { return false }
                let formations = try FormationStates(snapshot: snapshot.application)
                return formations["default"]?.sortedNodes.count == 3 && formations["orders"]?.sortedNodes.count == 3
            }

            // A standby's manager of each formation restarts and reads the snapshot first.
            for cluster in [first, second] {
                let state = try await cluster.clusterState()
                let standby = try #require(cluster.ids.first { $0 != primary(state) })
                await cluster.killManager(standby)
                try await waitUntil("node \(standby)'s postgres is gone", timeout: .seconds(10)) { cluster.postgresPID(of: standby) == nil }
                try cluster.startManager(standby)
            }
            for cluster in [first, second] {
                _ = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(90))
            }

            // A failover in one formation.
            let before = try await first.clusterState()
            let untouched = before.sortedNodes.map { ($0.id, $0.goal, $0.goalIndex) }
            let old = try #require(primary(try await second.clusterState()))
            await second.killManager(old)
            let failedOver = try await second.waitFor("another node of orders becomes primary", timeout: .seconds(60)) { state in
                self.primary(state).map { $0 != old } ?? false
            }
            #expect(primary(failedOver) != old)
            let after = try await first.clusterState()
            let now = after.sortedNodes.map { ($0.id, $0.goal, $0.goalIndex) }
            let unchanged = now.count == untouched.count && zip(now, untouched).allSatisfy { $0 == $1 }
            #expect(unchanged, "the default formation's goals changed: \(now) against \(untouched)")
            #expect(after.sortedNodes.allSatisfy { $0.isConverged })
            let status = try await cli(second, ["status", "--formation", "orders"])
            #expect(status.output.contains("node\(old)"), "\(status.output)")
            // A formation that does not exist: one line naming those that do, nothing appended.
            for arguments in [["pg", "set", "work_mem", "1MB", "--formation", "ordres"], ["status", "--formation", "ordres"]] {
                let unknown = try await cli(second, arguments)
                #expect(unknown.termination == .exited(code: 1), "\(unknown.output)")
                #expect(
                    unknown.output.trimmingCharacters(in: .whitespacesAndNewlines)
                        == "Error: formation ordres does not exist (no node is registered in it); formations: default, orders", "\(unknown.output)")
            }
        } catch {
            let logs = first.logs() + "\n--- formation orders\n" + second.logs()
            await first.destroy()
            await second.destroy()
            await witnesses.destroy()
            throw TestSupportError("\(error)\n\(logs)")
        }
        await first.destroy()
        await second.destroy()
        await witnesses.destroy()
    }
}
