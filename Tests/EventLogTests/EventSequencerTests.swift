import Testing

@testable import EventLog

@Suite("witness leader's event sequencer")
struct EventSequencerTests {
    func report(_ node: PGNodeID, lsn: LSN, sentAt: UInt64 = 0) -> NodeReport {
        NodeReport(node: node, reachedState: .secondary, postgresRunning: true, timeline: 1, flushLSN: lsn, replayLSN: lsn, sentAtNanos: sentAt)
    }

    @Test("reports of a tick are coalesced: the latest per node, every token acknowledged by one record")
    func coalescing() throws {
        var sequencer = EventSequencer()
        sequencer.becameLeader(term: 3, nowNanos: 10_000_000_000)
        try sequencer.submit(report(2, lsn: 100), formation: "default", token: 1)
        try sequencer.submit(report(1, lsn: 50), formation: "default", token: 2)
        try sequencer.submit(report(2, lsn: 200), formation: "default", token: 3)
        try sequencer.submit(report(7, lsn: 9), formation: "analytics", token: 4)
        let proposals = sequencer.tick(nowNanos: 10_400_000_000, wallTimeMillis: 1234)
        let stamp = LogStamp(leaderClockNanos: 400_000_000, wallTimeMillis: 1234)
        #expect(proposals == [
            EventSequencer.Proposal(record: EventRecord(formation: "analytics", stamp: stamp, event: .nodeReports([report(7, lsn: 9)])), tokens: [4]),
            EventSequencer.Proposal(
                record: EventRecord(formation: "default", stamp: stamp, event: .nodeReports([report(1, lsn: 50), report(2, lsn: 200)])),
                tokens: [2, 1, 3]),
        ])
        // Nothing pending and less than a tick since the last record: nothing to propose.
        #expect(sequencer.tick(nowNanos: 10_500_000_000, wallTimeMillis: 1300).isEmpty)
    }

    @Test("a report with news (a state reached, postgres started or stopped since the node's last report this term) asks for a flush; heartbeats do not")
    func news() throws {
        var sequencer = EventSequencer()
        sequencer.becameLeader(term: 3, nowNanos: 0)
        #expect(try sequencer.submit(report(2, lsn: 100), formation: "default", token: 1) == false, "the first report of the term")
        #expect(try sequencer.submit(report(2, lsn: 200), formation: "default", token: 2) == false, "a heartbeat: only the LSN moved")
        var reached = report(2, lsn: 200)
        reached.reachedState = .reportLSN
        #expect(try sequencer.submit(reached, formation: "default", token: 3) == true, "a state reached")
        #expect(try sequencer.submit(reached, formation: "default", token: 4) == false)
        #expect(try sequencer.submit(report(3, lsn: 1), formation: "other", token: 5) == false, "per formation and node")
        var down = reached
        down.postgresRunning = false
        #expect(try sequencer.submit(down, formation: "default", token: 6) == true, "postgres stopped")
        // A new term starts over: nothing to compare with.
        sequencer.becameLeader(term: 4, nowNanos: 0)
        #expect(try sequencer.submit(report(2, lsn: 300), formation: "default", token: 7) == false)
    }

    @Test("an idle tick interval appends a tick record; stamps count from the term's start")
    func idleTicks() throws {
        var sequencer = EventSequencer()
        sequencer.becameLeader(term: 1, nowNanos: 5_000)
        #expect(sequencer.tick(nowNanos: 5_000 + 499_999_999, wallTimeMillis: 0).isEmpty)
        let proposals = sequencer.tick(nowNanos: 5_000 + 500_000_000, wallTimeMillis: 7)
        #expect(proposals == [EventSequencer.Proposal(record: EventRecord(stamp: LogStamp(leaderClockNanos: 500_000_000, wallTimeMillis: 7), event: .tick), tokens: [])])
        // A stamped event resets the idle timer.
        let record = try sequencer.stamp(.operatorRequest(.switchover(target: nil)), formation: "default", nowNanos: 5_000 + 900_000_000, wallTimeMillis: 8)
        #expect(record.stamp.leaderClockNanos == 900_000_000)
        #expect(sequencer.tick(nowNanos: 5_000 + 1_000_000_000, wallTimeMillis: 9).isEmpty)
        // At a deadline of the cluster state a tick goes out at once.
        #expect(
            sequencer.tick(nowNanos: 5_000 + 1_000_000_000, wallTimeMillis: 9, deadline: true)
                == [EventSequencer.Proposal(record: EventRecord(stamp: LogStamp(leaderClockNanos: 1_000_000_000, wallTimeMillis: 9), event: .tick), tokens: [])])
        #expect(sequencer.leaderClockNanos(at: 5_000 + 1_200_000_000) == 1_200_000_000)
    }

    @Test("a new term restarts log time; a follower refuses and a step-down returns pending tokens")
    func leadership() throws {
        var sequencer = EventSequencer()
        #expect(throws: EventSequencer.Refusal.notLeader) { try sequencer.submit(report(1, lsn: 1), formation: "default", token: 1) }
        #expect(sequencer.tick(nowNanos: 1_000_000_000_000, wallTimeMillis: 0).isEmpty)
        sequencer.becameLeader(term: 1, nowNanos: 0)
        try sequencer.submit(report(1, lsn: 1), formation: "default", token: 5)
        try sequencer.submit(report(2, lsn: 1), formation: "default", token: 6)
        #expect(sequencer.steppedDown() == [5, 6])
        #expect(throws: EventSequencer.Refusal.notLeader) {
            try sequencer.stamp(.tick, formation: "default", nowNanos: 1, wallTimeMillis: 0)
        }
        sequencer.becameLeader(term: 2, nowNanos: 77_000_000_000)
        let record = try sequencer.stamp(.tick, formation: "default", nowNanos: 77_000_000_001, wallTimeMillis: 0)
        #expect(record.stamp.leaderClockNanos == 1)
    }

    @Test("the number of nodes waiting in one formation is bounded")
    func bounded() throws {
        var configuration = EventSequencer.Configuration()
        configuration.pendingNodesMax = 2
        var sequencer = EventSequencer(configuration: configuration)
        sequencer.becameLeader(term: 1, nowNanos: 0)
        try sequencer.submit(report(1, lsn: 1), formation: "default", token: 1)
        try sequencer.submit(report(2, lsn: 1), formation: "default", token: 2)
        try sequencer.submit(report(2, lsn: 2), formation: "default", token: 3)
        #expect(throws: EventSequencer.Refusal.tooManyPendingNodes(formation: "default", maximum: 2)) {
            try sequencer.submit(report(3, lsn: 1), formation: "default", token: 4)
        }
    }
}
