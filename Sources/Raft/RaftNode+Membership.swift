extension RaftNode {
    /// Proposes one membership change (thesis §4.1, single-server changes). The leader
    /// refuses while another change has not committed, and before its own first entry of the
    /// term has committed.
    @discardableResult
    public mutating func proposeMembershipChange(_ change: MembershipChange) throws -> UInt64 {
        try checkCanPropose()
        guard log.committed >= pendingMembershipIndex else {
            throw RaftError.membershipChangePending(index: pendingMembershipIndex)
        }
        switch change {
        case .addVoter(let voter):
            guard voter != 0 else { throw RaftError.membershipChangeRefused("0 is not a valid replica id") }
            guard !membership.voters.contains(voter) else {
                throw RaftError.membershipChangeRefused("replica \(voter) is already a voter")
            }
        case .addLearner(let learner):
            guard learner != 0 else { throw RaftError.membershipChangeRefused("0 is not a valid replica id") }
            guard !membership.members.contains(learner) else {
                throw RaftError.membershipChangeRefused("replica \(learner) is already a member")
            }
        case .removeVoter(let voter):
            guard membership.members.contains(voter) else {
                throw RaftError.membershipChangeRefused("replica \(voter) is not a member")
            }
            guard !membership.voters.contains(voter) || membership.voters.count > 1 else {
                throw RaftError.membershipChangeRefused("replica \(voter) is the last voter")
            }
        }
        return try wrapStorageErrors {
            let index = try appendEntries([Entry(term: 0, index: 0, kind: .membershipChange, data: change.encoded)])
            pendingMembershipIndex = index
            return index
        }
    }

    /// Makes every membership change up to the commit index part of `membership`. A change
    /// takes effect when it commits, on every replica.
    mutating func applyCommittedMembershipChanges() throws {
        guard log.committed > membershipAppliedIndex else { return }
        let low = max(membershipAppliedIndex + 1, try log.firstIndex())
        let high = log.committed + 1
        membershipAppliedIndex = log.committed
        guard low < high else { return }
        for entry in try log.slice(low, high, maxBytes: .max) where entry.kind == .membershipChange {
            guard let change = MembershipChange(encoded: entry.data) else {
                throw RaftError.storage("committed entry \(entry.index) holds a malformed membership change")
            }
            try apply(change)
        }
    }

    private mutating func apply(_ change: MembershipChange) throws {
        membership = membership.applying(change)
        guard role == .leader else { return }
        switch change {
        case .addVoter(let voter), .addLearner(let voter):
            if progress[voter] == nil {
                var peer = Progress(next: try log.lastIndex() + 1)
                // A new voter counts as active until the next check-quorum round says otherwise.
                peer.recentActive = true
                progress[voter] = peer
            }
        case .removeVoter(let voter):
            if voter == id {
                try stepDownAfterRemoval()
                return
            }
            progress[voter] = nil
            if transferee == voter { transferee = nil }
        }
    }

    /// A leader whose removal committed tells the remaining voters that it committed, hands
    /// leadership to the most up-to-date of them (so the cluster need not wait an election
    /// timeout), and steps down.
    private mutating func stepDownAfterRemoval() throws {
        progress[id] = nil
        try broadcastAppend()
        let successor = progress.filter { membership.voters.contains($0.key) }
            .max { ($0.value.match, $1.key) < ($1.value.match, $0.key) }?.key
        if let successor {
            send(Message(kind: .timeoutNow, from: id, to: successor, term: term))
        }
        becomeFollower(term: term, leader: nil)
    }
}
