extension RaftNode {
    /// How many ticks a sent snapshot may go unanswered before it is sent again.
    var snapshotRetryTicks: Int { 5 * config.electionTicks }

    // MARK: - Leader

    mutating func tickLeader() throws {
        heartbeatElapsed += 1
        electionElapsed += 1
        for voter in sortedMembers where voter != id {
            guard var peer = progress[voter], case .snapshot = peer.state else { continue }
            peer.snapshotTicks += 1
            if peer.snapshotTicks >= snapshotRetryTicks { peer.becomeProbe() }
            progress[voter] = peer
        }
        if electionElapsed >= config.electionTicks {
            electionElapsed = 0
            if config.checkQuorum {
                // Check-quorum (thesis §6.2): a leader that has not heard from a majority within
                // an election timeout steps down, so a partitioned leader stops acting as one.
                progress[id]?.recentActive = true
                let active = membership.voters.filter { progress[$0]?.recentActive == true }.count
                for voter in membership.voters where voter != id { progress[voter]?.recentActive = false }
                if active < membership.quorum {
                    becomeFollower(term: term, leader: nil)
                    return
                }
            }
            // A transfer that did not finish within an election timeout is abandoned.
            transferee = nil
        }
        if heartbeatElapsed >= config.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat(skipCovered: true)
        }
    }

    /// Appends entries at the end of the leader's log (stamping term and index) and replicates
    /// them. The leader's own copy counts once persisted (`advance`). Returns the last new index.
    mutating func appendEntries(_ newEntries: [Entry]) throws -> UInt64 {
        var index = try log.lastIndex()
        let stamped = newEntries.map { entry -> Entry in
            index += 1
            return Entry(term: term, index: index, kind: entry.kind, data: entry.data)
        }
        log.append(stamped)
        try broadcastAppend()
        return index
    }

    /// Advances the commit index to what a majority of voters hold, applying membership
    /// changes as they commit (which can change the majority), until nothing moves.
    mutating func leaderCommit() throws -> Bool {
        var advanced = false
        while role == .leader {
            let matches = membership.voters.map { progress[$0]?.match ?? 0 }.sorted(by: >)
            guard !matches.isEmpty, try log.maybeCommit(matches[membership.quorum - 1], term: term) else { break }
            advanced = true
            try applyCommittedMembershipChanges()
        }
        return advanced
    }

    mutating func broadcastAppend() throws {
        guard role == .leader else { return }
        for voter in sortedMembers where voter != id {
            _ = try sendAppend(to: voter, sendIfEmpty: true)
        }
    }

    /// A heartbeat to every follower. With `skipCovered` (the regular heartbeat), a follower
    /// that echoes rounds on appends, and got an append carrying the current read round since
    /// the last heartbeat time, gets none: that append did all a heartbeat does. It told the
    /// follower the leader and the commit index, and its answer counts for check-quorum and
    /// confirms every read of that round. An idle cluster's log grows by a report entry every
    /// few hundred ms, so most regular heartbeats are covered.
    mutating func broadcastHeartbeat(skipCovered: Bool = false) {
        for voter in sortedMembers where voter != id {
            guard var peer = progress[voter] else { continue }
            let covered = peer.echoesReadRoundsOnAppends && peer.appendRoundSinceHeartbeat == readRound
            peer.appendRoundSinceHeartbeat = nil
            progress[voter] = peer
            if skipCovered && covered { continue }
            var heartbeat = Message(kind: .heartbeat, from: id, to: voter, term: term)
            // Never let a follower commit past what it is known to hold.
            heartbeat.commit = min(peer.match, log.committed)
            // Every heartbeat asks for the latest read round, so a lost one is made good by the next.
            heartbeat.context = readRound
            send(heartbeat)
        }
    }

    /// Sends the next append (or a snapshot) to `follower` unless its progress is paused.
    /// Returns whether a message was sent.
    mutating func sendAppend(to follower: NodeID, sendIfEmpty: Bool) throws -> Bool {
        guard var peer = progress[follower], !peer.isPaused(maxInflight: config.maxInflightMessages) else { return false }
        let previousIndex = peer.next - 1
        var entries: [Entry]?
        let previousTerm = try log.term(previousIndex)
        if previousTerm != nil {
            do {
                entries = try log.entries(from: peer.next, maxBytes: config.maxMessageSizeBytes)
            } catch StorageError.compacted {
                entries = nil
            }
        }
        guard let previousTerm, let entries else {
            return try sendSnapshot(to: follower, peer: &peer)
        }
        if entries.isEmpty && !sendIfEmpty { return false }
        var append = Message(kind: .append, from: id, to: follower, term: term)
        append.index = previousIndex
        append.logTerm = previousTerm
        append.entries = entries
        append.commit = log.committed
        append.context = readRound
        send(append)
        peer.appendRoundSinceHeartbeat = readRound
        peer.sentEntries(lastIndex: entries.last?.index ?? previousIndex, count: entries.count, maxInflight: config.maxInflightMessages)
        progress[follower] = peer
        return true
    }

    /// The follower needs entries that were compacted: send the latest snapshot instead.
    private mutating func sendSnapshot(to follower: NodeID, peer: inout Progress) throws -> Bool {
        // A follower we have not heard from lately is probably down: do not ship it a snapshot.
        guard peer.recentActive else { return false }
        let snapshot = try log.snapshot()
        guard !snapshot.isEmpty else { return false }
        var message = Message(kind: .snapshot, from: id, to: follower, term: term)
        message.snapshot = snapshot
        send(message)
        peer.becomeSnapshot(snapshot.metadata.index)
        progress[follower] = peer
        return true
    }

    mutating func stepLeader(_ message: Message) throws {
        switch message.kind {
        case .appendResponse:
            guard progress[message.from] != nil else { return }
            progress[message.from]?.recentActive = true
            if message.context > 0 {
                // Accepted or not, the answer shows the follower took this replica as its
                // leader after the append was sent: it confirms the reads of that round.
                progress[message.from]?.echoesReadRoundsOnAppends = true
                acknowledgeReadRound(message.context, from: message.from)
            }
            if message.reject {
                try handleAppendRejection(message)
            } else {
                try handleAppendSuccess(message)
            }
        case .heartbeatResponse:
            guard var peer = progress[message.from] else { return }
            peer.recentActive = true
            peer.probeSent = false
            if peer.state == .replicate && peer.inflight.count >= config.maxInflightMessages {
                // Appends in flight may have been lost: free one slot so that the next append
                // goes out, and a rejection brings the follower back to probing if need be.
                peer.inflight.removeFirst()
            }
            progress[message.from] = peer
            if message.context > 0 { acknowledgeReadRound(message.context, from: message.from) }
            if peer.match < (try log.lastIndex()) { _ = try sendAppend(to: message.from, sendIfEmpty: true) }
        case .readIndex:
            startReadRound(for: message.from, context: message.context)
        case .append, .heartbeat, .snapshot:
            throw RaftError.protocolViolation("replica \(message.from) acts as leader in term \(term), which \(id) leads")
        case .vote, .preVote, .voteResponse, .preVoteResponse, .timeoutNow, .readIndexResponse:
            break
        }
    }

    private mutating func handleAppendRejection(_ message: Message) throws {
        guard var peer = progress[message.from] else { return }
        var nextProbe = message.rejectHint
        if message.logTerm > 0 {
            // Skip every entry of a term the follower's log does not have (fast backtracking).
            nextProbe = try log.findConflictByTerm(message.rejectHint, message.logTerm).index
        }
        guard peer.maybeDecrease(rejected: message.index, matchHint: nextProbe) else { return }
        if peer.state == .replicate { peer.becomeProbe() }
        progress[message.from] = peer
        _ = try sendAppend(to: message.from, sendIfEmpty: true)
    }

    private mutating func handleAppendSuccess(_ message: Message) throws {
        guard var peer = progress[message.from] else { return }
        let wasPaused = peer.isPaused(maxInflight: config.maxInflightMessages)
        guard peer.maybeUpdate(message.index) else { return }
        switch peer.state {
        case .probe:
            peer.becomeReplicate()
        case .snapshot(let index) where peer.match >= index:
            peer.becomeProbe()
            peer.becomeReplicate()
        case .snapshot:
            break
        case .replicate:
            peer.freeInflight(upTo: message.index)
        }
        progress[message.from] = peer
        if try leaderCommit() {
            try broadcastAppend()
        } else if wasPaused {
            _ = try sendAppend(to: message.from, sendIfEmpty: true)
        }
        // Pipeline whatever else the follower is missing, up to the in-flight window.
        while role == .leader, try sendAppend(to: message.from, sendIfEmpty: false) {}
        if role == .leader, message.from == transferee, progress[message.from]?.match == (try log.lastIndex()) {
            send(Message(kind: .timeoutNow, from: id, to: message.from, term: term))
        }
    }

    /// Hands leadership to `target` (thesis §3.10): the leader stops taking proposals, brings
    /// the target's log up to date, then tells it to campaign at once.
    public mutating func transferLeadership(to target: NodeID) throws {
        guard role == .leader else { throw RaftError.notLeader(leader: leader) }
        guard target != id else { throw RaftError.transferRefused("replica \(id) already leads") }
        guard membership.voters.contains(target), let peer = progress[target] else {
            throw RaftError.transferRefused("replica \(target) is not a voter")
        }
        if transferee == target { return }
        transferee = target
        // The transfer must finish within an election timeout (see tickLeader).
        electionElapsed = 0
        try wrapStorageErrors {
            if peer.match == (try log.lastIndex()) {
                send(Message(kind: .timeoutNow, from: id, to: target, term: term))
            } else {
                _ = try sendAppend(to: target, sendIfEmpty: true)
            }
        }
    }

    // MARK: - Follower

    mutating func handleAppend(_ message: Message) throws {
        try validateEntries(message)
        var response = Message(kind: .appendResponse, from: id, to: message.from, term: term)
        response.context = message.context
        if message.index < log.committed {
            // Everything up to our commit index already matches the leader's log.
            response.index = log.committed
            send(response)
            return
        }
        if let lastNew = try log.maybeAppend(
            prevIndex: message.index, prevTerm: message.logTerm, commit: message.commit, entries: message.entries)
        {
            try applyCommittedMembershipChanges()
            response.index = lastNew
        } else {
            // Tell the leader where our log could match, so it skips whole terms at once.
            let hint = try log.findConflictByTerm(min(message.index, try log.lastIndex()), message.logTerm)
            response.reject = true
            response.index = message.index
            response.rejectHint = hint.index
            response.logTerm = hint.term
        }
        send(response)
    }

    /// Refuses appends whose entries do not continue the previous index in order.
    private func validateEntries(_ message: Message) throws {
        var expectedIndex = message.index + 1
        var previousTerm = message.logTerm
        for entry in message.entries {
            guard entry.index == expectedIndex, entry.term >= previousTerm, entry.term <= message.term else {
                throw RaftError.protocolViolation("append from \(message.from) carries out-of-order entry \(entry.term)/\(entry.index)")
            }
            expectedIndex += 1
            previousTerm = entry.term
        }
    }

    mutating func handleHeartbeat(_ message: Message) throws {
        log.commit(to: min(message.commit, try log.lastIndex()))
        try applyCommittedMembershipChanges()
        var response = Message(kind: .heartbeatResponse, from: id, to: message.from, term: term)
        response.context = message.context
        send(response)
    }

    mutating func handleSnapshot(_ message: Message) throws {
        guard let snapshot = message.snapshot, !snapshot.isEmpty else {
            throw RaftError.protocolViolation("snapshot message from \(message.from) carries no snapshot")
        }
        var response = Message(kind: .appendResponse, from: id, to: message.from, term: term)
        let index = snapshot.metadata.index
        if index <= log.committed {
            response.index = log.committed
        } else if try log.matchTerm(index, snapshot.metadata.term) {
            // Our log already has the snapshot's last entry: just commit up to it. Answer with
            // the commit index, not the last index: entries after it may be an uncommitted
            // tail of an older term that the leader's log does not have (etcd's handleSnapshot).
            log.commit(to: index)
            try applyCommittedMembershipChanges()
            response.index = log.committed
        } else {
            log.restore(snapshot)
            membership = snapshot.metadata.membership
            membershipAppliedIndex = index
            response.index = index
        }
        send(response)
    }
}
