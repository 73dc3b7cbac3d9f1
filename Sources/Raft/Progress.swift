/// How the leader currently replicates to one follower (etcd-raft's progress states).
public enum ReplicationState: Sendable, Equatable, CustomStringConvertible {
    /// One append at a time until the follower's match index is found.
    case probe
    /// Appends are pipelined, up to `RaftConfig.maxInflightMessages` in flight.
    case replicate
    /// A snapshot at `index` was sent; appends wait until the follower has applied it.
    case snapshot(index: UInt64)

    public var description: String {
        switch self {
        case .probe: return "probe"
        case .replicate: return "replicate"
        case .snapshot(let index): return "snapshot@\(index)"
        }
    }
}

/// The leader's view of one follower's log (Raft paper Figure 2, `nextIndex`/`matchIndex`).
struct Progress: Equatable {
    var match: UInt64 = 0
    var next: UInt64
    var state: ReplicationState = .probe
    /// In probe state: an append was sent and no answer came back yet.
    var probeSent = false
    /// The last index of every append in flight, oldest first (bounded by the window).
    var inflight: [UInt64] = []
    /// The follower was heard from since the last check-quorum round.
    var recentActive = false
    /// Ticks since the snapshot was sent, to retry one that got lost.
    var snapshotTicks = 0
    /// The read round the latest append to this follower carried, if one went out since the
    /// leader's last heartbeat time: that append stands in for the heartbeat when it carried
    /// the current round and the follower echoes rounds on appends.
    var appendRoundSinceHeartbeat: UInt64?
    /// The follower echoed a read round in an append response: it runs a version that does.
    var echoesReadRoundsOnAppends = false

    init(next: UInt64) {
        self.next = next
    }

    mutating func becomeProbe() {
        if case .snapshot(let index) = state {
            next = max(match + 1, index + 1)
        } else {
            next = match + 1
        }
        state = .probe
        probeSent = false
        inflight.removeAll()
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match + 1
        inflight.removeAll()
    }

    mutating func becomeSnapshot(_ index: UInt64) {
        state = .snapshot(index: index)
        snapshotTicks = 0
        inflight.removeAll()
    }

    /// Records a successful append up to `index`; false when it was stale.
    mutating func maybeUpdate(_ index: UInt64) -> Bool {
        var updated = false
        if match < index {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index + 1)
        return updated
    }

    /// Moves `next` back after a rejection of the append at `rejected`; false when stale.
    mutating func maybeDecrease(rejected: UInt64, matchHint: UInt64) -> Bool {
        if state == .replicate {
            // A rejection of an append we no longer wait for, or at or below match, is stale.
            guard rejected > match else { return false }
            next = match + 1
            return true
        }
        guard next - 1 == rejected else { return false }
        next = max(min(rejected, matchHint + 1), match + 1)
        probeSent = false
        return true
    }

    /// Whether appends to this follower must wait.
    func isPaused(maxInflight: Int) -> Bool {
        switch state {
        case .probe: return probeSent
        case .replicate: return inflight.count >= maxInflight
        case .snapshot: return true
        }
    }

    /// Drops in-flight appends acknowledged up to `index`.
    mutating func freeInflight(upTo index: UInt64) {
        inflight.removeAll { $0 <= index }
    }

    /// Records that an append ending at `lastIndex` was sent.
    mutating func sentEntries(lastIndex: UInt64, count: Int, maxInflight: Int) {
        switch state {
        case .replicate:
            if count > 0 {
                next = lastIndex + 1
                precondition(inflight.count < maxInflight, "inflight window overflow: \(inflight.count) >= \(maxInflight)")
                inflight.append(lastIndex)
            }
        case .probe:
            probeSent = true
        case .snapshot:
            preconditionFailure("appending to a follower in snapshot state")
        }
    }
}
