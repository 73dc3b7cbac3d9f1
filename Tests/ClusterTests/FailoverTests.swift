import EventLog
import Foundation
import Manager
import Raft
import NodeControl
import Testing
import TestSupport

/// End to end (issue 8): real witnesses, node managers and postgres processes on loopback.
@Suite("whole clusters", .serialized)
struct FailoverTests: ClusterScenarios {
    @Test("bootstrap, SIGKILL of the primary's manager, failover with nothing acknowledged lost, the old primary rejoins by pg_rewind")
    func managerCrash() async throws {
        try await withPGCluster { cluster in
            let healthy = try await cluster.clusterState()
            let old = try #require(primary(healthy))
            let others = cluster.ids.filter { $0 != old }
            let expected = "ANY 1 (\(others.map { "pgquorum_\($0)" }.joined(separator: ", ")))"
            try await waitUntil("the primary lists both standbys in synchronous_standby_names", timeout: .seconds(10)) {
                try cluster.sql(on: old, "SHOW synchronous_standby_names") == [expected]
            }

            // PostgreSQL over TLS: both standbys stream over TLS 1.3, and a client from the
            // client network without TLS is refused (pg_hba.conf hostssl).
            try await expectStandbysStreamOverTLS(on: old, count: 2, cluster)
            let plain = PostgresConnectionOptions(uri: "postgresql://\(cluster.address(of: old)):\(cluster.port(of: old))/postgres?sslmode=disable", user: "postgres")
            #expect {
                _ = try PostgresConnection(plain)
            } throws: { error in
                "\(error)".contains("no pg_hba.conf entry") && "\(error)".contains("no encryption")
            }

            try await createTable(cluster)
            let uri = try await cluster.uri()
            #expect(uri.contains("sslmode=verify-full&sslrootcert=\(cluster.witnesses.credentials.caFile)"), "\(uri)")
            let writer = RowWriter(uri: uri)
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }
            let killedAt = ContinuousClock.now
            await cluster.killManager(old)
            let before = writer.count
            let failedOver = try await cluster.waitFor("another node becomes primary", timeout: .seconds(60)) { state in
                guard let primary = self.primary(state) else { return false }
                return primary != old
            }
            let new = try #require(primary(failedOver))
            try await waitUntil("the writer resumes on the new primary", timeout: .seconds(30)) { writer.count >= before + 100 }
            let outage = try #require(writer.outage(after: killedAt))
            print("node crash: writes came back \(outage) after the SIGKILL")
            await writer.stop()
            try await expectAllAcknowledged(writer, on: new, cluster)

            // The old node comes back as a secondary of the new primary.
            try cluster.startManager(old)
            _ = try await cluster.waitForHealthy(timeout: .seconds(90))
            try await expectStandbyWithEveryAcknowledgedRow(old, writer, cluster)
            // Rewound, it follows the new primary over TLS too.
            try await expectStandbysStreamOverTLS(on: new, count: 2, cluster)
        }
    }

    /// `count` standbys stream from `primary` over TLS 1.3 (`pg_stat_ssl` of its WAL senders).
    func expectStandbysStreamOverTLS(on primary: PGNodeID, count: Int, _ cluster: PGClusterFixture) async throws {
        try await waitUntil("\(count) standbys stream from node \(primary) over TLS 1.3", timeout: .seconds(20)) {
            try cluster.sql(
                on: primary, "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE s.ssl AND s.version = 'TLSv1.3'")
                == ["\(count)"]
        }
        #expect(try cluster.sql(on: primary, "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE NOT s.ssl") == ["0"])
    }

    @Test("SIGKILL of the primary's postgres only: the manager restarts it, nothing acknowledged lost")
    func postgresCrash() async throws {
        try await withPGCluster { cluster in
            let old = try #require(primary(try await cluster.clusterState()))
            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }
            let pid = try #require(cluster.postgresPID(of: old))
            kill(pid, SIGKILL)
            let before = writer.count
            try await waitUntil("the writer resumes", timeout: .seconds(60)) { writer.count >= before + 100 }
            await writer.stop()
            let state = try await cluster.waitForHealthy(timeout: .seconds(60))
            let current = try #require(primary(state))
            try await expectAllAcknowledged(writer, on: current, cluster)
            #expect(cluster.postgresPID(of: old) != pid)
        }
    }

    @Test("SIGHUP (logrotate) reloads and stops nothing; switchover through the log: the target becomes primary, nothing acknowledged lost")
    func switchover() async throws {
        try await withPGCluster { cluster in
            let old = try #require(primary(try await cluster.clusterState()))
            let target = cluster.ids.first { $0 != old }!
            let postgresPIDs = cluster.ids.map { cluster.postgresPID(of: $0) }
            for id in cluster.ids { cluster.manager(of: id)?.send(SIGHUP) }
            try await Task.sleep(for: .seconds(1))
            #expect(cluster.ids.allSatisfy(cluster.isManagerRunning), "a manager ended on SIGHUP")
            #expect(cluster.ids.map { cluster.postgresPID(of: $0) } == postgresPIDs, "a postgres ended on SIGHUP")
            try await waitUntil("the managers logged the reload", timeout: .seconds(5)) {
                cluster.ids.allSatisfy { ((try? String(contentsOfFile: cluster.logPath(of: $0), encoding: .utf8)) ?? "").contains("SIGHUP") }
            }
            // The HTTP endpoints a load balancer asks (Patroni's paths).
            try await expectEndpoints(primary: old, cluster)
            let replica = try cluster.http(target, "/replica?lag=16MB&replication_state=streaming")
            #expect(replica.status == 200 && replica.body.contains(#""role":"replica""#), "\(replica)")
            #expect(try cluster.http(target, "/replica?lag=sixteen").status == 400)
            #expect(try cluster.http(old, "/nowhere").status == 404)
            #expect(try cluster.http(old, "/primary", method: "POST").status == 405)
            #expect(try cluster.http(old, "/primary", method: "HEAD") == HTTPAnswer(status: 200, body: ""))
            #expect(try cluster.http(old, "/liveness").status == 200)
            let document = try cluster.http(old, "/cluster")
            let parsed = try #require(try JSONSerialization.jsonObject(with: Data(document.body.utf8)) as? [String: Any])
            #expect((parsed["nodes"] as? [[String: Any]])?.count == 3, "\(document.body)")

            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }
            let result = try await cli(cluster, ["switchover", "--to", "\(target)"])
            #expect(result.termination == .exited(code: 0), "\(result.output)")
            let before = writer.count
            try await waitUntil("the writer resumes", timeout: .seconds(30)) { writer.count >= before + 100 }
            await writer.stop()
            let state = try await cluster.waitForHealthy(timeout: .seconds(60))
            #expect(primary(state) == target)
            try await expectAllAcknowledged(writer, on: target, cluster)
            // The endpoints follow the switchover.
            try await expectEndpoints(primary: target, cluster)
        }
    }

    @Test("role change hooks run with the node, its old and new role and timeline in their environment; a hook that hangs or fails delays nothing")
    func roleChangeHooks() async throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-hooks")
        defer { folder.remove() }
        let record = folder.appending("record.sh")
        let script = "#!/bin/sh\n{ env | grep '^PGQUORUM_' | sort; echo ---; } >> \"\(folder.path)/hook-$PGQUORUM_NODE.log\"\n"
        try await onOwnThread { try writeExecutable(script, to: record) }
        let hooks: [PGNodeID: [String]] = [
            1: ["--on-role-change", record],
            2: ["--on-role-change", "\(record); exec sleep 60", "--on-role-change-timeout", "8"],
            3: ["--on-role-change", "\(record); exit 3"],
        ]
        try await withPGCluster(nodeArguments: hooks) { cluster in
            func hookLog(_ id: PGNodeID) -> String { (try? String(contentsOfFile: folder.appending("hook-node\(id).log"), encoding: .utf8)) ?? "" }
            func managerLog(_ id: PGNodeID) -> String { (try? String(contentsOfFile: cluster.logPath(of: id), encoding: .utf8)) ?? "" }
            /// Whether one run of node `id`'s hook had all of `expected` in its environment.
            func ran(_ id: PGNodeID, _ expected: [String: String]) -> Bool {
                hookLog(id).components(separatedBy: "---\n").contains { block in
                    let values = Dictionary(
                        block.split(separator: "\n").map { line in
                            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
                            return (parts[0], parts.count > 1 ? parts[1] : "")
                        }, uniquingKeysWith: { $1 })
                    return expected.allSatisfy { values[$0.key] == $0.value }
                }
            }
            try await waitUntil("every node ran its hook for its first role", timeout: .seconds(20)) {
                ran(1, ["PGQUORUM_NEW_ROLE": "primary"]) && ran(2, ["PGQUORUM_NEW_ROLE": "replica"]) && ran(3, ["PGQUORUM_NEW_ROLE": "replica"])
            }
            #expect(
                ran(1, ["PGQUORUM_NODE": "node1", "PGQUORUM_NODE_ID": "1", "PGQUORUM_OLD_ROLE": "none", "PGQUORUM_NEW_ROLE": "primary", "PGQUORUM_TIMELINE": "1", "PGQUORUM_FORMATION": "default"]),
                "\(hookLog(1))")
            #expect(managerLog(3).contains("the role change hook failed"), "node 3's failing hook is logged")
            try await waitUntil("node 2's hanging hook is killed after 8 s", timeout: .seconds(30)) {
                managerLog(2).contains("the role change hook did not end well")
            }

            // A switchover to node 2, whose hook hangs each time: it is promoted all the same.
            let result = try await cli(cluster, ["switchover", "--to", "2"])
            #expect(result.termination == .exited(code: 0), "\(result.output)")
            try await waitUntil("node 2's hook ran for its promotion, node 1's for its demotion", timeout: .seconds(20)) {
                ran(2, ["PGQUORUM_OLD_ROLE": "replica", "PGQUORUM_NEW_ROLE": "primary", "PGQUORUM_TIMELINE": "2"]) && ran(1, ["PGQUORUM_OLD_ROLE": "primary"])
            }
            // Nothing waited for the promotion's hook: node 2 reached primary while it hung.
            try await waitUntil("node 2's promotion hook is killed", timeout: .seconds(30)) {
                managerLog(2).split(separator: "\n").contains { $0.contains("new=primary") && $0.contains("did not end well") }
            }
            let lines = managerLog(2).split(separator: "\n")
            let started = try #require(lines.lastIndex { $0.contains("new=primary") && $0.contains("running the role change hook") })
            let ended = try #require(lines[started...].firstIndex { $0.contains("new=primary") && $0.contains("did not end well") })
            let reachedPrimary = lines[started...].firstIndex { $0.contains("state=primary") && $0.hasSuffix("reached") }
            #expect(reachedPrimary.map { $0 < ended } == true, "node 2 reached primary only after its hook ended:\n\(lines[started...].joined(separator: "\n"))")
        }
    }

    /// `/primary` answers 200 on `primary` only, `/replica` and `/read-only` on the others
    /// (and the primary for `/read-only`), `/health` and `/readiness` on all.
    func expectEndpoints(primary: PGNodeID, _ cluster: PGClusterFixture) async throws {
        try await waitUntil("only node \(primary) answers 200 on /primary, the others on /replica", timeout: .seconds(10)) {
            try cluster.ids.allSatisfy { id in
                try cluster.http(id, "/primary").status == (id == primary ? 200 : 503)
                    && cluster.http(id, "/replica").status == (id == primary ? 503 : 200)
            }
        }
        for id in cluster.ids {
            #expect(try cluster.http(id, "/read-only").status == 200)
            #expect(try cluster.http(id, "/health").status == 200)
            #expect(try cluster.http(id, "/readiness").status == 200)
        }
        let answer = try cluster.http(primary, "/primary")
        #expect(answer.body.contains(#""role":"primary""#) && !answer.body.contains(#""lease_remaining_ms":0"#), "\(answer)")
    }

    @Test("a frozen primary manager (SIGSTOP): its watchdog stops postgres within lease + grace + 1 s, a standby takes over, never two primaries, nothing acknowledged lost; after SIGCONT it rejoins as a standby")
    func frozenManager() async throws {
        try await withPGCluster { cluster in
            let old = try #require(primary(try await cluster.clusterState()))
            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }
            let manager = try #require(cluster.manager(of: old))
            let prober = WritableProber(cluster: cluster)
            // Frozen while it settled in primary: one frozen just after a blip gave it goal
            // wait_primary may have acted on it (synchronous replication off) without that
            // reaching the log, and no failover starts from there (it once failed so).
            let settled = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(60))
            #expect(settled.primaryNode?.id == old && settled[old]?.goal == .primary && settled[old]?.reached == .primary)
            let frozenAt = ContinuousClock.now
            manager.send(SIGSTOP)
            defer { manager.send(SIGCONT) }
            let failedOver = try await cluster.waitFor("another node becomes primary", timeout: .seconds(60)) { state in
                guard let primary = self.primary(state) else { return false }
                return primary != old
            }
            let new = try #require(primary(failedOver))
            let before = writer.count
            try await waitUntil("the writer resumes on the new primary", timeout: .seconds(30)) { writer.count >= before + 100 }
            try await Task.sleep(for: .seconds(30) - (ContinuousClock.now - frozenAt))
            manager.send(SIGCONT)
            let probes = try await onOwnThread { prober.stop() }
            let fenced = try #require(probes.firstNotWritable(old, after: frozenAt, before: ContinuousClock.now), "the frozen primary kept taking writes")
            // The lease (1 s) from the last committed report, the watchdog's grace 0.5 s, and
            // the probe's own pace.
            #expect(fenced - frozenAt <= .seconds(3), "the frozen primary took writes for \(fenced - frozenAt)")
            #expect(probes.twoWritable.isEmpty, "two nodes took writes in \(probes.twoWritable.count) probe rounds")
            print("frozen manager: postgres fenced \(fenced - frozenAt) after SIGSTOP, writes back \(writer.outage(after: frozenAt).map { "\($0)" } ?? "never")")
            try await expectAllAcknowledged(writer, on: new, cluster)
            // Woken up, the manager finds its postgres gone and rejoins as a standby.
            let healedAt = ContinuousClock.now
            _ = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(60))
            print("frozen manager: healthy and streaming \(ContinuousClock.now - healedAt) after SIGCONT")
            await writer.stop()
            try await expectStandbyWithEveryAcknowledgedRow(old, writer, cluster)
        }
    }

    @Test("narrowing the quorum waits: when the only standby holding the newest writes leaves for maintenance, the primary stays in apply_settings until another standby flushed past them")
    func narrowingWaits() async throws {
        try await withPGCluster { cluster in
            let primary = try #require(primary(try await cluster.clusterState()))
            let (lagging, leaving) = (cluster.ids.filter { $0 != primary }[0], cluster.ids.filter { $0 != primary }[1])
            // A standby whose WAL receiver is stopped stops replying too; the primary's view
            // would call it out of sync after the unhealthy timeout (then the primary would
            // drop to wait_primary instead). Here it must still count, lagging: a longer
            // timeout gives the test its time.
            let set = try await cli(cluster, ["settings", "set", "node_unhealthy_timeout", "20s"])
            #expect(set.termination == .exited(code: 0), "\(set.output)")
            _ = try await cluster.waitForHealthy(timeout: .seconds(30))
            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }
            // The lagging standby's WAL receiver stops: from now on only `leaving` acknowledges.
            let receiver = try #require(try cluster.sql(on: lagging, "SELECT pid FROM pg_stat_wal_receiver").first.flatMap { $0.flatMap { pid_t($0) } })
            kill(receiver, SIGSTOP)
            var resumed = false
            defer { if !resumed { kill(receiver, SIGCONT) } }
            let before = writer.count
            try await waitUntil("writes acknowledged by the leaving standby alone", timeout: .seconds(20)) { writer.count >= before + 100 }
            let result = try await cli(cluster, ["maintenance", "enable", "\(leaving)"])
            #expect(result.termination == .exited(code: 0), "\(result.output)")
            _ = try await cluster.waitFor("the primary narrows synchronous replication", timeout: .seconds(20)) { state in
                state[primary]?.reached == .applySettings && state[leaving]?.reached == .maintenance
            }
            try await waitUntil("the primary lists only the lagging standby", timeout: .seconds(10)) {
                try cluster.sql(on: primary, "SHOW synchronous_standby_names") == ["ANY 1 (\(ClusterState.applicationName(of: lagging)))"]
            }
            // However long the lagging standby lacks the newest acknowledged writes, the
            // primary does not call its quorum whole again.
            try await Task.sleep(for: .seconds(4))
            #expect(try await cluster.clusterState()[primary]?.reached == .applySettings, "the primary returned to primary before a standby held every acknowledged write")
            kill(receiver, SIGCONT)
            resumed = true
            _ = try await cluster.waitFor("the primary returns to primary", timeout: .seconds(40)) { $0[primary]?.reached == .primary }
            await writer.stop()
            try await expectStandbyWithEveryAcknowledgedRow(lagging, writer, cluster)
            let back = try await cli(cluster, ["maintenance", "disable", "\(leaving)"])
            #expect(back.termination == .exited(code: 0), "\(back.output)")
        }
    }

    @Test("witness failures: no failover while one is down; writes go on without a quorum; the primary fences itself once its standbys are gone too; everything recovers")
    func witnessFailures() async throws {
        try await withPGCluster { cluster in
            let old = try #require(primary(try await cluster.clusterState()))
            let pid = try #require(cluster.postgresPID(of: old))
            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }
            // A witness election can outlast the lease (1 s): then the standbys' replies hold
            // the primary, but only over replication connections older than
            // `LeaseRules.settledConnectionMillis`. Right after the cluster formed they may not
            // be yet, and the primary would fence itself for a moment (it did, once the lease
            // was shortened from 1.5 s).
            try await waitUntilAsync("both standbys' replication connections are settled", timeout: .seconds(20)) {
                let settled = try await onOwnThread {
                    try cluster.sql(
                        on: old,
                        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND backend_start < now() - interval '\(LeaseRules.settledConnectionMillis + 1_000) milliseconds'")
                }
                return settled.first == "2"
            }

            // The witness leader dies: a new one is elected, nothing else happens.
            let leader = try await cluster.witnesses.waitForLeader()
            await cluster.witnesses.kill(leader)
            let afterLeader = ContinuousClock.now
            try await Task.sleep(for: .seconds(5))
            #expect(writer.longestGap(from: afterLeader, to: ContinuousClock.now) < .seconds(2), "writes paused")
            let state = try await cluster.clusterState()
            #expect(state[old]?.goal == .primary && state.sortedNodes.allSatisfy(\.isConverged), "no failover")
            #expect(cluster.postgresPID(of: old) == pid, "postgres kept running")

            // A second witness dies: no quorum, no committed reports — and still writes go
            // on, because both standbys stream from the primary (DESIGN §5 rule 1).
            let second = try #require([NodeID(1), 2, 3].first { $0 != leader })
            await cluster.witnesses.kill(second)
            let noQuorum = ContinuousClock.now
            try await Task.sleep(for: .seconds(6))
            #expect(writer.longestGap(from: noQuorum, to: ContinuousClock.now) < .seconds(2), "writes paused without a witness quorum")
            #expect(cluster.postgresPID(of: old) == pid, "the primary kept running")

            // Its lease ran out (no report commits): it still takes writes, held by its
            // standbys, but it does not claim /primary on a stale view.
            let stale = try cluster.http(old, "/primary")
            #expect(stale.status == 503 && stale.body.contains(#""lease_remaining_ms":0"#), "\(stale)")

            // The standbys die too: the primary's lease runs out and it fences itself.
            for standby in cluster.ids where standby != old { await cluster.killManager(standby) }
            try await waitUntil("the primary stops postgres once its lease ran out", timeout: .seconds(15)) {
                cluster.postgresPID(of: old) == nil
            }

            // Everything comes back: the cluster recovers with nothing acknowledged lost.
            try cluster.witnesses.start(leader)
            try cluster.witnesses.start(second)
            for standby in cluster.ids where standby != old { try cluster.startManager(standby) }
            _ = try await cluster.waitForHealthy(timeout: .seconds(120))
            let before = writer.count
            try await waitUntil("writes resume", timeout: .seconds(30)) { writer.count >= before + 50 }
            await writer.stop()
            // The log may have looked healthy at once, from before the fencing; the old primary
            // then either took writes again or, unheard for too long, was failed over. Either
            // way, the primary once the cluster settles holds every acknowledged row.
            let settled = try await cluster.waitForHealthy(timeout: .seconds(120))
            try await expectAllAcknowledged(writer, on: try #require(primary(settled)), cluster)
        }
    }

    @Test("maintenance with real postgres: a standby is left alone until it rejoins; the primary hands over first; nothing acknowledged lost")
    func maintenance() async throws {
        try await withPGCluster { cluster in
            let old = try #require(primary(try await cluster.clusterState()))
            let standby = cluster.ids.first { $0 != old }!
            let other = cluster.ids.first { $0 != old && $0 != standby }!
            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }

            // A standby in maintenance: the primary waits for the other one only, and the
            // manager leaves postgres to the operator — stopped, it stays stopped.
            let enable = try await cli(cluster, ["maintenance", "enable", "\(standby)"])
            #expect(enable.termination == .exited(code: 0), "\(enable.output)")
            try await waitUntil("the primary waits for the other standby only", timeout: .seconds(15)) {
                try cluster.sql(on: old, "SHOW synchronous_standby_names") == ["ANY 1 (pgquorum_\(other))"]
            }
            let postmaster = try #require(cluster.postgresPID(of: standby))
            kill(postmaster, SIGINT)  // the operator's fast shutdown
            try await waitUntil("the standby's postgres stops", timeout: .seconds(30)) { cluster.postgresPID(of: standby) == nil }
            let stopped = ContinuousClock.now
            try await Task.sleep(for: .seconds(3))
            #expect(cluster.postgresPID(of: standby) == nil, "the manager restarted postgres in maintenance")
            #expect(writer.longestGap(from: stopped, to: ContinuousClock.now) < .seconds(2), "writes paused while a standby was in maintenance")
            let during = try await cluster.clusterState()
            #expect(during[standby]?.reached == .maintenance && during[old]?.goal == .primary, "\(during.sortedNodes.map { ($0.id, $0.reached, $0.goal) })")

            // Maintenance over: it rejoins and catches up with everything acknowledged.
            let disable = try await cli(cluster, ["maintenance", "disable", "\(standby)"])
            #expect(disable.termination == .exited(code: 0), "\(disable.output)")
            _ = try await cluster.waitForHealthy(timeout: .seconds(90))
            try await expectStandbyWithEveryAcknowledgedRow(standby, writer, cluster)

            // The primary in maintenance: a standby takes over first, the writer follows.
            let handedOver = ContinuousClock.now
            let primaryMaintenance = try await cli(cluster, ["maintenance", "enable", "\(old)"])
            #expect(primaryMaintenance.termination == .exited(code: 0), "\(primaryMaintenance.output)")
            let withoutOld = try await cluster.waitFor("another node is primary, the old one in maintenance", timeout: .seconds(60)) { state in
                guard let primary = self.primary(state) else { return false }
                return primary != old && state[old]?.reached == .maintenance
            }
            let new = try #require(primary(withoutOld))
            #expect(cluster.postgresPID(of: old) == nil, "the old primary's postgres still runs in maintenance")
            let before = writer.count
            try await waitUntil("the writer resumes on the new primary", timeout: .seconds(30)) { writer.count >= before + 100 }
            if let outage = writer.outage(after: handedOver) { print("primary maintenance: writes came back \(outage) after the request") }
            try await expectAllAcknowledged(writer, on: new, cluster)

            // And back: the old primary rejoins as a standby of the new one.
            let back = try await cli(cluster, ["maintenance", "disable", "\(old)"])
            #expect(back.termination == .exited(code: 0), "\(back.output)")
            let healthy = try await cluster.waitForHealthy(timeout: .seconds(90))
            #expect(primary(healthy) == new)
            await writer.stop()
            try await expectStandbyWithEveryAcknowledgedRow(old, writer, cluster)
        }
    }

    @Test("fast forward: the elected standby lacks the newest acknowledged writes and fetches them from the most advanced one before it is promoted")
    func fastForward() async throws {
        // Node 2 wins any election by priority; node 3 will hold WAL that node 2 lacks.
        try await withPGCluster(nodeArguments: [2: ["--candidate-priority", "100"]]) { cluster in
            let old = try #require(primary(try await cluster.clusterState()))
            #expect(old == 1)
            try await createTable(cluster)
            let writer = RowWriter(uri: try await cluster.uri())
            try await waitUntil("the writer commits", timeout: .seconds(20)) { writer.count >= 100 }

            // Node 2's WAL receiver is frozen; the primary goes on with node 3 as its quorum
            // and writes more WAL than the socket buffers to node 2 can hold.
            let receiver = try #require(
                try await onOwnThread { try cluster.sql(on: 2, "SELECT pid FROM pg_stat_wal_receiver") }.first.flatMap { $0.flatMap(pid_t.init) })
            kill(receiver, SIGSTOP)
            do {
                try await onOwnThread {
                    _ = try cluster.sql(on: old, "CREATE TABLE bulk AS SELECT g, repeat('x', 1000) AS filler FROM generate_series(1, 40000) g")
                }
                let before = writer.count
                try await waitUntil("the writer commits with node 3 alone", timeout: .seconds(30)) { writer.count >= before + 200 }

                // The primary dies; node 2 can receive nothing more from it.
                let postmaster = try #require(cluster.postgresPID(of: old))
                await cluster.killManager(old)
                try await waitUntil("the old primary's postgres is gone", timeout: .seconds(10)) { !ProcessTree.isAlive(postmaster) }
            } catch {
                kill(receiver, SIGCONT)
                throw error
            }
            kill(receiver, SIGCONT)
            let lagging = try await onOwnThread { try cluster.sql(on: 2, "SELECT count(*) FROM acked") }
            let failedOver = try await cluster.waitFor("node 2 becomes primary", timeout: .seconds(60)) { self.primary($0) == 2 }
            #expect(primary(failedOver) == 2)
            let before = writer.count
            try await waitUntil("the writer resumes on node 2", timeout: .seconds(30)) { writer.count >= before + 100 }
            await writer.stop()
            try await expectAllAcknowledged(writer, on: 2, cluster)
            #expect(try await onOwnThread { try cluster.sql(on: 2, "SELECT count(*) FROM bulk") } == ["40000"])

            // The path it took: fetched the missing WAL from node 3, then promoted.
            let log = try await cli(cluster, ["log", "--node", "2", "--kind", "state-reached"])
            #expect(log.output.contains("node 2 reached fast_forward"), "\(log.output)")
            #expect(log.output.contains("fast_forward -> prepare_promotion: caught up with the most advanced standby"), "\(log.output)")
            print("fast forward: node 2 held \(lagging.first.flatMap { $0 } ?? "?") acknowledged rows when the primary died")
        }
    }

    @Test("a standby that was away while the primary recycled the WAL it needs (its slot capped by max_slot_wal_keep_size) is cloned afresh and catches up")
    func standbyBehindRecycledWAL() async throws {
        let settings = ["--postgres-settings", "fsync=off,wal_keep_size=32MB,max_wal_size=96MB"]
        try await withPGCluster(nodeArguments: [1: settings, 2: settings, 3: settings]) { cluster in
            let primary = try #require(primary(try await cluster.clusterState()))
            let away = cluster.ids.last { $0 != primary }!
            let capped = try await cli(cluster, ["settings", "set", "max_slot_wal_keep_size", "32MB"])
            #expect(capped.termination == .exited(code: 0), "\(capped.output)")
            try await waitUntil("the primary caps its slots", timeout: .seconds(20)) {
                try cluster.sql(on: primary, "SHOW max_slot_wal_keep_size") == ["32MB"]
            }
            await cluster.killManager(away)
            try await waitUntil("its postgres is gone", timeout: .seconds(10)) { cluster.postgresPID(of: away) == nil }

            // Far more WAL than wal_keep_size, then checkpoints: the segments it needs are gone.
            let missing = try await onOwnThread { () throws -> String? in
                let first = try cluster.sql(on: primary, "SELECT pg_walfile_name(pg_current_wal_lsn())").first ?? nil
                _ = try cluster.sql(on: primary, "CREATE TABLE filler AS SELECT g, repeat('x', 1000) AS padding FROM generate_series(1, 150000) g")
                for _ in 0..<3 { _ = try cluster.sql(on: primary, "SELECT pg_switch_wal()"); _ = try cluster.sql(on: primary, "CHECKPOINT") }
                return first
            }
            let segment = try #require(missing)
            #expect(!FileManager.default.fileExists(atPath: cluster.directory(of: primary) + "/data/pg_wal/" + segment), "the primary kept \(segment)")

            try cluster.startManager(away)
            try await waitUntil("the standby that was away holds every row", timeout: .seconds(120)) {
                try cluster.sql(on: away, "SELECT count(*) FROM filler") == ["150000"]
            }
            let state = try await cluster.waitForHealthy(timeout: .seconds(60))
            #expect(state[away]?.reached == .secondary)
        }
    }

    @Test("replication slots: every node keeps one for every other node; a standby away while far more than wal_keep_size was written catches up from its slot without a new clone; status shows what the slot holds")
    func standbyCatchesUpFromSlot() async throws {
        let settings = ["--postgres-settings", "fsync=off,wal_keep_size=32MB,max_wal_size=96MB"]
        try await withPGCluster(nodeArguments: [1: settings, 2: settings, 3: settings]) { cluster in
            let primary = try #require(primary(try await cluster.clusterState()))
            let away = cluster.ids.last { $0 != primary }!
            // Every node has a slot for each of the others: a failover keeps them.
            for id in cluster.ids {
                let expected = cluster.ids.filter { $0 != id }.map { "pgquorum_\($0)" }
                try await waitUntil("node \(id) keeps slots for the others", timeout: .seconds(20)) {
                    try cluster.sql(on: id, "SELECT slot_name FROM pg_replication_slots ORDER BY slot_name").compactMap { $0 } == expected
                }
            }
            await cluster.killManager(away)
            try await waitUntil("its postgres is gone", timeout: .seconds(10)) { cluster.postgresPID(of: away) == nil }
            let fillerStart = try await onOwnThread { try cluster.sql(on: primary, "SELECT pg_current_wal_lsn()").first ?? nil }
            let first = try await onOwnThread { () throws -> String? in
                _ = try cluster.sql(on: primary, "CREATE TABLE filler AS SELECT g, repeat('x', 1000) AS padding FROM generate_series(1, 150000) g")
                for _ in 0..<3 { _ = try cluster.sql(on: primary, "SELECT pg_switch_wal()"); _ = try cluster.sql(on: primary, "CHECKPOINT") }
                return try cluster.sql(on: primary, "SELECT pg_walfile_name(restart_lsn + 1) FROM pg_replication_slots WHERE slot_name = 'pgquorum_\(away)'").first ?? nil
            }
            // Far beyond wal_keep_size (32MB) and max_wal_size, the oldest segment the standby
            // needs is still there.
            let segment = try #require(first)
            #expect(FileManager.default.fileExists(atPath: cluster.directory(of: primary) + "/data/pg_wal/" + segment), "the slot kept \(segment)")
            _ = try await cluster.waitFor("the primary reports what the slot holds", timeout: .seconds(20)) { state in
                state[away].flatMap { state.slotRetainedBytes(of: $0) }.map { $0 > 96 << 20 && $0 != .max } ?? false
            }
            let status = try await cli(cluster, ["status", "--json"])
            let document = try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any]
            let node = (document?["nodes"] as? [[String: Any]])?.first { $0["id"] as? Int == Int(away) }
            #expect((node?["slot_retained_bytes"] as? Int).map { $0 > 96 << 20 } == true, "\(status.output)")
            #expect(node?["slot_lost"] as? Bool == false, "\(status.output)")

            try cluster.startManager(away)
            try await waitUntil("the standby that was away holds every row", timeout: .seconds(120)) {
                try cluster.sql(on: away, "SELECT count(*) FROM filler") == ["150000"]
            }
            let state = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(60))
            #expect(state[away]?.reached == .secondary)
            let log = (try? String(contentsOfFile: cluster.logPath(of: away), encoding: .utf8)) ?? ""
            #expect(!log.contains("cloning it afresh") && !log.contains("\"cloning\""), "it streamed from its slot, no clone")
            // The other standby's slots follow the nodes' reported positions (a WAL segment at a
            // time): they no longer hold the filler's first 100 MB, so a failover to it would
            // keep only what the others need.
            let other = try #require(cluster.ids.first { $0 != primary && $0 != away })
            for slot in [primary, away] {
                try await waitUntil("node \(other)'s slot for node \(slot) moves past the filler", timeout: .seconds(30)) {
                    try cluster.sql(
                        on: other, "SELECT restart_lsn >= '\(fillerStart ?? "0/0")'::pg_lsn + 100000000 FROM pg_replication_slots WHERE slot_name = 'pgquorum_\(slot)'")
                        == ["t"]
                }
            }
        }
    }

    @Test("a dropped node's manager stops postgres and exits 0, and every node drops its slot; started again, it exits 1 saying the node is not registered")
    func dropNode() async throws {
        try await withPGCluster { cluster in
            let primary = try #require(primary(try await cluster.clusterState()))
            let dropped = cluster.ids.last { $0 != primary }!
            let postmaster = try #require(cluster.postgresPID(of: dropped))
            let drop = try await cli(cluster, ["drop", "\(dropped)"])
            #expect(drop.termination == .exited(code: 0), "\(drop.output)")
            let manager = try #require(cluster.manager(of: dropped))
            #expect(await manager.wait(timeout: .seconds(60)) == .exited(code: 0))
            #expect(!ProcessTree.isAlive(postmaster))
            // Converged, the primary waits for the remaining standby alone. (Under load the
            // standby may miss a report and leave synchronous replication for a moment: the
            // wait is for the settled state, not the first converged one.)
            let remaining = try #require(cluster.ids.first { $0 != primary && $0 != dropped })
            let state = try await cluster.waitFor("the formation has the two other nodes, converged, the primary waiting for node \(remaining)", timeout: .seconds(60)) { state in
                state.sortedNodes.map(\.id) == cluster.ids.filter { $0 != dropped } && state.sortedNodes.allSatisfy(\.isConverged)
                    && state[primary]?.goal == .primary
            }
            #expect(state.synchronousStandbyNames(for: primary) == "ANY 1 (pgquorum_\(remaining))")
            try await waitUntil("the primary's postgres waits for node \(remaining) alone", timeout: .seconds(20)) {
                try cluster.sql(on: primary, "SHOW synchronous_standby_names") == ["ANY 1 (pgquorum_\(remaining))"]
            }
            // Its replication slots go with it, on every node.
            for id in cluster.ids where id != dropped {
                try await waitUntil("node \(id) drops its slot for node \(dropped)", timeout: .seconds(20)) {
                    try cluster.sql(on: id, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgquorum_\(dropped)'") == ["0"]
                }
            }
            let log = (try? String(contentsOfFile: cluster.logPath(of: dropped), encoding: .utf8)) ?? ""
            #expect(log.contains("this node was dropped from the formation: the manager ends"))

            // Its node.conf still names the dropped id: the manager refuses to run it.
            try cluster.startManager(dropped)
            let again = try #require(cluster.manager(of: dropped))
            #expect(await again.wait(timeout: .seconds(60)) == .exited(code: 1))
            let output = (try? String(contentsOfFile: cluster.logPath(of: dropped), encoding: .utf8)) ?? ""
            #expect(output.contains("Error: node \(dropped) is not registered in formation default: run `pgquorum node create` for it (again, if it was dropped)"))
        }
    }
}
