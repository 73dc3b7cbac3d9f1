/// One Raft replica as a pure state machine: inputs are ticks, messages and requests; the
/// output is a `Ready` batch for the shell to persist, send and apply. No I/O beyond reading
/// the storage it was given, no clocks, and randomness only from a seeded generator.
public struct RaftNode {
    public let id: NodeID
    let config: RaftConfig
    var log: RaftLog
    public internal(set) var term: UInt64 = 0
    public internal(set) var vote: NodeID?
    public internal(set) var leader: NodeID?
    public internal(set) var role: RaftRole = .follower
    /// The membership in force: the latest snapshot's, plus every committed change after it.
    public internal(set) var membership = Membership()
    /// The membership changes up to this index are part of `membership`.
    var membershipAppliedIndex: UInt64 = 0
    /// On the leader: a membership change is in flight until this index commits.
    var pendingMembershipIndex: UInt64 = 0
    /// On the leader: the voter leadership is being handed to.
    var transferee: NodeID?
    /// On the leader: the replication progress of every voter, itself included. The leader's
    /// own match index counts only entries it has persisted (see `advance`), so the leader may
    /// send its appends before its own disk write finishes (Raft thesis §10.2.1).
    var progress: [NodeID: Progress] = [:]
    /// On the leader: its own persisted index moved; the commit index may follow.
    var ownPersistencePending = false
    /// On the leader: the index of its first entry of this term (the empty entry). A read
    /// index is never below it, so a new leader serves no read before its first commit.
    var termStartIndex: UInt64 = 0
    /// On the leader: reads waiting for a quorum to confirm its leadership, oldest first.
    var readRounds: [ReadRound] = []
    /// On the leader: the latest read round of this term; every heartbeat carries it.
    var readRound: UInt64 = 0
    /// On the leader: the latest read round each voter has acknowledged in this term.
    var readAcks: [NodeID: UInt64] = [:]
    /// Reads confirmed since the last `ready()`.
    var readStates: [ReadState] = []
    /// On a (pre-)candidate: the answers received, true for granted.
    var votes: [NodeID: Bool] = [:]
    var electionElapsed = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0
    var generator: SeededGenerator
    /// Messages produced since the last `ready()`.
    var messages: [Message] = []
    var previousHardState: HardState
    var previousSoftState: SoftState

    /// Restores a replica from `storage` (empty for a replica that will join an existing cluster).
    public init(config: RaftConfig, storage: any RaftStorage) throws {
        try config.validate()
        self.id = config.id
        self.config = config
        self.generator = SeededGenerator(seed: config.seed)
        do {
            let (hardState, snapshotMembership) = try storage.initialState()
            log = try RaftLog(storage: storage, applied: config.applied)
            membership = snapshotMembership
            membershipAppliedIndex = log.committed
            let lastIndex = try log.lastIndex()
            guard hardState.commit <= lastIndex else {
                throw RaftError.storage("hard state commit \(hardState.commit) is beyond the last entry \(lastIndex)")
            }
            log.commit(to: hardState.commit)
            term = hardState.term
            vote = hardState.vote
            previousHardState = hardState
            previousSoftState = SoftState(leader: nil, role: .follower)
            try applyCommittedMembershipChanges()
        } catch let error as RaftError {
            throw error
        } catch {
            throw RaftError.storage(String(describing: error))
        }
        becomeFollower(term: term, leader: nil)
    }

    /// Writes a new cluster's first entries into an empty storage: one committed membership
    /// change per voter, at term 1. Every founding replica does the same, so their logs agree.
    public static func bootstrap(storage: any RaftStorage, voters: Set<NodeID>) throws {
        guard !voters.isEmpty, !voters.contains(0) else {
            throw RaftError.membershipChangeRefused("a cluster needs at least one voter and no id 0")
        }
        let (hardState, _) = try storage.initialState()
        guard try storage.lastIndex() == 0, hardState == HardState() else {
            throw RaftError.membershipChangeRefused("storage already holds a log; refusing to bootstrap over it")
        }
        let entries = voters.sorted().enumerated().map { position, voter in
            Entry(term: 1, index: UInt64(position + 1), kind: .membershipChange, data: MembershipChange.addVoter(voter).encoded)
        }
        try storage.persist(hardState: HardState(term: 1, vote: nil, commit: UInt64(entries.count)), entries: entries, snapshot: nil)
    }

    /// Whether this replica may become leader: it is a voter.
    var isPromotable: Bool { membership.voters.contains(id) }

    /// The voters in a fixed order, so that message order never depends on hashing.
    var sortedVoters: [NodeID] { membership.voters.sorted() }

    /// Everyone the leader replicates to (voters and learners), in a fixed order.
    var sortedMembers: [NodeID] { membership.members.sorted() }

    var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
    var softState: SoftState { SoftState(leader: leader, role: role) }

    // MARK: - Inputs

    /// Advances logical time by one tick.
    public mutating func tick() throws {
        try wrapStorageErrors {
            if role == .leader {
                try tickLeader()
            } else {
                electionElapsed += 1
                if isPromotable && electionElapsed >= randomizedElectionTimeout {
                    electionElapsed = 0
                    try campaign(config.preVote ? .preElection : .election)
                }
            }
        }
    }

    /// How many more `tick()` calls at the least before one does more than count: sends a
    /// heartbeat, checks the quorum, retries a snapshot or starts an election; nil when no tick
    /// ever does (a replica that cannot campaign). A shell may sleep that many ticks' worth of
    /// time and then deliver the ticks it slept through, before any other input: the replica
    /// goes through exactly the states it would have with a tick every interval, and an idle
    /// follower wakes once an election timeout instead of at every tick.
    public var ticksUntilTimerAction: Int? {
        guard role == .leader else {
            return isPromotable ? max(1, randomizedElectionTimeout - electionElapsed) : nil
        }
        var ticks = min(config.heartbeatTicks - heartbeatElapsed, config.electionTicks - electionElapsed)
        for peer in progress.values {
            if case .snapshot = peer.state { ticks = min(ticks, snapshotRetryTicks - peer.snapshotTicks) }
        }
        return max(1, ticks)
    }

    /// Starts an election now, as if the election timeout had passed.
    public mutating func campaign() throws {
        try wrapStorageErrors {
            guard role != .leader else { return }
            try campaign(config.preVote ? .preElection : .election)
        }
    }

    /// Appends commands to the leader's log and returns the index of the last one.
    @discardableResult
    public mutating func propose(_ commands: [[UInt8]]) throws -> UInt64 {
        try checkCanPropose()
        return try wrapStorageErrors {
            try appendEntries(commands.map { Entry(term: 0, index: 0, kind: .normal, data: $0) })
        }
    }

    /// Appends one command to the leader's log and returns its index.
    @discardableResult
    public mutating func propose(_ command: [UInt8]) throws -> UInt64 {
        try propose([command])
    }

    func checkCanPropose() throws(RaftError) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        if let transferee { throw .transferInProgress(transferee: transferee) }
    }

    /// Tells the leader that a snapshot sent to `follower` was or was not delivered.
    public mutating func reportSnapshot(to follower: NodeID, delivered: Bool) {
        guard role == .leader, var peer = progress[follower], case .snapshot = peer.state else { return }
        if !delivered { peer.becomeProbe() }
        // On success wait for the follower's append response, which moves it on.
        peer.probeSent = delivered
        progress[follower] = peer
    }

    /// Tells the leader that `follower` could not be reached: go back to probing it.
    public mutating func reportUnreachable(_ follower: NodeID) {
        guard role == .leader, var peer = progress[follower], peer.state == .replicate else { return }
        peer.becomeProbe()
        progress[follower] = peer
    }

    // MARK: - Output

    /// Whether `ready()` has anything for the shell.
    public func hasReady() -> Bool {
        if softState != previousSoftState || hardState != previousHardState || ownPersistencePending { return true }
        if !messages.isEmpty || !log.unstableEntries.isEmpty || log.unstableSnapshot != nil { return true }
        if !readStates.isEmpty { return true }
        return log.committed > log.applied
    }

    /// Collects what must be persisted, sent and applied. Call `advance` with it when done.
    public mutating func ready() throws -> Ready {
        try wrapStorageErrors {
            if ownPersistencePending {
                ownPersistencePending = false
                _ = try leaderCommit()
            }
            var ready = Ready()
            if softState != previousSoftState { ready.softState = softState }
            if hardState != previousHardState { ready.hardState = hardState }
            ready.entries = log.unstableEntries
            ready.snapshot = log.unstableSnapshot
            ready.committedEntries = try log.nextCommittedEntries(maxBytes: config.maxCommittedSizePerReadyBytes)
            ready.messages = messages
            messages.removeAll()
            ready.readStates = readStates
            readStates.removeAll()
            return ready
        }
    }

    /// Records that the shell persisted, sent and applied everything in `ready`.
    public mutating func advance(_ ready: Ready) {
        if let softState = ready.softState { previousSoftState = softState }
        if let hardState = ready.hardState { previousHardState = hardState }
        if let last = ready.entries.last {
            log.stable(to: last.index, term: last.term)
            // The leader's own copy counts toward the commit once it is on disk.
            if role == .leader, progress[id]?.maybeUpdate(last.index) == true { ownPersistencePending = true }
        }
        if let snapshot = ready.snapshot {
            log.stableSnapshot(to: snapshot.metadata.index)
            log.applied(to: snapshot.metadata.index)
        }
        if let last = ready.committedEntries.last { log.applied(to: last.index) }
    }

    /// The commit index and the last index of the log, without building `status`.
    public var commitIndex: UInt64 { log.committed }
    public var lastIndex: UInt64 { (try? log.lastIndex()) ?? 0 }

    public var status: RaftStatus {
        var peers: [NodeID: RaftStatus.Peer] = [:]
        if role == .leader {
            for (peerID, peer) in progress {
                peers[peerID] = RaftStatus.Peer(match: peer.match, next: peer.next, state: peer.state)
            }
        }
        return RaftStatus(
            id: id, term: term, vote: vote, role: role, leader: leader, commit: commitIndex, applied: log.applied,
            lastIndex: lastIndex, membership: membership, peers: peers, transferee: transferee)
    }
}

/// Runs `body`, turning storage failures into `RaftError.storage`.
func wrapStorageErrors<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as RaftError {
        throw error
    } catch {
        throw RaftError.storage(String(describing: error))
    }
}
