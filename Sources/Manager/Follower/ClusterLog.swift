import EventLog

/// Reading the committed log from the witnesses and replaying it with the reducer, the way
/// every node manager and the CLI derive the same cluster state (DESIGN §3).
public enum ClusterLog {
    /// One replayed entry with the goals it changed.
    public struct Step: Sendable {
        public var entry: LogEntry
        public var changes: [GoalChange]
        /// The state's waiting reason after this entry, when the entry changed it.
        public var waitingReason: String?
        /// A retried request whose first attempt was applied at this index: not applied again.
        public var retryOf: UInt64?
    }

    /// The state at the latest committed entry: the snapshot, then every entry after it,
    /// read linearizably (everything committed before the call is in it). With `stale`, what
    /// the first witness to answer has applied, however old (for diagnosis).
    public static func load(
        from client: WitnessClient, formation: String = EventRecord.defaultFormation, stale: Bool = false
    ) async throws -> ClusterState {
        var state = ClusterState(formation: formation)
        try await replay(from: client, into: &state, stale: stale, onStep: nil)
        return state
    }

    /// Replays entries after `state.appliedIndex` into `state` until the end of what is
    /// committed. When the entries needed were compacted, restarts from the snapshot (whose
    /// steps are not reported). Returns the next index to read.
    ///
    /// A formation other than the default one reads only the entries it needs (its own, and
    /// those of no formation in particular): the others would only move its log time forward
    /// between its own entries, which decide nothing (`ClusterState.apply`), and with many
    /// formations they are most of the log.
    @discardableResult
    public static func replay(
        from client: WitnessClient, into state: inout ClusterState, stale: Bool = false,
        onSnapshot: ((WitnessSnapshot) -> Void)? = nil, onStep: ((Step) -> Void)?
    ) async throws -> UInt64 {
        var next = state.appliedIndex + 1
        while true {
            let read: WitnessClient.FormationRead
            do {
                read = try await client.read(formation: state.formation, from: next, maxEntries: 10_000, stale: stale)
            } catch WitnessClientError.failure(let failure) where failure.code == .compacted {
                let snapshot = try await client.snapshot()
                state = try restore(snapshot, formation: state.formation)
                onSnapshot?(snapshot)
                next = snapshot.index + 1
                continue
            }
            guard read.through >= next else { return next }
            for committed in read.entries {
                apply(committed, to: &state, onStep: onStep)
            }
            skip(through: read.through, in: &state)
            next = read.through + 1
        }
    }

    /// Records that every entry up to `index` is applied: those not applied concerned other
    /// formations only (a filtered read or stream passed them over).
    public static func skip(through index: UInt64, in state: inout ClusterState) {
        state.appliedIndex = max(state.appliedIndex, index)
    }

    /// The formations that have registered nodes: those of the witnesses' snapshot, and those
    /// nodes registered in after it.
    public static func formations(from client: WitnessClient) async throws -> [String] {
        let snapshot = try await client.snapshot()
        var names: Set<String> = []
        if !snapshot.application.isEmpty {
            let states = try FormationStates(snapshot: snapshot.application)
            names = Set(states.states.filter { !$0.value.sortedNodes.isEmpty }.keys)
        }
        var next = snapshot.index + 1
        while true {
            let batch = try await client.read(from: next, maxEntries: 10_000)
            guard let last = batch.last else { break }
            for committed in batch {
                if let entry = committed.logEntry, case .nodeRegistered = entry.record.event { names.insert(entry.record.formation) }
            }
            next = last.index + 1
        }
        return names.sorted()
    }

    /// `formation`'s cluster state in a witness snapshot, which holds every formation (the
    /// initial state before any snapshot, or for a formation the snapshot does not know; a
    /// snapshot of a witness from before every formation was kept holds the default one alone).
    public static func restore(_ snapshot: WitnessSnapshot, formation: String) throws -> ClusterState {
        guard !snapshot.application.isEmpty else { return ClusterState(formation: formation) }
        let formations = try FormationStates(snapshot: snapshot.application)
        var state = formations[formation] ?? ClusterState(formation: formation)
        // The state applied its formation's entries and those of none in particular: the
        // reader goes on after the snapshot's last entry.
        state.appliedIndex = max(state.appliedIndex, snapshot.index)
        return state
    }

    /// Applies one committed entry (Raft's own entries only advance the applied index).
    public static func apply(_ committed: CommittedEntry, to state: inout ClusterState, onStep: ((Step) -> Void)?) {
        guard let entry = committed.logEntry else {
            state.appliedIndex = committed.index
            return
        }
        let reasonBefore = state.waitingReason
        let retryOf = entry.record.formation == state.formation ? entry.record.requestID.flatMap(state.requests.appliedIndex(of:)) : nil
        let changes = state.apply(entry)
        onStep?(
            Step(
                entry: entry, changes: changes, waitingReason: state.waitingReason != reasonBefore ? state.waitingReason : nil,
                retryOf: retryOf))
    }
}
