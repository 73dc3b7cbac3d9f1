/// A replica's role (Raft paper §5.1, with the pre-candidate of thesis §9.6).
public enum RaftRole: String, Sendable, Equatable {
    case follower
    case preCandidate = "pre-candidate"
    case candidate
    case leader
}

/// State that is not persisted: who leads, and this replica's role.
public struct SoftState: Sendable, Equatable {
    public var leader: NodeID?
    public var role: RaftRole
}

/// What the shell must do next, in this order (etcd-raft's Ready contract):
/// 1. persist `snapshot`, `entries` and `hardState` atomically (one `RaftStorage.persist`);
/// 2. send `messages` — only after step 1, since they may promise what was just persisted;
///    the leader's appends, heartbeats and snapshots (`MessageKind.isFromLeader`) are the
///    exception and may go before step 1, since the leader counts its own copy only once
///    `advance` reports it persisted;
/// 3. apply `snapshot` and then `committedEntries` to the application;
/// 4. call `RaftNode.advance(_:)` with this value.
public struct Ready: Sendable, Equatable {
    /// Set when the leader or the role changed since the last `Ready`.
    public var softState: SoftState?
    /// Set when term, vote or commit changed since the last `Ready`.
    public var hardState: HardState?
    /// Entries to persist; they replace any stored entries from the first one's index on.
    public var entries: [Entry] = []
    /// A snapshot received from the leader, to persist and then apply.
    public var snapshot: Snapshot?
    /// Committed entries to apply, in order (persisted already, or persisted in step 1).
    public var committedEntries: [Entry] = []
    public var messages: [Message] = []
    /// Reads confirmed since the last `Ready` (thesis §6.4): serve each once the application
    /// has applied up to its index. Nothing to persist.
    public var readStates: [ReadState] = []

    public var isEmpty: Bool {
        softState == nil && hardState == nil && entries.isEmpty && snapshot == nil
            && committedEntries.isEmpty && messages.isEmpty && readStates.isEmpty
    }
}

/// A linearizable read that the leader confirmed: once this replica has applied `index`, its
/// state reflects every entry committed before the read was asked for (Raft thesis §6.4).
public struct ReadState: Sendable, Equatable {
    /// The shell's own number for the read (or batch of reads), as given to `readIndex`.
    public var context: UInt64
    public var index: UInt64

    public init(context: UInt64, index: UInt64) {
        self.context = context
        self.index = index
    }
}

/// A summary of one replica, for status displays and tests.
public struct RaftStatus: Sendable, Equatable {
    public struct Peer: Sendable, Equatable {
        public var match: UInt64
        public var next: UInt64
        public var state: ReplicationState
    }

    public var id: NodeID
    public var term: UInt64
    public var vote: NodeID?
    public var role: RaftRole
    public var leader: NodeID?
    public var commit: UInt64
    public var applied: UInt64
    public var lastIndex: UInt64
    public var membership: Membership
    /// On the leader: each voter's replication progress. Empty elsewhere.
    public var peers: [NodeID: Peer]
    public var transferee: NodeID?
}
