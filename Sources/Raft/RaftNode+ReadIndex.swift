/// One batch of reads on the leader, waiting for a quorum to confirm its leadership.
struct ReadRound: Equatable {
    /// The heartbeat round that must be acknowledged by a quorum.
    var round: UInt64
    /// The read index: the leader's commit index when the reads arrived (at least its first
    /// entry of the term).
    var index: UInt64
    /// Who asked (this replica or a follower), and the context to answer with.
    var requester: NodeID
    var context: UInt64
}

extension RaftNode {
    /// The most reads the leader keeps waiting for confirmation; past it, new requests are
    /// dropped (their requesters time out), so a flood of reads cannot grow memory without bound.
    public static let readRoundsMax = 4_096

    /// Asks for a linearizable read (Raft thesis §6.4, ReadIndex). The answer comes as a
    /// `ReadState` with the same `context` in a later `Ready`: once this replica has applied up
    /// to its index, the application reflects every entry committed before this call.
    ///
    /// The leader takes its commit index (never below its first entry of the term, so a new
    /// leader whose commit index may still lag waits for its first commit), then confirms it
    /// still leads with a heartbeat round that a quorum acknowledges. A follower forwards the
    /// request to the leader it knows. Nothing is answered when the confirmation does not come
    /// (a deposed or cut-off leader, a lost message): the shell bounds the wait itself. Throws
    /// `notLeader` when no leader is known. Batch reads in the shell: every prompt call on the
    /// leader costs one heartbeat to each voter. With `prompt` false the leader sends nothing
    /// for it: its next append or regular heartbeat (within `heartbeatTicks`) carries the round,
    /// so a read that can wait that long (a stream's periodic confirmation) costs no message of
    /// its own.
    /// A follower forwards every read at once.
    public mutating func readIndex(context: UInt64, prompt: Bool = true) throws {
        switch role {
        case .leader:
            startReadRound(for: id, context: context, prompt: prompt)
        case .follower:
            guard let leader else { throw RaftError.notLeader(leader: nil) }
            var request = Message(kind: .readIndex, from: id, to: leader, term: term)
            request.context = context
            send(request)
        case .candidate, .preCandidate:
            throw RaftError.notLeader(leader: nil)
        }
    }

    /// Leader: records a read for `requester` at the current read index and asks every voter
    /// to acknowledge this leadership with a message carrying a new round: a heartbeat at once,
    /// or the next append or regular heartbeat when not `prompt`. Either is sent after the read
    /// arrived, which is all the confirmation needs.
    mutating func startReadRound(for requester: NodeID, context: UInt64, prompt: Bool = true) {
        let index = max(log.committed, termStartIndex)
        if membership.voters == [id] {
            // A lone voter is its own quorum.
            return releaseRead(ReadRound(round: readRound, index: index, requester: requester, context: context))
        }
        guard readRounds.count < Self.readRoundsMax else { return }
        readRound += 1
        readRounds.append(ReadRound(round: readRound, index: index, requester: requester, context: context))
        if prompt { broadcastHeartbeat() }
    }

    /// Leader: `voter` answered a heartbeat of round `round` in this term, so it still took
    /// this replica as its leader after every read of that round or before had arrived.
    /// Releases, in order, every read that a quorum (this leader included) has confirmed.
    mutating func acknowledgeReadRound(_ round: UInt64, from voter: NodeID) {
        guard membership.voters.contains(voter), round <= readRound else { return }
        readAcks[voter] = max(readAcks[voter] ?? 0, round)
        while let oldest = readRounds.first {
            let confirmations = membership.voters.filter { $0 == id || (readAcks[$0] ?? 0) >= oldest.round }.count
            guard confirmations >= membership.quorum else { break }
            readRounds.removeFirst()
            releaseRead(oldest)
        }
    }

    private mutating func releaseRead(_ read: ReadRound) {
        if read.requester == id {
            readStates.append(ReadState(context: read.context, index: read.index))
        } else {
            var response = Message(kind: .readIndexResponse, from: id, to: read.requester, term: term)
            response.index = read.index
            response.context = read.context
            send(response)
        }
    }

    /// Forgets every read waiting for confirmation (a new term or role): their requesters time
    /// out and ask again elsewhere.
    mutating func clearReadRounds() {
        readRounds = []
        readRound = 0
        readAcks = [:]
    }
}
