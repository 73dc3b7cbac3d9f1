import Foundation
import Synchronization
import Testing
import TestSupport

@testable import NodeControl

/// Runs `body` with fixtures that are destroyed (postgres stopped by pid, folders removed)
/// whatever happens.
func withNodes(_ names: [String], _ body: ([NodeFixture]) async throws -> Void) async throws {
    var fixtures: [NodeFixture] = []
    do {
        for name in names { fixtures.append(try NodeFixture(name: name)) }
        try await body(fixtures)
    } catch {
        for fixture in fixtures { await fixture.destroy() }
        throw error
    }
    for fixture in fixtures { await fixture.destroy() }
}

@Suite("PostgreSQL nodes: replication, promotion, rewind", .serialized)
struct PostgresNodeTests {
    @Test("a standby cloned with pg_basebackup streams a row written on the primary; progress is reported")
    func basebackupAndStream() async throws {
        try await withNodes(["node_1", "node_2"]) { nodes in
            let (primary, standby) = (nodes[0], nodes[1])
            try await primary.startPrimary()
            try primary.node.createSlot("node_2")
            try primary.node.createSlot("node_2")  // idempotent
            let reports = Mutex<[CopyProgress]>([])
            let node = standby.node
            try await onOwnThread { try node.basebackup(from: primary.source, slot: "node_2") { progress in reports.withLock { $0.append(progress) } } }
            try await standby.node.start()
            #expect(reports.withLock { $0.last?.percent } == 100)
            #expect(reports.withLock { $0.allSatisfy { $0.totalBytes > 0 } })

            try primary.sql("CREATE TABLE t (id int PRIMARY KEY, note text)")
            try primary.sql("INSERT INTO t VALUES (1, 'from the primary')")
            try await waitUntil("the row reaches the standby") { try standby.sql("SELECT note FROM t WHERE id = 1") == "from the primary" }

            let primaryView = try primary.node.observe()
            #expect(!primaryView.inRecovery)
            #expect(primaryView.timeline == 1)
            #expect(primaryView.replication.map(\.applicationName) == ["node_2"])
            #expect(primaryView.replication.first?.state == "streaming")
            let standbyView = try standby.node.observe()
            #expect(standbyView.inRecovery)
            #expect(standbyView.systemIdentifier == primaryView.systemIdentifier)
            #expect(standbyView.walReceiver?.status == "streaming")
            #expect(standbyView.walReceiver?.senderPort == primary.node.configuration.port)
            #expect(standbyView.synchronousStandbyNames == "")
            #expect(try primary.node.slots() == ["node_2"])

            // Each server logs through its collector into log/ of its data directory; the
            // clone did not keep the primary's log (its lines would read as the standby's).
            let logFile = try #require(standby.node.currentLogFile)
            #expect(logFile.hasPrefix(standby.node.dataDirectory + "/log/postgresql-"), "\(logFile)")
            let standbyLog = try String(contentsOfFile: logFile, encoding: .utf8)
            #expect(standbyLog.contains("started streaming WAL"))
            #expect(!standbyLog.contains("ready to accept connections"), "the primary's log came with the clone")
            #expect(standby.node.logTail().contains("started streaming WAL"))

            // A standby keeps slots for its peers and moves them forward as it replays.
            try standby.node.createSlot("node_3")
            let replayed = try standby.node.observe().replayLSN
            try standby.node.advanceSlot("node_3", to: replayed)
            let restart = try standby.sql("SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'node_3'")
            #expect(restart.flatMap(LSNFormat.parse) == replayed)
            try standby.node.dropSlot("node_3")
            #expect(try standby.node.slots() == [])

            // Changing the upstream is a reload: the WAL receiver leaves for the new address…
            let nowhere = ReplicationSource(host: "127.0.0.1", port: try FreePort.next())
            try standby.node.configureStandby(upstream: nowhere, slot: "node_2")
            try await waitUntil("the standby stops streaming from the primary") {
                try primary.node.observe().replication.isEmpty
            }
            // …and comes back when pointed at the primary again, without a restart.
            let pid = standby.node.pid
            try standby.node.configureStandby(upstream: primary.source, slot: "node_2")
            try await waitUntil("the standby streams from the primary again") {
                try standby.node.observe().walReceiver?.status == "streaming"
            }
            #expect(standby.node.pid == pid)
        }
    }

    @Test("observations keep one connection (one backend, not a new one each time); after postgres restarted, the next observation opens a new one")
    func observationConnectionKept() async throws {
        try await withNodes(["node_1", "node_2"]) { nodes in
            let (primary, standby) = (nodes[0], nodes[1])
            try await startPrimaryAndStandby(primary, standby)
            let managerBackends = "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE application_name = 'pgquorum_manager' AND pid <> pg_backend_pid()"
            _ = try primary.node.observe()
            let first = try primary.sql(managerBackends)
            #expect(first?.isEmpty == false, "the observation's backend stays")
            for _ in 0..<5 { _ = try primary.node.observe() }
            #expect(try primary.sql(managerBackends) == first, "the same backend, not a new one per observation")
            // Its backend ended under it (an administrator, idle_session_timeout): the next
            // observation fails on it once, quietly, and opens a new one.
            try primary.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgquorum_manager' AND pid <> pg_backend_pid()")
            #expect(try primary.node.observe().inRecovery == false)
            let replaced = try primary.sql(managerBackends)
            #expect(replaced?.isEmpty == false && replaced != first)
            // A restart ends that backend: the next observation notices and reconnects.
            await primary.node.stop(.fast)
            try await primary.node.start()
            #expect(try primary.node.observe().inRecovery == false)
            let after = try primary.sql(managerBackends)
            #expect(after?.isEmpty == false && after != replaced)
            // A standby's observation too, through its promotion.
            #expect(try standby.node.observe().inRecovery)
            try await onOwnThread { try standby.node.promote() }
            try await waitUntil("the kept connection sees the promotion") { try standby.node.observe().inRecovery == false }
        }
    }

    @Test("promote the standby, rewind the old primary to follow it; a row written after the promotion reaches it")
    func promoteAndRewind() async throws {
        try await withNodes(["node_1", "node_2"]) { nodes in
            let (oldPrimary, newPrimary) = (nodes[0], nodes[1])
            try await startPrimaryAndStandby(oldPrimary, newPrimary)
            try oldPrimary.sql("CREATE TABLE t (id int PRIMARY KEY)")
            try oldPrimary.sql("INSERT INTO t VALUES (1)")
            try await waitUntil("row 1 reaches the standby") { try newPrimary.sql("SELECT count(*) FROM t") == "1" }

            try newPrimary.node.setReadOnly(true)
            try await onOwnThread { try newPrimary.node.promote() }
            #expect(try newPrimary.node.observe().inRecovery == false)
            // Read-only until told otherwise: a write fails with SQLSTATE 25006.
            #expect {
                try newPrimary.sql("INSERT INTO t VALUES (2)")
            } throws: { error in (error as? PostgresError)?.sqlState == "25006" }
            try newPrimary.node.setReadOnly(false)
            try newPrimary.sql("INSERT INTO t VALUES (2)")
            // The old primary diverges a little before it is fenced.
            try oldPrimary.sql("INSERT INTO t VALUES (100)")
            try await onOwnThread { try newPrimary.node.checkpoint() }
            #expect(try newPrimary.node.observe().timeline == 2)

            try newPrimary.node.createSlot("node_1")
            try newPrimary.node.writeHBA(peers: ["127.0.0.1"])
            let outcome = try await oldPrimary.node.rewind(from: newPrimary.source, slot: "node_1", recloneOnFailure: false)
            #expect(outcome == .rewound)
            try await oldPrimary.node.start()
            try newPrimary.sql("INSERT INTO t VALUES (3)")
            try await waitUntil("rows 1, 2, 3 (and not 100) on the old primary") {
                try oldPrimary.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t") == "1,2,3"
            }
            let view = try oldPrimary.node.observe()
            #expect(view.inRecovery)
            #expect(view.timeline == 2)
        }
    }

    @Test("with ANY 1 (node_2) a commit waits while the standby is down and goes through once it is back")
    func synchronousCommitWaits() async throws {
        try await withNodes(["node_1", "node_2"]) { nodes in
            let (primary, standby) = (nodes[0], nodes[1])
            try await startPrimaryAndStandby(primary, standby)
            try primary.sql("CREATE TABLE t (id int)")
            try primary.node.setSynchronousStandbyNames("ANY 1 (node_2)")
            try await waitUntil("node_2 is a quorum standby") {
                try primary.node.observe().replication.first?.syncState == "quorum"
            }
            await standby.node.stop(.fast)

            let options = primary.node.localConnectionOptions()
            let writer = Task {
                try await onOwnThread { () throws -> String? in
                    var writerOptions = options
                    writerOptions.settings = ["statement_timeout": "60s"]
                    let connection = try PostgresConnection(writerOptions)
                    defer { connection.close() }
                    try connection.query("INSERT INTO t VALUES (1)")
                    return try connection.scalar("SELECT count(*) FROM t")
                }
            }
            try await waitUntil("the commit waits for synchronous replication") {
                try primary.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == "1"
            }
            try await standby.node.start()
            let count = try await writer.value
            #expect(count == "1")
            try await waitUntil("the row is on the standby") { try standby.sql("SELECT count(*) FROM t") == "1" }
        }
    }

    @Test("a commit waiting for a missing synchronous standby ends when cancelled, committed locally only")
    func cancelledSynchronousWait() async throws {
        try await withNodes(["node_1"]) { nodes in
            let primary = nodes[0]
            try await primary.startPrimary()
            try primary.sql("CREATE TABLE t (id int)")
            try primary.node.setSynchronousStandbyNames("ANY 1 (node_9)")
            // The reload is asynchronous: a commit before it is applied would not wait.
            try await waitUntil("the primary applied synchronous_standby_names") {
                try primary.sql("SHOW synchronous_standby_names") == "ANY 1 (node_9)"
            }
            let options = primary.node.localConnectionOptions()
            // statement_timeout does not apply to the wait at commit: only a cancel ends it.
            let writer = Task {
                try await onOwnThread { () throws -> Void in
                    var writerOptions = options
                    writerOptions.settings = ["statement_timeout": "200ms"]
                    let connection = try PostgresConnection(writerOptions)
                    defer { connection.close() }
                    try connection.query("INSERT INTO t VALUES (1)")
                }
            }
            try await waitUntil("the commit waits for synchronous replication") {
                try primary.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == "1"
            }
            try await Task.sleep(for: .milliseconds(400))
            #expect(try primary.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'") == "1")
            try primary.sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
            // PostgreSQL warns and reports success: the row is committed here, not replicated.
            try await writer.value
            #expect(try primary.sql("SELECT count(*) FROM t") == "1")
        }
    }

    @Test("postgres dies within a second when the process that started it is killed with SIGKILL")
    func postgresDiesWithItsManager() async throws {
        try await withNodes(["node_1"]) { nodes in
            let fixture = nodes[0]
            try await onOwnThread { try fixture.node.initialize(peers: ["127.0.0.1"]) }
            let output = fixture.folder.appending("helper.out")
            let helper = try ChildProcess.spawn(
                try BuiltProducts.path(of: "pgquorum-test-helper"),
                ["start-postgres", fixture.node.dataDirectory, fixture.node.configuration.runDirectory, String(fixture.node.configuration.port)],
                output: .file(path: output))
            var postmaster: pid_t = 0
            do {
                try await waitUntil("the helper printed the postmaster's pid") {
                    postmaster = pid_t((try String(contentsOfFile: output, encoding: .utf8)).split(separator: "\n").first.flatMap { Int32($0) } ?? 0)
                    return postmaster > 0
                }
            } catch {
                await helper.stop(signal: SIGKILL)
                throw error
            }
            #expect(ProcessTree.isAlive(postmaster))
            // Timed on a thread of its own, so that a busy cooperative pool cannot delay the
            // measurement itself.
            let pid = postmaster
            let helperPID = helper.pid
            let survived = try await onOwnThread { () -> Duration? in
                let clock = ContinuousClock()
                kill(helperPID, SIGKILL)
                let killed = clock.now
                while clock.now - killed < .seconds(5) {
                    if !ProcessTree.isAlive(pid) { return clock.now - killed }
                    usleep(5_000)
                }
                return nil
            }
            _ = await helper.wait(timeout: .seconds(5))
            let elapsed = try #require(survived, "postgres still runs 5 s after its starter was killed")
            #expect(elapsed < .seconds(1))
        }
    }
}

/// Starts `primary`, then clones `standby` from it through a slot named after the standby
/// and starts it streaming.
func startPrimaryAndStandby(_ primary: NodeFixture, _ standby: NodeFixture) async throws {
    try await primary.startPrimary()
    try primary.node.createSlot(standby.name)
    try await onOwnThread { try standby.node.basebackup(from: primary.source, slot: standby.name) }
    try await standby.node.start()
}
