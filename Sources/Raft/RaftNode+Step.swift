/// Why a replica starts an election.
enum CampaignKind {
    /// Ask for pre-votes first (thesis §9.6); the term rises only once a majority would vote.
    case preElection
    /// A real election in a new term.
    case election
    /// An election asked for by the leader handing over (thesis §3.10): voters grant it even
    /// though they heard from a leader recently.
    case transfer
}

extension RaftNode {
    /// Handles one message from a peer.
    ///
    /// A message that breaks the protocol throws `RaftError.protocolViolation` and changes
    /// nothing; the shell logs it and carries on.
    public mutating func step(_ message: Message) throws {
        guard message.to == id, message.from != 0, message.from != id else {
            throw RaftError.protocolViolation("message \(message) is not addressed to replica \(id) by a peer")
        }
        try wrapStorageErrors {
            guard try stepTerm(message) else { return }
            switch message.kind {
            case .vote, .preVote:
                try handleVoteRequest(message)
            default:
                switch role {
                case .leader: try stepLeader(message)
                case .candidate, .preCandidate: try stepCandidate(message)
                case .follower: try stepFollower(message)
                }
            }
        }
    }

    /// Compares the message's term with ours (Raft paper §5.1); false when the message is
    /// finished with (ignored or answered).
    private mutating func stepTerm(_ message: Message) throws -> Bool {
        if message.term > term {
            if message.kind == .vote || message.kind == .preVote {
                // Thesis §4.2.3: within an election timeout of hearing from a leader, a vote
                // request neither raises our term nor gets our vote.
                let inLease = config.checkQuorum && leader != nil && electionElapsed < config.electionTicks
                if inLease && !message.force { return false }
            }
            switch message.kind {
            case .preVote:
                // A pre-vote request carries the candidate's next term; ours does not change.
                break
            case .preVoteResponse where !message.reject:
                // A granted pre-vote for the term we would campaign in.
                break
            default:
                becomeFollower(term: message.term, leader: message.kind.isFromLeader ? message.from : nil)
            }
            return true
        }
        if message.term < term {
            if (config.checkQuorum || config.preVote) && (message.kind == .append || message.kind == .heartbeat) {
                // A deposed leader cut off by a partition: our newer term makes it step down.
                send(Message(kind: .appendResponse, from: id, to: message.from, term: term))
            } else if message.kind == .preVote {
                var refusal = Message(kind: .preVoteResponse, from: id, to: message.from, term: term)
                refusal.reject = true
                send(refusal)
            }
            return false
        }
        return true
    }

    private mutating func handleVoteRequest(_ message: Message) throws {
        let canVote =
            vote == message.from || (vote == nil && leader == nil)
            || (message.kind == .preVote && message.term > term)
        let responseKind: MessageKind = message.kind == .vote ? .voteResponse : .preVoteResponse
        if canVote, try log.isUpToDate(lastIndex: message.index, lastTerm: message.logTerm) {
            // A granted answer carries the requested term, so the candidate counts it.
            send(Message(kind: responseKind, from: id, to: message.from, term: message.term))
            if message.kind == .vote {
                electionElapsed = 0
                vote = message.from
            }
        } else {
            var refusal = Message(kind: responseKind, from: id, to: message.from, term: term)
            refusal.reject = true
            send(refusal)
        }
    }

    private mutating func stepFollower(_ message: Message) throws {
        switch message.kind {
        case .append:
            electionElapsed = 0
            leader = message.from
            try handleAppend(message)
        case .heartbeat:
            electionElapsed = 0
            leader = message.from
            try handleHeartbeat(message)
        case .snapshot:
            electionElapsed = 0
            leader = message.from
            try handleSnapshot(message)
        case .timeoutNow:
            // The leader hands over to us: campaign at once, skipping pre-vote.
            if isPromotable { try campaign(.transfer) }
        case .readIndexResponse:
            // Only the leader of our term confirms reads; stepTerm dropped older terms.
            guard message.from == leader else { return }
            readStates.append(ReadState(context: message.context, index: message.index))
        case .appendResponse, .heartbeatResponse, .voteResponse, .preVoteResponse, .vote, .preVote, .readIndex:
            // Late answers to a role we no longer hold.
            break
        }
    }

    private mutating func stepCandidate(_ message: Message) throws {
        switch message.kind {
        case .append:
            becomeFollower(term: message.term, leader: message.from)
            try handleAppend(message)
        case .heartbeat:
            becomeFollower(term: message.term, leader: message.from)
            try handleHeartbeat(message)
        case .snapshot:
            becomeFollower(term: message.term, leader: message.from)
            try handleSnapshot(message)
        case .voteResponse where role == .candidate, .preVoteResponse where role == .preCandidate:
            switch poll(message.from, granted: !message.reject) {
            case .won:
                if role == .preCandidate {
                    try campaign(.election)
                } else {
                    try becomeLeader()
                }
            case .lost:
                becomeFollower(term: term, leader: nil)
            case .pending:
                break
            }
        case .voteResponse, .preVoteResponse, .appendResponse, .heartbeatResponse, .timeoutNow, .vote, .preVote,
            .readIndex, .readIndexResponse:
            break
        }
    }

    // MARK: - Roles

    mutating func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID?) {
        reset(term: newTerm)
        role = .follower
        leader = newLeader
    }

    private mutating func becomePreCandidate() {
        // A pre-candidate keeps its term and vote: nothing is persisted for a pre-vote.
        votes = [:]
        progress = [:]
        transferee = nil
        clearReadRounds()
        leader = nil
        role = .preCandidate
    }

    private mutating func becomeCandidate() {
        reset(term: term + 1)
        vote = id
        role = .candidate
    }

    private mutating func becomeLeader() throws {
        precondition(role == .candidate, "replica \(id) became leader from \(role), not candidate")
        reset(term: term)
        role = .leader
        leader = id
        let lastIndex = try log.lastIndex()
        // Entries still waiting for the disk count for this leader once `advance` sees them stored.
        let persisted = log.unstableEntries.isEmpty ? lastIndex : log.unstableOffset - 1
        for voter in membership.members {
            var peer = Progress(next: lastIndex + 1)
            peer.recentActive = true
            if voter == id { peer.match = persisted }
            progress[voter] = peer
        }
        // The leader's first entry of its term: committing it commits everything before it
        // (paper §5.4.2, §8), and a membership change waits for it (thesis §4.1 fix of the
        // single-server change bug).
        pendingMembershipIndex = try appendEntries([Entry(term: 0, index: 0)])
        termStartIndex = pendingMembershipIndex
    }

    /// Clears per-term state; a new term also clears the vote.
    private mutating func reset(term newTerm: UInt64) {
        if newTerm != term {
            term = newTerm
            vote = nil
        }
        leader = nil
        electionElapsed = 0
        heartbeatElapsed = 0
        randomizedElectionTimeout = config.electionTicks + Int(generator.next() % UInt64(config.electionTicks))
        votes = [:]
        progress = [:]
        transferee = nil
        pendingMembershipIndex = 0
        clearReadRounds()
    }

    mutating func campaign(_ kind: CampaignKind) throws {
        guard isPromotable else { return }
        let requestKind: MessageKind
        let requestTerm: UInt64
        if kind == .preElection {
            becomePreCandidate()
            requestKind = .preVote
            requestTerm = term + 1
        } else {
            becomeCandidate()
            requestKind = .vote
            requestTerm = term
        }
        if poll(id, granted: true) == .won {
            // A single voter wins on its own vote.
            if kind == .preElection {
                try campaign(.election)
            } else {
                try becomeLeader()
            }
            return
        }
        let lastIndex = try log.lastIndex()
        let lastTerm = try log.lastTerm()
        for voter in sortedVoters where voter != id {
            var request = Message(kind: requestKind, from: id, to: voter, term: requestTerm)
            request.index = lastIndex
            request.logTerm = lastTerm
            request.force = kind == .transfer
            send(request)
        }
    }

    enum VoteResult { case won, lost, pending }

    private mutating func poll(_ voter: NodeID, granted: Bool) -> VoteResult {
        if votes[voter] == nil { votes[voter] = granted }
        var grantedCount = 0
        var rejectedCount = 0
        for member in membership.voters {
            switch votes[member] {
            case true?: grantedCount += 1
            case false?: rejectedCount += 1
            case nil: break
            }
        }
        if grantedCount >= membership.quorum { return .won }
        if rejectedCount > membership.voters.count - membership.quorum { return .lost }
        return .pending
    }

    mutating func send(_ message: Message) {
        messages.append(message)
    }
}
