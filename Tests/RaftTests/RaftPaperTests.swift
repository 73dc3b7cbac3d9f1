import Testing

@testable import Raft

/// One test per rule of the Raft paper (Ongaro & Ousterhout 2014), §5.1–§5.4. Each test sets
/// a replica up, feeds it inputs, and compares the messages and state that come out.
@Suite("Raft paper §5")
struct RaftPaperTests {
    // MARK: §5.1 basics

    @Test("§5.1: replicas start as followers")
    func startAsFollower() throws {
        let replica = try LoneNode(1)
        #expect(replica.node.role == .follower)
        #expect(replica.node.leader == nil)
    }

    @Test("§5.1: a higher term in any message updates the term and makes the replica a follower", arguments: [RaftRole.follower, .candidate, .leader])
    func higherTermUpdatesTerm(role: RaftRole) throws {
        var replica = try LoneNode(1, term: 1)
        switch role {
        case .candidate: try replica.node.campaign()
        case .leader: try replica.becomeLeader()
        default: break
        }
        _ = try replica.drain()
        try replica.step(message(.append, 2, 1, term: 5) { $0.index = 0; $0.logTerm = 0 })
        #expect(replica.node.term == 5)
        #expect(replica.node.role == .follower)
        #expect(replica.node.leader == 2)
        #expect(replica.node.vote == nil)
    }

    @Test("§5.1: a message with a stale term is ignored")
    func staleTermIgnored() throws {
        var replica = try LoneNode(1, term: 3)
        try replica.step(message(.vote, 2, 1, term: 2) { $0.index = 9; $0.logTerm = 9 })
        #expect(replica.node.term == 3)
        #expect(replica.node.vote == nil)
        #expect(try replica.drain().isEmpty)
    }

    // MARK: §5.2 leader election

    @Test("§5.2: a follower whose election timeout passes starts an election: new term, own vote, vote requests")
    func followerStartsElection() throws {
        var replica = try LoneNode(1, terms: [1, 1], term: 1)
        try replica.tickElection()
        #expect(replica.node.role == .candidate)
        #expect(replica.node.term == 2)
        #expect(replica.node.vote == 1)
        let requests = try replica.drain().filter { $0.kind == .vote }
        #expect(requests == [2, 3].map { to in message(.vote, 1, to, term: 2) { $0.index = 2; $0.logTerm = 1 } })
    }

    @Test(
        "§5.2: a candidate wins with a majority, loses with a majority against, waits otherwise",
        arguments: [
            // (voters, granted, rejected, expected role)
            (1, [NodeID](), [NodeID](), RaftRole.leader),
            (3, [2], [], .leader),
            (3, [], [2, 3], .follower),
            (3, [], [2], .candidate),
            (5, [2, 3], [], .leader),
            (5, [2], [3], .candidate),
            (5, [], [2, 3, 4], .follower),
        ])
    func electionOutcome(voterCount: Int, granted: [NodeID], rejected: [NodeID], expected: RaftRole) throws {
        var replica = try LoneNode(1, voters: Set(1...NodeID(voterCount)), term: 0)
        try replica.node.campaign()
        for voter in granted { try replica.step(message(.voteResponse, voter, 1, term: 1)) }
        for voter in rejected { try replica.step(message(.voteResponse, voter, 1, term: 1) { $0.reject = true }) }
        #expect(replica.node.role == expected)
        #expect(replica.node.term == 1)
    }

    @Test("§5.2: a replica votes for at most one candidate per term, first come first served")
    func oneVotePerTerm() throws {
        var replica = try LoneNode(1, voters: [1, 2, 3], term: 1)
        try replica.step(message(.vote, 2, 1, term: 2))
        try replica.step(message(.vote, 3, 1, term: 2))
        try replica.step(message(.vote, 2, 1, term: 2))
        let answers = try replica.drain()
        #expect(answers == [
            message(.voteResponse, 1, 2, term: 2),
            message(.voteResponse, 1, 3, term: 2) { $0.reject = true },
            message(.voteResponse, 1, 2, term: 2),
        ])
        #expect(replica.node.vote == 2)
    }

    @Test("§5.2: a candidate that hears from a leader of its term or later falls back to follower", arguments: [UInt64(1), 2])
    func candidateFallsBack(leaderTerm: UInt64) throws {
        var replica = try LoneNode(1, term: 0)
        try replica.node.campaign()
        #expect(replica.node.term == 1)
        try replica.step(message(.append, 2, 1, term: leaderTerm))
        #expect(replica.node.role == .follower)
        #expect(replica.node.leader == 2)
        #expect(replica.node.term == leaderTerm)
    }

    @Test("§5.2: election timeouts are random in [T, 2T) and differ between replicas")
    func randomizedElectionTimeouts() throws {
        var timeouts: Set<Int> = []
        for seed in 1...200 as ClosedRange<UInt64> {
            var config = RaftConfig(id: 1, seed: seed)
            config.preVote = false
            var node = try RaftNode(config: config, storage: MemoryStorage())
            node.membership = Membership(voters: [1, 2, 3])
            var ticks = 0
            while node.role == .follower {
                try node.tick()
                ticks += 1
            }
            #expect(ticks >= config.electionTicks && ticks < 2 * config.electionTicks)
            timeouts.insert(ticks)
        }
        #expect(timeouts.count == 10)
    }

    @Test("§5.2: a leader sends heartbeats to every follower every heartbeat interval")
    func leaderHeartbeats() throws {
        var replica = try LoneNode(1, term: 0)
        try replica.becomeLeader()
        _ = try replica.drain()
        try replica.tick()
        let heartbeats = try replica.drain()
        #expect(heartbeats == [2, 3].map { message(.heartbeat, 1, $0, term: 1) })
    }

    // MARK: §5.3 log replication

    @Test("§5.3: the leader appends a proposal to its log and sends it to every follower")
    func leaderStartsReplication() throws {
        var replica = try LoneNode(1, term: 0)
        try replica.becomeLeader()
        // Followers acknowledge the leader's first (empty) entry, so appends are pipelined.
        for follower: NodeID in [2, 3] { try replica.step(message(.appendResponse, follower, 1, term: 1) { $0.index = 1 }) }
        _ = try replica.drain()
        let index = try replica.node.propose(Array("x".utf8))
        #expect(index == 2)
        let appends = try replica.drain()
        #expect(appends == [2, 3].map { to in
            message(.append, 1, to, term: 1) {
                $0.index = 1; $0.logTerm = 1; $0.commit = 1
                $0.entries = [Entry(term: 1, index: 2, data: Array("x".utf8))]
            }
        })
    }

    @Test("§5.3: an entry commits once a majority stores it; commit carries the entries before it")
    func leaderCommits() throws {
        var replica = try LoneNode(1, voters: [1, 2, 3, 4, 5], term: 0)
        try replica.becomeLeader()
        try replica.node.propose(Array("a".utf8))
        _ = try replica.drain()
        #expect(replica.node.log.committed == 0)
        try replica.step(message(.appendResponse, 2, 1, term: 1) { $0.index = 2 })
        #expect(replica.node.log.committed == 0)
        try replica.step(message(.appendResponse, 3, 1, term: 1) { $0.index = 2 })
        #expect(replica.node.log.committed == 2)
        _ = try replica.drain()
        #expect(replica.lastApplied.map(\.index) == [1, 2])
    }

    @Test("§5.3: a follower applies committed entries in log order")
    func followerApplies() throws {
        var replica = try LoneNode(2, term: 1)
        let entries = (1...3).map { Entry(term: 1, index: UInt64($0), data: [UInt8($0)]) }
        try replica.step(message(.append, 1, 2, term: 1) { $0.entries = entries; $0.commit = 2 })
        _ = try replica.drain()
        #expect(replica.lastApplied == Array(entries.prefix(2)))
        try replica.step(message(.heartbeat, 1, 2, term: 1) { $0.commit = 3 })
        _ = try replica.drain()
        #expect(replica.lastApplied == [entries[2]])
    }

    @Test(
        "§5.3: a follower refuses an append whose previous entry it does not have",
        arguments: [
            // (previous term, previous index, accepted, answer index, hint index, hint term)
            (UInt64(0), UInt64(0), true, UInt64(0), UInt64(0), UInt64(0)),
            (1, 1, true, 1, 0, 0),
            (2, 2, true, 2, 0, 0),
            (1, 2, false, 2, 1, 1),
            (3, 3, false, 3, 2, 2),
        ])
    func followerChecksPrevious(prevTerm: UInt64, prevIndex: UInt64, accepted: Bool, index: UInt64, hintIndex: UInt64, hintTerm: UInt64) throws {
        var replica = try LoneNode(2, terms: [1, 2], term: 2)
        try replica.step(message(.append, 1, 2, term: 2) { $0.index = prevIndex; $0.logTerm = prevTerm })
        let answer = try replica.drain().first
        #expect(answer == message(.appendResponse, 2, 1, term: 2) {
            $0.index = index
            if !accepted { $0.reject = true; $0.rejectHint = hintIndex; $0.logTerm = hintTerm }
        })
    }

    @Test("§5.3: a follower deletes a conflicting entry and all after it, then appends")
    func followerReplacesConflicts() throws {
        var replica = try LoneNode(2, terms: [1, 1, 1], term: 1)
        try replica.step(message(.append, 1, 2, term: 2) {
            $0.index = 1; $0.logTerm = 1
            $0.entries = [Entry(term: 2, index: 2), Entry(term: 2, index: 3), Entry(term: 2, index: 4)]
        })
        _ = try replica.drain()
        let terms = try replica.storage.entries(from: 1, to: 5, maxBytes: .max).map(\.term)
        #expect(terms == [1, 2, 2, 2])
    }

    @Test(
        "§5.3: the leader brings every follower's log to match its own (paper Figure 7)",
        arguments: [
            // Figure 7 (a)–(f): follower logs against the leader's log of terms below.
            [UInt64(1), 1, 1, 4, 4, 5, 5, 6, 6],
            [1, 1, 1, 4],
            [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
            [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
            [1, 1, 1, 4, 4, 4, 4],
            [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
        ])
    func leaderSyncsFollower(followerTerms: [UInt64]) throws {
        let leaderTerms: [UInt64] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
        var leader = try LoneNode(1, terms: leaderTerms, term: 7, commit: UInt64(leaderTerms.count))
        var follower = try LoneNode(2, terms: followerTerms, term: 7)
        var other = try LoneNode(3, terms: [], term: 7)
        // Replica 1 wins term 8 with the vote of the third replica.
        try leader.node.campaign()
        for request in try leader.drain() where request.to == 3 { try other.step(request) }
        for answer in try other.drain() { try leader.step(answer) }
        #expect(leader.node.role == .leader)
        var inFlight = try leader.drain()
        var rounds = 0
        while !inFlight.isEmpty, rounds < 100 {
            rounds += 1
            var next: [Message] = []
            for message in inFlight {
                switch message.to {
                case 1: try leader.step(message); next += try leader.drain()
                case 2: try follower.step(message); next += try follower.drain()
                default: try other.step(message); next += try other.drain()
                }
            }
            inFlight = next.filter { $0.kind != .heartbeat }
        }
        let leaderLog = try leader.storage.entries(from: 1, to: try leader.storage.lastIndex() + 1, maxBytes: .max)
        let followerLog = try follower.storage.entries(from: 1, to: try follower.storage.lastIndex() + 1, maxBytes: .max)
        #expect(followerLog == leaderLog)
        #expect(leaderLog.map(\.term) == leaderTerms + [8])
    }

    // MARK: §5.4 safety

    @Test(
        "§5.4.1: a vote goes only to a candidate whose log is at least as up to date",
        arguments: [
            // (candidate last term, candidate last index, granted) against a voter log [1, 2]
            (UInt64(1), UInt64(5), false),
            (2, 1, false),
            (2, 2, true),
            (2, 3, true),
            (3, 1, true),
        ])
    func voteNeedsUpToDateLog(lastTerm: UInt64, lastIndex: UInt64, granted: Bool) throws {
        var replica = try LoneNode(1, terms: [1, 2], term: 2)
        try replica.step(message(.vote, 2, 1, term: 3) { $0.index = lastIndex; $0.logTerm = lastTerm })
        let answer = try replica.drain().first
        #expect(answer?.reject == !granted)
        #expect(replica.node.vote == (granted ? 2 : nil))
    }

    @Test("§5.4.2: a leader commits by counting replicas only entries of its own term (paper Figure 8)")
    func onlyCurrentTermCommitsByCounting() throws {
        // The leader of term 3 holds an entry of term 2 at index 3 that a majority stores.
        var replica = try LoneNode(1, terms: [1, 1, 2], term: 2)
        try replica.becomeLeader()
        #expect(replica.node.term == 3)
        _ = try replica.drain()
        // A majority acknowledges index 3 (the old-term entry), not yet the term-3 entry at 4.
        try replica.step(message(.appendResponse, 2, 1, term: 3) { $0.index = 3 })
        #expect(replica.node.log.committed == 0)
        // Once a majority stores the term-3 entry, it commits and everything before it.
        try replica.step(message(.appendResponse, 2, 1, term: 3) { $0.index = 4 })
        #expect(replica.node.log.committed == 4)
    }

    @Test("§5.4.3: a new leader's first entry of its term commits the entries it inherited")
    func newLeaderCommitsInheritedEntries() throws {
        let cluster = try Cluster(ids: [1, 2, 3]) {
            $0.preVote = false
            $0.checkQuorum = false
        }
        try cluster.with(1) { try $0.campaign() }
        try cluster.stabilize()
        try cluster.with(1) { _ = try $0.propose(Array("inherited".utf8)) }
        // Only replica 2 gets the proposal before the leader is cut off.
        try cluster.processReady()
        cluster.pending.removeAll { $0.to == 3 }
        try cluster.deliverRound(to: 2)
        cluster.isolate(1)
        try cluster.tick(2, times: 20)
        try cluster.stabilize()
        #expect(cluster.node(2).role == .leader)
        let applied = cluster.replicas[3]!.stateMachine.appliedIndex
        #expect(applied == cluster.node(2).log.committed)
        #expect(try cluster.logLines(3).contains("2/5 inherited"))
        #expect(cluster.trace.contains("3 applied 2/5 inherited"))
    }
}
