import EventLog
import Foundation
import Manager
import NodeControl
import Testing
import TestSupport

/// Configuration through the log (issue 18): PostgreSQL parameters and node settings, on real
/// witnesses, managers and postgres. Part of the whole-cluster suite, which runs one cluster
/// at a time: more clusters at once on two cores make every timing in them noisy.
extension FailoverTests {
    /// The operator requests in the log, as `pgquorum log` lists them.
    func operatorRequests(_ cluster: PGClusterFixture) async throws -> Int {
        let result = try await cli(cluster, ["log", "--kind", "operator-request", "--json"])
        #expect(result.termination == .exited(code: 0), "\(result.output)")
        return result.output.split(separator: "\n").filter { $0.hasPrefix("{") }.count
    }

    func show(_ name: String, on id: PGNodeID, _ cluster: PGClusterFixture) async throws -> String? {
        try await onOwnThread { try cluster.sql(on: id, "SHOW \(name)").first ?? nil }
    }

    func waitForSetting(_ name: String, _ expected: [PGNodeID: String], _ cluster: PGClusterFixture) async throws {
        for (id, value) in expected.sorted(by: { $0.key < $1.key }) {
            try await waitUntilAsync("node \(id) runs with \(name) = \(value)", timeout: .seconds(30)) {
                try await show(name, on: id, cluster) == value
            }
        }
    }

    @Test("pg set reaches every node and survives a failover and a rewind; --node overrides one node; pg reset; a node's own ALTER SYSTEM settings survive the rewind; bad values, owned parameters and unknown nodes are refused with nothing appended")
    func parameters() async throws {
        try await withPGCluster { cluster in
            let old = try #require(primary(try await cluster.clusterState()))
            let standby = try #require(cluster.ids.first { $0 != old })

            let set = try await cli(cluster, ["pg", "set", "work_mem", "64MB"])
            #expect(set.termination == .exited(code: 0), "\(set.output)")
            #expect(set.output.contains("every node's manager writes it and reloads postgres"), "\(set.output)")
            try await waitForSetting("work_mem", Dictionary(uniqueKeysWithValues: cluster.ids.map { ($0, "64MB") }), cluster)
            let one = try await cli(cluster, ["pg", "set", "work_mem", "8MB", "--node", "\(standby)"])
            #expect(one.termination == .exited(code: 0), "\(one.output)")
            try await waitForSetting("work_mem", [standby: "8MB", old: "64MB"], cluster)
            let get = try await cli(cluster, ["pg", "get", "work_mem", "--node", "\(standby)"])
            #expect(get.output.trimmingCharacters(in: .whitespacesAndNewlines) == "8MB", "\(get.output)")
            let reset = try await cli(cluster, ["pg", "reset", "work_mem", "--node", "\(standby)"])
            #expect(reset.termination == .exited(code: 0), "\(reset.output)")
            try await waitForSetting("work_mem", [standby: "64MB"], cluster)

            // Refused before anything is appended: one line naming the problem and the choices.
            let requests = try await operatorRequests(cluster)
            let refusals: [([String], String)] = [
                (["pg", "set", "work_mem", "64XB"], "Valid units for this parameter are"),
                (["pg", "set", "log_statement", "sometimes"], "Available values: none, ddl, mod, all"),
                (["pg", "set", "max_connections", "0"], "outside the valid range for parameter \"max_connections\""),
                (["pg", "set", "work_mam", "1MB"], "unknown parameter work_mam; did you mean"),
                (["pg", "set", "synchronous_standby_names", "*"], "synchronous_standby_names is set by pgquorum"),
                (["pg", "set", "wal_level", "logical"], "wal_level is set by pgquorum"),
                (["pg", "set", "synchronous_commit", "local"], "a failover would lose them"),
                (["pg", "set", "work_mem", "1MB", "--node", "9"], "unknown node 9 in formation default; known nodes: 1"),
            ]
            for (arguments, expected) in refusals {
                let result = try await cli(cluster, arguments)
                #expect(result.termination == .exited(code: 1), "\(arguments): \(result.output)")
                #expect(result.output.contains(expected), "\(arguments): \(result.output)")
                #expect(result.output.split(separator: "\n").count == 1, "\(arguments): \(result.output)")
            }
            #expect(try await operatorRequests(cluster) == requests)

            // A setting of each standby's own: the old primary, rewound from one of them, must
            // not take the source's.
            for id in cluster.ids where id != old {
                let own = try await cli(cluster, ["pg", "set", "log_min_duration_statement", "1234ms", "--node", "\(id)"])
                #expect(own.termination == .exited(code: 0), "\(own.output)")
            }
            // The old primary's own ALTER SYSTEM setting, then a failover and its rewind.
            _ = try await onOwnThread {
                _ = try cluster.sql(on: old, "ALTER SYSTEM SET statement_timeout = '77s'")
                _ = try cluster.sql(on: old, "SELECT pg_reload_conf()")
            }
            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 50 }
            await cluster.killManager(old)
            let failedOver = try await cluster.waitFor("another node becomes primary", timeout: .seconds(60)) { self.primary($0).map { $0 != old } ?? false }
            let new = try #require(primary(failedOver))
            let before = writer.count
            try await waitUntil("the writer resumes", timeout: .seconds(30)) { writer.count >= before + 50 }
            await writer.stop()
            try await expectAllAcknowledged(writer, on: new, cluster)
            try await waitForSetting("work_mem", [new: "64MB"], cluster)
            try cluster.startManager(old)
            _ = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(90))
            try await expectStandbyWithEveryAcknowledgedRow(old, writer, cluster)
            // Rewound from the new primary: the log's parameters and its own ALTER SYSTEM
            // setting, not the new primary's synchronous_standby_names.
            try await waitForSetting("work_mem", Dictionary(uniqueKeysWithValues: cluster.ids.map { ($0, "64MB") }), cluster)
            #expect(try await show("statement_timeout", on: old, cluster) == "77s")
            #expect(try await show("log_min_duration_statement", on: old, cluster) == "-1")
            #expect(try await show("log_min_duration_statement", on: new, cluster) == "1234ms")
            #expect(try await show("synchronous_standby_names", on: old, cluster) == "")
            let log = (try? String(contentsOfFile: cluster.logPath(of: old), encoding: .utf8)) ?? ""
            #expect(log.contains("rejoined the new primary"), "the old primary came back by a rewind")

            let shown = try await cli(cluster, ["pg", "show", "--json"])
            #expect(shown.output.contains("\"parameters\":{\"work_mem\":\"64MB\"}"), "\(shown.output)")
        }
    }

    @Test("node set: candidate priority and replication quorum change through the log; synchronous_standby_names follows; the last candidate cannot go to 0")
    func nodeSettings() async throws {
        try await withPGCluster { cluster in
            let primaryID = try #require(primary(try await cluster.clusterState()))
            let standbys = cluster.ids.filter { $0 != primaryID }
            let (first, second) = (standbys[0], standbys[1])

            let lowered = try await cli(cluster, ["node", "set", "\(first)", "candidate-priority", "0"])
            #expect(lowered.termination == .exited(code: 0), "\(lowered.output)")
            let requests = try await operatorRequests(cluster)
            let last = try await cli(cluster, ["node", "set", "\(second)", "candidate-priority", "0"])
            #expect(last.termination == .exited(code: 1), "\(last.output)")
            #expect(last.output.contains("refused: no standby would be left to fail over to"), "\(last.output)")
            let range = try await cli(cluster, ["node", "set", "\(second)", "candidate-priority", "101"])
            #expect(range.termination == .exited(code: 1) && range.output.contains("from 0 to 100"), "\(range.output)")
            #expect(try await operatorRequests(cluster) == requests)
            let state = try await cluster.clusterState()
            #expect(state[first]?.registration.candidatePriority == 0 && state[second]?.registration.candidatePriority == 50)

            let asynchronous = try await cli(cluster, ["node", "set", "\(first)", "replication-quorum", "false"])
            #expect(asynchronous.termination == .exited(code: 0), "\(asynchronous.output)")
            try await waitUntilAsync("the primary lists only node \(second)", timeout: .seconds(30)) {
                try await show("synchronous_standby_names", on: primaryID, cluster) == "ANY 1 (pgquorum_\(second))"
            }
            let lastQuorum = try await cli(cluster, ["node", "set", "\(second)", "replication-quorum", "false"])
            #expect(lastQuorum.termination == .exited(code: 1), "\(lastQuorum.output)")
            #expect(lastQuorum.output.contains("0 quorum standbys would be left for number_sync_standbys 1"), "\(lastQuorum.output)")
            let back = try await cli(cluster, ["node", "set", "\(first)", "replication-quorum", "true"])
            #expect(back.termination == .exited(code: 0), "\(back.output)")
            try await waitUntilAsync("the primary lists both standbys again", timeout: .seconds(30)) {
                try await show("synchronous_standby_names", on: primaryID, cluster) == "ANY 1 (pgquorum_\(first), pgquorum_\(second))"
            }
            let status = try await cli(cluster, ["status", "--json"])
            #expect(status.output.contains("\"candidate_priority\":0"), "\(status.output)")
        }
    }

    @Test("shared_buffers by a rolling restart: every node pending restart, restarted one at a time, the primary after a switchover; a writer loses nothing and stops only for the switchover")
    func rollingRestart() async throws {
        try await withPGCluster { cluster in
            let old = try #require(primary(try await cluster.clusterState()))
            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 50 }

            let set = try await cli(cluster, ["pg", "set", "shared_buffers", "48MB"])
            #expect(set.termination == .exited(code: 0), "\(set.output)")
            #expect(set.output.contains("takes effect when postgres restarts"), "\(set.output)")
            _ = try await cluster.waitFor("every node reports a pending restart", timeout: .seconds(30)) { state in
                state.sortedNodes.allSatisfy { $0.lastReport?.pendingRestart == true }
            }
            let status = try await cli(cluster, ["status"])
            #expect(status.output.contains("pending restart"), "\(status.output)")

            let started = ContinuousClock.now
            let restart = try await cli(cluster, ["pg", "restart", "--rolling"])
            let ended = ContinuousClock.now
            #expect(restart.termination == .exited(code: 0), "\(restart.output)")
            print(restart.output)
            for id in cluster.ids where id != old { #expect(restart.output.contains("node \(id): restarting postgres"), "\(restart.output)") }
            #expect(restart.output.contains("node \(old) is the primary: switching over first"), "\(restart.output)")
            // One node at a time: each step is done before the next begins.
            let steps = restart.output.split(separator: "\n").filter { $0.hasSuffix("restarting postgres") || $0.hasSuffix("switching over first") || $0 == "done" }
            for (offset, step) in steps.enumerated() where step != "done" && offset > 0 {
                #expect(steps[offset - 1] == "done", "\(restart.output)")
            }
            let state = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(60))
            // A report built before the last restart may still be the latest for a moment.
            _ = try await cluster.waitFor("no node waits for a restart", timeout: .seconds(10)) { state in
                state.sortedNodes.allSatisfy { $0.lastReport?.pendingRestart == false }
            }
            for id in cluster.ids { #expect(try await show("shared_buffers", on: id, cluster) == "48MB") }

            let before = writer.count
            try await waitUntil("the writer goes on", timeout: .seconds(30)) { writer.count >= before + 50 }
            await writer.stop()
            let gap = writer.longestGap(from: started, to: ended)
            print("rolling restart: \(ended - started) in all, longest write gap \(gap)")
            #expect(gap < .seconds(10), "writes stop only for the switchover")
            let new = try #require(primary(state))
            try await expectAllAcknowledged(writer, on: new, cluster)
        }
    }
}
