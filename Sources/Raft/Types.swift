/// A Raft replica's identity inside one cluster. Zero is never a valid id.
public typealias NodeID = UInt64

/// What an entry carries: an opaque command for the state machine, or a membership change
/// that Raft itself interprets.
public enum EntryKind: UInt8, Sendable, Equatable {
    case normal = 0
    case membershipChange = 1
}

/// One position of the replicated log.
public struct Entry: Sendable, Equatable {
    public var term: UInt64
    public var index: UInt64
    public var kind: EntryKind
    public var data: [UInt8]

    public init(term: UInt64, index: UInt64, kind: EntryKind = .normal, data: [UInt8] = []) {
        self.term = term
        self.index = index
        self.kind = kind
        self.data = data
    }

    /// The bytes the entry is accounted for in size-limited batches.
    public var sizeBytes: Int { data.count + 24 }
}

/// What a replica must have on stable storage before it answers any message (Raft paper
/// Figure 2, "persistent state on all servers"), plus the commit index so that a restarted
/// replica does not re-apply from the start.
public struct HardState: Sendable, Equatable {
    public var term: UInt64
    /// The candidate voted for in `term`, if any.
    public var vote: NodeID?
    public var commit: UInt64

    public init(term: UInt64 = 0, vote: NodeID? = nil, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// The members of the cluster: the voters, and the learners (Raft thesis §4.2.1), which receive
/// the log but neither vote nor count toward any quorum. A new member joins as a learner and
/// is promoted once it has caught up, so an empty replica never weakens the quorum. Empty in a
/// replica that has not joined a cluster yet.
public struct Membership: Sendable, Equatable {
    public var voters: Set<NodeID>
    public var learners: Set<NodeID>

    public init(voters: Set<NodeID> = [], learners: Set<NodeID> = []) {
        self.voters = voters
        self.learners = learners
    }

    /// The number of votes (or acknowledgments) that make a majority.
    public var quorum: Int { voters.count / 2 + 1 }

    /// Every replica the leader replicates to: voters and learners.
    public var members: Set<NodeID> { voters.union(learners) }

    /// The membership after `change`.
    public func applying(_ change: MembershipChange) -> Membership {
        var next = self
        switch change {
        case .addVoter(let id):
            // Adding a learner as a voter promotes it.
            next.learners.remove(id)
            next.voters.insert(id)
        case .addLearner(let id):
            if !next.voters.contains(id) { next.learners.insert(id) }
        case .removeVoter(let id):
            next.voters.remove(id)
            next.learners.remove(id)
        }
        return next
    }
}

/// One single-server membership change (Raft thesis §4.1). Replacing a voter is a removal
/// followed by an addition; only one change may be in flight at a time.
public enum MembershipChange: Sendable, Equatable, CustomStringConvertible {
    /// Adds a voter, or promotes a learner to one.
    case addVoter(NodeID)
    /// Removes a voter or a learner.
    case removeVoter(NodeID)
    /// Adds a learner: it is sent the log, and counts for nothing until promoted.
    case addLearner(NodeID)

    /// The entry payload: one operation byte and the node id, big-endian.
    public var encoded: [UInt8] {
        let (operation, id): (UInt8, NodeID) =
            switch self {
            case .addVoter(let id): (1, id)
            case .removeVoter(let id): (2, id)
            case .addLearner(let id): (3, id)
            }
        return [operation] + (0..<8).reversed().map { UInt8(truncatingIfNeeded: id >> ($0 * 8)) }
    }

    /// Decodes a payload made by `encoded`; nil for anything else.
    public init?(encoded bytes: [UInt8]) {
        guard bytes.count == 9 else { return nil }
        let id = bytes[1...].reduce(UInt64(0)) { ($0 << 8) | UInt64($1) }
        guard id != 0 else { return nil }
        switch bytes[0] {
        case 1: self = .addVoter(id)
        case 2: self = .removeVoter(id)
        case 3: self = .addLearner(id)
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .addVoter(let id): return "add voter \(id)"
        case .removeVoter(let id): return "remove voter \(id)"
        case .addLearner(let id): return "add learner \(id)"
        }
    }
}

/// Where a snapshot stands in the log and the membership in force there.
public struct SnapshotMetadata: Sendable, Equatable {
    public var index: UInt64
    public var term: UInt64
    public var membership: Membership

    public init(index: UInt64 = 0, term: UInt64 = 0, membership: Membership = Membership()) {
        self.index = index
        self.term = term
        self.membership = membership
    }
}

/// The application state at `metadata.index`, opaque to Raft.
public struct Snapshot: Sendable, Equatable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]

    public init(metadata: SnapshotMetadata = SnapshotMetadata(), data: [UInt8] = []) {
        self.metadata = metadata
        self.data = data
    }

    public var isEmpty: Bool { metadata.index == 0 }
}
