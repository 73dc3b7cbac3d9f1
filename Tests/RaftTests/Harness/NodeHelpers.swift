@testable import Raft

/// A lone replica for tests that drive one core by hand.
struct LoneNode {
    var node: RaftNode
    let storage: MemoryStorage

    /// A replica whose log holds one entry per element of `terms` (index 1, 2, …), in a
    /// cluster of `voters`, at hard-state term `term`. Pre-vote and check-quorum are off unless
    /// asked for, as in the Raft paper.
    init(
        _ id: NodeID, voters: Set<NodeID> = [1, 2, 3], terms: [UInt64] = [], term: UInt64? = nil,
        commit: UInt64 = 0, preVote: Bool = false, checkQuorum: Bool = false
    ) throws {
        storage = MemoryStorage()
        let entries = terms.enumerated().map { Entry(term: $0.element, index: UInt64($0.offset + 1)) }
        try storage.persist(
            hardState: HardState(term: term ?? terms.last ?? 0, vote: nil, commit: commit), entries: entries, snapshot: nil)
        var config = RaftConfig(id: id)
        config.preVote = preVote
        config.checkQuorum = checkQuorum
        node = try RaftNode(config: config, storage: storage)
        node.membership = Membership(voters: voters)
    }

    /// Persists and "applies" everything ready, and returns the messages to send.
    @discardableResult
    mutating func drain() throws -> [Message] {
        var messages: [Message] = []
        var applied: [Entry] = []
        while node.hasReady() {
            let ready = try node.ready()
            try storage.persist(hardState: ready.hardState, entries: ready.entries, snapshot: ready.snapshot)
            messages += ready.messages
            applied += ready.committedEntries
            node.advance(ready)
        }
        lastApplied = applied
        return messages
    }

    /// The committed entries handed out by the last `drain()`.
    var lastApplied: [Entry] = []

    mutating func step(_ message: Message) throws {
        try node.step(message)
    }

    mutating func tick(_ times: Int = 1) throws {
        for _ in 0..<times { try node.tick() }
    }

    /// Ticks until the randomized election timeout has surely passed.
    mutating func tickElection() throws {
        try tick(2 * 10)
    }

    /// Makes this replica leader of `voters` by winning an election with everyone's vote.
    mutating func becomeLeader() throws {
        try node.campaign()
        let requests = try drain()
        for request in requests where request.kind == .vote || request.kind == .preVote {
            let kind: MessageKind = request.kind == .vote ? .voteResponse : .preVoteResponse
            try node.step(Message(kind: kind, from: request.to, to: node.id, term: request.term))
            if node.role == .leader { break }
        }
        if node.role != .leader {
            // Pre-vote won; answer the real vote requests too.
            for request in try drain() where request.kind == .vote {
                try node.step(Message(kind: .voteResponse, from: request.to, to: node.id, term: request.term))
                if node.role == .leader { break }
            }
        }
        precondition(node.role == .leader, "replica \(node.id) did not become leader")
    }
}

func message(_ kind: MessageKind, _ from: NodeID, _ to: NodeID, term: UInt64, build: (inout Message) -> Void = { _ in }) -> Message {
    var message = Message(kind: kind, from: from, to: to, term: term)
    build(&message)
    return message
}
