import EventLog
import Foundation
import Raft
import Testing
import TestSupport

@Suite("witness metrics")
struct WitnessMetricsTests {
    @Test("--metrics serves Prometheus text that moves with the cluster: term, leader, commit and applied index, commit latency, connections, leader changes; other paths 404, other methods 405")
    func metricsFollowTheCluster() async throws {
        try await withWitnessCluster(metrics: true) { cluster in
            try cluster.startAll()
            let leader = try await cluster.waitForLeader()
            let client = cluster.client()
            defer { client.close() }
            var last: UInt64 = 0
            for tag in 1...20 { last = try await client.append(taggedEvent(UInt32(tag))) }

            let followers = [NodeID(1), 2, 3].filter { $0 != leader }
            // Gauges are set on the Raft loop after each change: within a heartbeat or two.
            try await waitUntilAsync("every witness shows the appends applied", timeout: .seconds(10)) {
                for id in [NodeID(1), 2, 3] {
                    guard let applied = try await cluster.metrics(of: id).value("pgquorum_witness_applied_index"), applied >= Double(last) else { return false }
                }
                return true
            }
            let atLeader = try await cluster.metrics(of: leader)
            #expect(atLeader.types["pgquorum_witness_term"] == "gauge")
            #expect(atLeader.types["pgquorum_witness_leader_changes_total"] == "counter")
            #expect(atLeader.types["pgquorum_witness_commit_seconds"] == "histogram")
            #expect(atLeader.value("pgquorum_witness_is_leader") == 1)
            #expect((atLeader.value("pgquorum_witness_term") ?? 0) >= 2)
            #expect((atLeader.value("pgquorum_witness_commit_index") ?? 0) >= Double(last))
            #expect((atLeader.value("pgquorum_witness_last_index") ?? 0) >= Double(last))
            #expect(atLeader.value("pgquorum_witness_first_index") == 1)
            #expect((atLeader.value("pgquorum_witness_commit_seconds_count") ?? 0) >= 20, "every append's commit is timed")
            #expect(atLeader.value("pgquorum_witness_commit_seconds_bucket", ["le": "+Inf"]) == atLeader.value("pgquorum_witness_commit_seconds_count"))
            #expect((atLeader.value("pgquorum_witness_clients_connected") ?? 0) >= 1)
            #expect(atLeader.value("pgquorum_witness_peers_connected") == 2)
            var changes: [NodeID: Double] = [:]
            for id in followers {
                let metrics = try await cluster.metrics(of: id)
                #expect(metrics.value("pgquorum_witness_is_leader") == 0)
                let count = try #require(metrics.value("pgquorum_witness_leader_changes_total"))
                #expect(count >= 1, "witness \(id) knows a leader")
                changes[id] = count
            }

            // The leader dies: the others elect a new one and count the change.
            await cluster.kill(leader)
            let next = try await cluster.waitForLeader(among: followers)
            try await waitUntilAsync("the survivors count the new leader", timeout: .seconds(10)) {
                for id in followers where (try await cluster.metrics(of: id).value("pgquorum_witness_leader_changes_total") ?? 0) <= changes[id]! { return false }
                return true
            }
            #expect(try await cluster.metrics(of: next).value("pgquorum_witness_is_leader") == 1)

            let port = try #require(cluster.metricsPort(of: next))
            let missing = try await onOwnThread { try httpRequest(host: "127.0.0.1", port: port, path: "/primary") }
            #expect(missing.status == 404)
            let posted = try await onOwnThread { try httpRequest(host: "127.0.0.1", port: port, method: "POST", path: "/metrics") }
            #expect(posted.status == 405)
        }
    }
}
