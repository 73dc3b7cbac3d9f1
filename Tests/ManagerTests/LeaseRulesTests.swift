import EventLog
import NodeControl
import Testing

@testable import Manager

@Suite("lease rules and the watch of the WAL receiver")
struct LeaseRulesTests {
    static let quorum: Set<String> = ["pgquorum_2", "pgquorum_3"]

    static func peer(_ name: String, replyAge: UInt64, connected: UInt64?) -> ReplicationPeer {
        ReplicationPeer(applicationName: name, state: "streaming", syncState: "quorum", replyAgeMillis: replyAge, connectedMillis: connected)
    }

    @Test("a fresh reply holds the primary only over a connection older than the receiver watch's gap")
    func settledConnectionsOnly() {
        let settled = LeaseRules.settledConnectionMillis
        let held = LeaseRules.remainingBySynchronousStandbys(
            [Self.peer("pgquorum_2", replyAge: 200, connected: settled)], quorumNames: Self.quorum, k: 1, leaseMillis: 1500)
        #expect(held.remainingNanos == 1_300_000_000)
        #expect(held.freshStandbys == 1)
        // A connection younger than that may have lived between two observations of the
        // standby's manager, which then reports its receiver gone since before it: it must
        // not hold the primary.
        let young = LeaseRules.remainingBySynchronousStandbys(
            [Self.peer("pgquorum_2", replyAge: 200, connected: settled - 1)], quorumNames: Self.quorum, k: 1, leaseMillis: 1500)
        #expect(young.remainingNanos == nil)
        #expect(young.freshStandbys == 0)
        let unknown = LeaseRules.remainingBySynchronousStandbys(
            [Self.peer("pgquorum_2", replyAge: 200, connected: nil)], quorumNames: Self.quorum, k: 1, leaseMillis: 1500)
        #expect(unknown.remainingNanos == nil)
        #expect(LeaseRules.settledConnectionMillis * 1_000_000 > ReceiverWatch.gapNanos)
    }

    @Test("the k-th freshest settled reply decides, and stale or foreign ones never count")
    func kthFreshest() {
        let peers = [
            Self.peer("pgquorum_2", replyAge: 100, connected: 60_000),
            Self.peer("pgquorum_3", replyAge: 900, connected: 60_000),
            Self.peer("pgquorum_4", replyAge: 0, connected: 60_000),
        ]
        #expect(LeaseRules.remainingBySynchronousStandbys(peers, quorumNames: Self.quorum, k: 2, leaseMillis: 1500).remainingNanos == 600_000_000)
        #expect(LeaseRules.remainingBySynchronousStandbys(peers, quorumNames: Self.quorum, k: 2, leaseMillis: 800).remainingNanos == nil)
        #expect(LeaseRules.remainingBySynchronousStandbys(peers, quorumNames: Self.quorum, k: 0, leaseMillis: 1500).remainingNanos == nil)
    }

    static let ms: UInt64 = 1_000_000

    @Test("the run starts when the first observation without a receiver ended, and a receiver ends it")
    func runStartsAndEnds() {
        var watch = ReceiverWatch()
        watch.observed(standbyWithoutReceiver: false, startedNanos: 1000 * Self.ms, finishedNanos: 1010 * Self.ms)
        #expect(watch.downSinceNanos == nil)
        watch.observed(standbyWithoutReceiver: true, startedNanos: 1500 * Self.ms, finishedNanos: 1520 * Self.ms)
        #expect(watch.downSinceNanos == 1520 * Self.ms)
        watch.observed(standbyWithoutReceiver: true, startedNanos: 2000 * Self.ms, finishedNanos: 2010 * Self.ms)
        #expect(watch.downSinceNanos == 1520 * Self.ms)
        watch.observed(standbyWithoutReceiver: false, startedNanos: 2500 * Self.ms, finishedNanos: 2510 * Self.ms)
        #expect(watch.downSinceNanos == nil)
        watch.observed(standbyWithoutReceiver: true, startedNanos: 3000 * Self.ms, finishedNanos: 3010 * Self.ms)
        #expect(watch.downSinceNanos == 3010 * Self.ms)
        watch.unknown()
        #expect(watch.downSinceNanos == nil)
    }

    @Test("a gap longer than the watch allows starts the run again: a connection could have lived in it")
    func gapRestartsRun() {
        var watch = ReceiverWatch()
        watch.observed(standbyWithoutReceiver: true, startedNanos: 1000 * Self.ms, finishedNanos: 1010 * Self.ms)
        // Within the gap (measured from the previous start to this end).
        watch.observed(standbyWithoutReceiver: true, startedNanos: 1900 * Self.ms, finishedNanos: 1000 * Self.ms + ReceiverWatch.gapNanos)
        #expect(watch.downSinceNanos == 1010 * Self.ms)
        // A slow observation: it ended more than the gap after the previous one started.
        let late = 1900 * Self.ms + ReceiverWatch.gapNanos + 1
        watch.observed(standbyWithoutReceiver: true, startedNanos: 2000 * Self.ms, finishedNanos: late)
        #expect(watch.downSinceNanos == late)
    }
}
