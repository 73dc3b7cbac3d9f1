/// A Raft replica's identity inside one cluster. Zero is never a valid id.
public typealias NodeID = UInt64

/// What an entry carries: an opaque command for the state machine, or a membership change
/// that Raft itself interprets.
public enum EntryKind: UInt8, Sendable, Equatable {
    case normal = 0
    case configurationChange = 1
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

/// The voting members of the cluster. Empty in a replica that has not been bootstrapped.
public struct Configuration: Sendable, Equatable {
    public var voters: Set<NodeID>

    public init(voters: Set<NodeID> = []) {
        self.voters = voters
    }

    /// The number of votes (or acknowledgments) that make a majority.
    public var quorum: Int { voters.count / 2 + 1 }
}

/// Where a snapshot stands in the log and the configuration in force there.
public struct SnapshotMetadata: Sendable, Equatable {
    public var index: UInt64
    public var term: UInt64
    public var configuration: Configuration

    public init(index: UInt64 = 0, term: UInt64 = 0, configuration: Configuration = Configuration()) {
        self.index = index
        self.term = term
        self.configuration = configuration
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
