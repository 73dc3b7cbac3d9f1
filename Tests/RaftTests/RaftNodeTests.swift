import Testing

@testable import Raft

@Suite("Raft core: requests, refusals and bad input")
struct RaftNodeTests {
    @Test("bootstrap writes the founding voters as committed entries and refuses a used storage")
    func bootstrap() throws {
        let storage = MemoryStorage()
        try RaftNode.bootstrap(storage: storage, voters: [3, 1, 2])
        let node = try RaftNode(config: RaftConfig(id: 1), storage: storage)
        #expect(node.membership == Membership(voters: [1, 2, 3]))
        #expect(node.status.commit == 3)
        #expect(try storage.entries(from: 1, to: 4, maxBytes: .max).map(\.shortDescription) == [
            "1/1 (add voter 1)", "1/2 (add voter 2)", "1/3 (add voter 3)",
        ])
        #expect(throws: RaftError.membershipChangeRefused("storage already holds a log; refusing to bootstrap over it")) {
            try RaftNode.bootstrap(storage: storage, voters: [1])
        }
    }

    @Test("a replica restarted from its storage keeps term, vote and log")
    func restartKeepsHardState() throws {
        var replica = try LoneNode(1, terms: [1, 1], term: 1)
        try replica.step(message(.vote, 2, 1, term: 4) { $0.index = 2; $0.logTerm = 1 })
        _ = try replica.drain()
        let restarted = try RaftNode(config: RaftConfig(id: 1), storage: replica.storage)
        #expect(restarted.term == 4)
        #expect(restarted.vote == 2)
        #expect(restarted.status.lastIndex == 2)
    }

    @Test("proposals go to the leader only")
    func proposalsNeedLeader() throws {
        var replica = try LoneNode(1, term: 1)
        try replica.step(message(.heartbeat, 2, 1, term: 1))
        #expect(throws: RaftError.notLeader(leader: 2)) { try replica.node.propose([1]) }
    }

    @Test("membership changes are checked before they are proposed")
    func membershipValidation() throws {
        var replica = try LoneNode(1, voters: [1], term: 0)
        try replica.becomeLeader()
        _ = try replica.drain()
        #expect(throws: RaftError.membershipChangeRefused("replica 1 is already a voter")) {
            try replica.node.proposeMembershipChange(.addVoter(1))
        }
        #expect(throws: RaftError.membershipChangeRefused("replica 9 is not a member")) {
            try replica.node.proposeMembershipChange(.removeVoter(9))
        }
        #expect(throws: RaftError.membershipChangeRefused("replica 1 is the last voter")) {
            try replica.node.proposeMembershipChange(.removeVoter(1))
        }
        // A single voter commits on its own once the change is on its disk.
        try replica.node.proposeMembershipChange(.addVoter(2))
        #expect(replica.node.membership.voters == [1])
        _ = try replica.drain()
        #expect(replica.node.membership.voters == [1, 2])
        // Now two voters must agree: the next change waits for the one in flight.
        try replica.node.proposeMembershipChange(.addVoter(3))
        #expect(replica.node.membership.voters == [1, 2])
        #expect(throws: RaftError.membershipChangePending(index: 3)) {
            try replica.node.proposeMembershipChange(.removeVoter(2))
        }
    }

    @Test("leadership transfer refuses non-voters and itself")
    func transferValidation() throws {
        var replica = try LoneNode(1, term: 0)
        try replica.becomeLeader()
        #expect(throws: RaftError.transferRefused("replica 1 already leads")) { try replica.node.transferLeadership(to: 1) }
        #expect(throws: RaftError.transferRefused("replica 7 is not a voter")) { try replica.node.transferLeadership(to: 7) }
    }

    @Test("an append with entries out of order is refused and changes nothing")
    func malformedAppend() throws {
        var replica = try LoneNode(2, terms: [1], term: 1)
        let bad = message(.append, 1, 2, term: 1) {
            $0.index = 1; $0.logTerm = 1
            $0.entries = [Entry(term: 1, index: 3)]
        }
        #expect(throws: RaftError.protocolViolation("append from 1 carries out-of-order entry 1/3")) { try replica.step(bad) }
        let future = message(.append, 1, 2, term: 1) {
            $0.index = 1; $0.logTerm = 1
            $0.entries = [Entry(term: 5, index: 2)]
        }
        #expect(throws: RaftError.protocolViolation("append from 1 carries out-of-order entry 5/2")) { try replica.step(future) }
        #expect(replica.node.status.lastIndex == 1)
        #expect(try replica.drain().isEmpty)
    }

    @Test("a message for another replica, or from itself, is refused")
    func misaddressed() throws {
        var replica = try LoneNode(2, term: 1)
        #expect(throws: RaftError.self) { try replica.step(message(.heartbeat, 1, 3, term: 1)) }
        #expect(throws: RaftError.self) { try replica.step(message(.heartbeat, 2, 2, term: 1)) }
        #expect(throws: RaftError.self) { try replica.step(message(.snapshot, 1, 2, term: 1)) }
    }

    @Test("a second leader in the same term is a protocol violation, not a crash")
    func twoLeadersSameTerm() throws {
        var replica = try LoneNode(1, term: 0)
        try replica.becomeLeader()
        #expect(throws: RaftError.protocolViolation("replica 2 acts as leader in term 1, which 1 leads")) {
            try replica.step(message(.append, 2, 1, term: 1))
        }
        #expect(replica.node.role == .leader)
    }

    @Test("a configuration that cannot work is refused")
    func invalidConfig() {
        var config = RaftConfig(id: 1)
        config.heartbeatTicks = 10
        #expect(throws: RaftError.invalidConfig("electionTicks (10) must exceed heartbeatTicks (10)")) {
            try RaftNode(config: config, storage: MemoryStorage())
        }
        #expect(throws: RaftError.invalidConfig("id must not be zero")) { try RaftConfig(id: 0).validate() }
    }

    @Test("membership changes encode to nine bytes and refuse anything else")
    func membershipEncoding() {
        #expect(MembershipChange(encoded: MembershipChange.addVoter(0x0102).encoded) == .addVoter(0x0102))
        #expect(MembershipChange(encoded: MembershipChange.removeVoter(7).encoded) == .removeVoter(7))
        #expect(MembershipChange(encoded: [1, 2, 3]) == nil)
        #expect(MembershipChange(encoded: [9, 0, 0, 0, 0, 0, 0, 0, 1]) == nil)
        #expect(MembershipChange(encoded: [1, 0, 0, 0, 0, 0, 0, 0, 0]) == nil)
    }

    @Test("a follower that already holds a snapshot's last entry answers with its commit index, not its last index")
    func snapshotOfHeldEntry() throws {
        // Entries 4 and 5 are an uncommitted tail of term 2 that the leader of term 3 may not
        // have: answering "I hold up to 5" would let the leader count them as replicated.
        var follower = try LoneNode(2, terms: [1, 1, 1, 2, 2], term: 3, commit: 1)
        let snapshot = Snapshot(metadata: SnapshotMetadata(index: 3, term: 1, membership: Membership(voters: [1, 2, 3])), data: [])
        try follower.step(message(.snapshot, 1, 2, term: 3) { $0.snapshot = snapshot })
        let responses = try follower.drain().filter { $0.kind == .appendResponse }
        #expect(responses == [message(.appendResponse, 2, 1, term: 3) { $0.index = 3 }])
        #expect(follower.node.status.commit == 3)
        #expect(follower.node.status.lastIndex == 5)
    }

    @Test("regular heartbeats go on to a follower that does not echo read rounds on appends (an older version)")
    func heartbeatsForFollowersThatDoNotEcho() throws {
        var leader = try LoneNode(1, voters: [1, 2], terms: [1], term: 1, commit: 1)
        try leader.becomeLeader()
        // Follower 2 answers every append without the round: it runs a version before rounds
        // rode on appends, so only heartbeats can confirm its reads.
        func answerAppends(echo: Bool) throws {
            var pending = try leader.drain()
            while let append = pending.first(where: { $0.kind == .append }) {
                pending.removeAll { $0.kind == .append }
                try leader.step(message(.appendResponse, 2, 1, term: leader.node.term) { response in
                    response.index = append.index + UInt64(append.entries.count)
                    if echo { response.context = append.context }
                })
                pending += try leader.drain()
            }
        }
        func heartbeatsAfterAProposalAndATick(echo: Bool) throws -> [Message] {
            try leader.node.readIndex(context: 7, prompt: false)
            try leader.node.propose([1])
            try answerAppends(echo: echo)
            try leader.tick(leader.node.config.heartbeatTicks)
            return try leader.drain().filter { $0.kind == .heartbeat }
        }
        try answerAppends(echo: false)
        #expect(try heartbeatsAfterAProposalAndATick(echo: false).count == 1)
        // Once it echoes, an append that carried the current round stands in for the heartbeat.
        #expect(try heartbeatsAfterAProposalAndATick(echo: true).isEmpty)
    }
}
