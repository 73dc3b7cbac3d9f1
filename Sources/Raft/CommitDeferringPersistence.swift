/// What one `Ready` must write to stable storage before its messages go out.
public struct PersistencePlan: Sendable, Equatable {
    public var hardState: HardState?
    public var entries: [Entry]
    public var snapshot: Snapshot?
}

/// The witness's persistence policy, as a pure value so that the simulation runs the same rule:
/// a change of the commit index alone is not written on its own. It rides along with the next
/// write that must reach the disk anyway (entries, a snapshot, a new term or vote).
///
/// Why this is safe (the invariant the simulation checks with this policy in force): the
/// commit index is not part of Raft's persistent state (paper Figure 2). An entry is committed
/// because a majority holds it on disk, not because anyone recorded its commit; a replica that
/// restarts with an older commit index relearns it from the leader, and its application, rebuilt
/// from the snapshot, re-applies the same committed entries. A restarted replica never lowers
/// anything below its snapshot, since the snapshot itself is durable. What must never be
/// deferred is the term and the vote: a replica that forgot a vote could vote twice in a term.
public struct CommitDeferringPersistence: Sendable {
    /// The hard state last planned for the disk.
    public private(set) var durableHardState: HardState
    /// A newer hard state that differs from the durable one in its commit index only.
    public private(set) var deferredHardState: HardState?

    public init(durable: HardState) {
        durableHardState = durable
    }

    /// What to write for `ready`, or nil when nothing has to reach the disk. The caller must
    /// write the plan (atomically) before sending the ready's messages; a failed write is fatal.
    public mutating func plan(_ ready: Ready) -> PersistencePlan? {
        let hardState = ready.hardState ?? deferredHardState
        if let candidate = hardState, ready.entries.isEmpty, ready.snapshot == nil,
            candidate.term == durableHardState.term, candidate.vote == durableHardState.vote
        {
            deferredHardState = candidate
            return nil
        }
        guard hardState != nil || !ready.entries.isEmpty || ready.snapshot != nil else { return nil }
        if let hardState {
            durableHardState = hardState
            deferredHardState = nil
        }
        return PersistencePlan(hardState: hardState, entries: ready.entries, snapshot: ready.snapshot)
    }
}
