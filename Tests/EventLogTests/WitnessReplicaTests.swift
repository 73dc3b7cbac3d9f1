import Foundation
import Logging
import Raft
import Synchronization
import Testing
import TestSupport

@testable import EventLog

/// The witness's replica driven directly, on real LMDB files, without sockets.
@Suite("witness replica")
struct WitnessReplicaTests {
    /// A lone witness (its own quorum) that snapshots every 10 entries and keeps 1 after.
    func lone(
        _ folder: TemporaryDirectory, fatal: FatalRecorder, application: (any WitnessApplication)? = nil,
        configure: (inout WitnessConfiguration) -> Void = { _ in }
    ) throws -> WitnessReplica {
        var configuration = WitnessConfiguration(
            id: 1, dataDirectory: folder.appending("witness"), listen: WitnessEndpoint(host: "127.0.0.1", port: 1),
            peers: [1: WitnessEndpoint(host: "127.0.0.1", port: 1)],
            credentials: WitnessCredentials(clusterID: "c1", caFile: "unused", certificateFile: "unused", keyFile: "unused"))
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        configuration.snapshotEntries = 10
        configuration.keepEntries = 1
        configure(&configuration)
        let replica = WitnessReplica(
            configuration: configuration, application: application, logger: Logger(label: "test"),
            transport: WitnessReplica.Transport(send: { _ in }, onApplied: {}, onFatal: { reason in fatal.reason = reason }))
        try replica.open()
        for _ in 0..<(4 * configuration.electionTicks) where !replica.isLeader {
            replica.tick()
            replica.processReady()
        }
        #expect(replica.isLeader)
        return replica
    }

    @Test("a snapshot records the membership in force at its own index, not at the commit index")
    func snapshotMembership() throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-replica")
        defer { folder.remove() }
        let fatal = FatalRecorder()
        let replica = try lone(folder, fatal: fatal)
        // Entries 1 (the founding voter) and 2 (the leader's empty entry) are there; eight
        // events fill 3…10, where the snapshot is taken; a learner is added at 12 (its address
        // at 11). All commit together, so when index 10 is applied the commit index already
        // covers the membership change.
        for tag in 1...8 {
            replica.append(EventRecord(stamp: LogStamp(leaderClockNanos: 0, wallTimeMillis: 0), event: .stateReached(node: UInt32(tag), state: .single))) { _ in }
        }
        replica.changeMembership(MembershipRequest.add(id: 2, address: "127.0.0.1:2")) { _ in }
        replica.processReady()
        #expect(replica.applied >= 12)
        #expect(replica.node.membership == Membership(voters: [1], learners: [2]))
        let storage = try LMDBRaftStorage(directory: folder.appending("witness"), configuration: LMDBConfiguration())
        defer { storage.close() }
        let snapshot = try storage.snapshot()
        #expect(snapshot.metadata.index == 10)
        #expect(snapshot.metadata.membership == Membership(voters: [1]))
        #expect(fatal.reason == nil)
        replica.stop()
    }
}

extension WitnessReplicaTests {
    @Test("a storage failure while handling a peer's message stops the replica, as one in a tick does")
    func storageFailureInStep() throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-replica")
        defer { folder.remove() }
        let fatal = FatalRecorder()
        let replica = try lone(folder, fatal: fatal)
        // Damage entry 2 (the leader's empty entry) behind the storage's back.
        let storage = replica.storage!
        let database = try storage.environment.openDatabase("entries")
        try storage.environment.write { txn in
            var value = try txn.get(database, LMDBKey.uint64(2))!
            value[12] ^= 0x10
            try txn.put(database, LMDBKey.uint64(2), value)
        }
        // A leader of a newer term appends after entry 2: checking its term reads the damage.
        var append = Message(kind: .append, from: 2, to: 1, term: replica.node.term + 1)
        append.index = 2
        append.logTerm = replica.node.term
        replica.step(append)
        #expect(fatal.reason?.contains("Raft storage failed") == true, "\(fatal.reason ?? "not stopped")")
        #expect(replica.stopped)
        replica.stop()
    }
}

extension WitnessReplicaTests {
    @Test("the leader appends a tick as soon as a deadline of the applied state passes, once per deadline, between its tick intervals")
    func deadlineTicks() throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-replica")
        defer { folder.remove() }
        let fatal = FatalRecorder()
        let application = DeadlineApplication()
        // Tick intervals of a minute: every tick record below comes from a deadline.
        let replica = try lone(folder, fatal: fatal, application: application) { $0.sequencerTickMillis = 60_000 }
        func run(ticks: Int) {
            for _ in 0..<ticks {
                replica.tick()
                replica.processReady()
            }
        }
        run(ticks: 5)
        #expect(application.ticks == 0)
        application.deadline = 1  // passed: log time runs from the term's start
        run(ticks: 5)
        #expect(application.ticks == 1, "one tick for one deadline")
        application.deadline = UInt64.max
        run(ticks: 5)
        #expect(application.ticks == 1, "a deadline still ahead")
        application.deadline = 2
        run(ticks: 1)
        #expect(application.ticks == 2, "a new deadline that passed")
        #expect(fatal.reason == nil)
        replica.stop()
    }

    @Test("a report that brings news (a state reached) is committed at once, with the heartbeats waiting beside it; a heartbeat waits for the tick interval")
    func reportsWithNewsFlushAtOnce() throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-replica")
        defer { folder.remove() }
        let fatal = FatalRecorder()
        // Tick intervals of a minute: nothing is flushed by time in this test.
        let replica = try lone(folder, fatal: fatal, application: DeadlineApplication()) { $0.sequencerTickMillis = 60_000 }
        let answered = Mutex<[UInt64: WitnessResponse]>([:])
        var answers: [UInt64: WitnessResponse] { answered.withLock { $0 } }
        func report(_ node: PGNodeID, _ state: NodeState, token: UInt64) {
            let report = NodeReport(node: node, reachedState: state, postgresRunning: true, timeline: 1, flushLSN: 1, replayLSN: 1, sentAtNanos: token)
            replica.report(report, formation: "default") { answer in answered.withLock { $0[token] = answer } }
        }
        func run(ticks: Int) {
            for _ in 0..<ticks {
                replica.tick()
                replica.processReady()
            }
        }
        report(1, .secondary, token: 1)
        report(2, .secondary, token: 2)
        run(ticks: 5)
        report(1, .secondary, token: 3)
        run(ticks: 5)
        #expect(answers.isEmpty, "heartbeats wait for the tick interval")
        report(2, .reportLSN, token: 4)
        run(ticks: 2)
        #expect(answers.keys.sorted() == [1, 2, 3, 4], "the news went at once, with the heartbeats waiting")
        if case .committed = answers[4] {} else { Issue.record("report 4 answered \(String(describing: answers[4]))") }
        #expect(fatal.reason == nil)
        replica.stop()
    }

    @Test("reports are flushed every heartbeat interval of the log's settings when it is shorter than the sequencer tick")
    func reportsFlushAtTheHeartbeatInterval() throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-replica")
        defer { folder.remove() }
        let fatal = FatalRecorder()
        let application = DeadlineApplication()
        let replica = try lone(folder, fatal: fatal, application: application) { $0.sequencerTickMillis = 60_000 }
        let answered = Mutex(0)
        func report(token: UInt64) {
            let report = NodeReport(node: 1, reachedState: .secondary, postgresRunning: true, timeline: 1, flushLSN: 1, replayLSN: 1, sentAtNanos: token)
            replica.report(report, formation: "default") { _ in answered.withLock { $0 += 1 } }
        }
        func run(ticks: Int) {
            for _ in 0..<ticks {
                replica.tick()
                replica.processReady()
            }
        }
        report(token: 1)
        run(ticks: 30)
        #expect(answered.withLock { $0 } == 0, "the sequencer tick is a minute")
        // Heartbeats every 100 ms, ticks of 50 ms: a flush every second tick.
        application.flushMillis = 100
        run(ticks: 2)
        #expect(answered.withLock { $0 } == 1)
        report(token: 2)
        run(ticks: 2)
        #expect(answered.withLock { $0 } == 2)
        #expect(fatal.reason == nil)
        replica.stop()
    }

    @Test("the ticks a witness may sleep through do nothing: the leader flushes reports at the tick ticksUntilTimerWork names, not before")
    func sleptTicksDoNothing() throws {
        let folder = try TemporaryDirectory(prefix: "pgquorum-replica")
        defer { folder.remove() }
        let fatal = FatalRecorder()
        let application = DeadlineApplication()
        // Ticks of 100 ms; reports flushed every 300 ms (every third tick), Raft's own timers
        // (heartbeats every second tick, check-quorum every eighth) in between.
        let replica = try lone(folder, fatal: fatal, application: application) { $0.sequencerTickMillis = 60_000 }
        application.flushMillis = 300
        let answered = Mutex(0)
        for token in 1...4 {
            let report = NodeReport(node: 1, reachedState: .secondary, postgresRunning: true, timeline: 1, flushLSN: 1, replayLSN: 1, sentAtNanos: UInt64(token))
            replica.report(report, formation: "default") { _ in answered.withLock { $0 += 1 } }
            var ticks = replica.ticksUntilTimerWork()
            // Tick by tick, as the shell would after sleeping: nothing commits before the tick
            // named, which is the flush or one of Raft's own timers (then name the next one).
            var delivered = 0
            while answered.withLock({ $0 }) < token {
                #expect(delivered < 6, "report \(token) not flushed within six ticks")
                if delivered >= 6 { break }
                for _ in 1..<ticks {
                    replica.tick()
                    replica.processReady()
                    #expect(answered.withLock { $0 } == token - 1, "a tick before the one named flushed report \(token)")
                }
                replica.tick()
                replica.processReady()
                delivered += ticks
                ticks = replica.ticksUntilTimerWork()
            }
        }
        #expect(fatal.reason == nil)
        replica.stop()
    }
}

/// An application whose next deadline the test sets; it counts the tick records applied.
final class DeadlineApplication: WitnessApplication, @unchecked Sendable {
    var deadline: UInt64?
    var ticks = 0

    func apply(_ entry: LogEntry) {
        if case .tick = entry.record.event { ticks += 1 }
    }

    func snapshotData() -> [UInt8] { [] }
    func restore(from data: [UInt8]) throws {}
    func nextDeadlineNanos() -> UInt64? { deadline }

    var flushMillis: UInt32?
    func reportFlushIntervalMillis() -> UInt32? { flushMillis }
}

/// Why the replica gave up, if it did (it is driven on one thread here).
final class FatalRecorder: @unchecked Sendable {
    var reason: String?
}
