/// The replica's log: what storage holds, plus the tail not yet persisted ("unstable").
///
/// Index arithmetic follows the Raft paper: indexes start at 1; index 0 with term 0 stands
/// before the first entry. After a snapshot at index `s`, entries up to `s` are gone and
/// `term(s)` is the snapshot's term.
struct RaftLog {
    let storage: any RaftStorage
    /// A snapshot received from the leader, not yet persisted.
    var unstableSnapshot: Snapshot?
    /// Entries not yet persisted; the first has index `unstableOffset`.
    var unstableEntries: [Entry] = []
    var unstableOffset: UInt64
    /// The highest index known to be committed (Raft paper: `commitIndex`).
    var committed: UInt64
    /// The highest index handed to the application (`lastApplied`).
    var applied: UInt64

    init(storage: any RaftStorage, applied: UInt64) throws {
        self.storage = storage
        let first = try storage.firstIndex()
        let last = try storage.lastIndex()
        unstableOffset = last + 1
        committed = first - 1
        self.applied = max(applied, first - 1)
    }

    func firstIndex() throws -> UInt64 {
        if let unstableSnapshot { return unstableSnapshot.metadata.index + 1 }
        return try storage.firstIndex()
    }

    func lastIndex() throws -> UInt64 {
        if !unstableEntries.isEmpty { return unstableOffset + UInt64(unstableEntries.count) - 1 }
        if let unstableSnapshot { return unstableSnapshot.metadata.index }
        return try storage.lastIndex()
    }

    /// The term of the entry at `index`; nil when it was compacted away or does not exist yet.
    func term(_ index: UInt64) throws -> UInt64? {
        if index >= unstableOffset, index < unstableOffset + UInt64(unstableEntries.count) {
            return unstableEntries[Int(index - unstableOffset)].term
        }
        if let unstableSnapshot, index == unstableSnapshot.metadata.index { return unstableSnapshot.metadata.term }
        let first = try firstIndex()
        guard index + 1 >= first, index <= (try lastIndex()) else { return nil }
        if index == 0 { return 0 }
        if unstableSnapshot != nil { return nil }
        do {
            return try storage.term(at: index)
        } catch StorageError.compacted {
            return nil
        } catch StorageError.unavailable {
            return nil
        }
    }

    func lastTerm() throws -> UInt64 {
        try term(try lastIndex()) ?? 0
    }

    func matchTerm(_ index: UInt64, _ term: UInt64) throws -> Bool {
        try self.term(index) == term
    }

    /// Whether a candidate whose log ends at `lastIndex`/`lastTerm` is at least as up to date
    /// as ours (Raft paper §5.4.1).
    func isUpToDate(lastIndex: UInt64, lastTerm: UInt64) throws -> Bool {
        let ourTerm = try self.lastTerm()
        let ourIndex = try self.lastIndex()
        return lastTerm > ourTerm || (lastTerm == ourTerm && lastIndex >= ourIndex)
    }

    /// Appends entries, replacing any existing entries from the first new index on.
    mutating func append(_ entries: [Entry]) {
        guard let first = entries.first?.index else { return }
        let end = unstableOffset + UInt64(unstableEntries.count)
        if first == end {
            unstableEntries.append(contentsOf: entries)
        } else if first <= unstableOffset {
            // Replaces entries that storage holds: persisting these truncates storage from `first`.
            unstableOffset = first
            unstableEntries = entries
        } else {
            unstableEntries.removeSubrange(Int(first - unstableOffset)...)
            unstableEntries.append(contentsOf: entries)
        }
    }

    /// The index of the first entry that conflicts with our log or is new; 0 when all match.
    func findConflict(_ entries: [Entry]) throws -> UInt64 {
        for entry in entries where !(try matchTerm(entry.index, entry.term)) {
            return entry.index
        }
        return 0
    }

    /// The largest index at or below `index` whose term is at most `term`, and that term
    /// (fast log backtracking, as in etcd-raft).
    func findConflictByTerm(_ index: UInt64, _ term: UInt64) throws -> (index: UInt64, term: UInt64) {
        var candidate = min(index, try lastIndex())
        while true {
            guard let found = try self.term(candidate) else { return (candidate, 0) }
            if found <= term || candidate == 0 { return (candidate, found) }
            candidate -= 1
        }
    }

    /// Follower side of AppendEntries (Raft paper §5.3): if our log has `prevTerm` at
    /// `prevIndex`, appends what is new and returns the last new index; nil otherwise.
    mutating func maybeAppend(
        prevIndex: UInt64, prevTerm: UInt64, commit leaderCommit: UInt64, entries: [Entry]
    ) throws -> UInt64? {
        guard try matchTerm(prevIndex, prevTerm) else { return nil }
        let lastNew = prevIndex + UInt64(entries.count)
        let conflict = try findConflict(entries)
        if conflict != 0 {
            guard conflict > committed else {
                throw RaftError.protocolViolation(
                    "entry \(conflict) conflicts with the committed prefix (committed \(committed))")
            }
            append(Array(entries[Int(conflict - prevIndex - 1)...]))
        }
        commit(to: min(leaderCommit, lastNew))
        return lastNew
    }

    mutating func commit(to index: UInt64) {
        if index > committed { committed = index }
    }

    /// Leader side: commits `index` if it holds an entry of `term` (Raft paper §5.4.2: only
    /// entries of the leader's current term are committed by counting replicas).
    mutating func maybeCommit(_ index: UInt64, term: UInt64) throws -> Bool {
        guard index > committed, try self.term(index) == term else { return false }
        committed = index
        return true
    }

    /// Entries in `[low, high)`, at most `maxBytes` of them (always at least one).
    func slice(_ low: UInt64, _ high: UInt64, maxBytes: Int) throws -> [Entry] {
        guard low < high else { return [] }
        var result: [Entry] = []
        if low < unstableOffset {
            result = try storage.entries(from: low, to: min(high, unstableOffset), maxBytes: maxBytes)
            // Storage stopped early for size: do not add unstable entries after a gap.
            if UInt64(result.count) < min(high, unstableOffset) - low { return result }
        }
        if high > unstableOffset {
            var bytes = result.reduce(0) { $0 + $1.sizeBytes }
            for index in max(low, unstableOffset)..<high {
                let entry = unstableEntries[Int(index - unstableOffset)]
                if !result.isEmpty && bytes + entry.sizeBytes > maxBytes { break }
                bytes += entry.sizeBytes
                result.append(entry)
            }
        }
        return result
    }

    /// Entries from `low` to the end of the log, at most `maxBytes`.
    func entries(from low: UInt64, maxBytes: Int) throws -> [Entry] {
        try slice(low, try lastIndex() + 1, maxBytes: maxBytes)
    }

    /// Committed entries not yet handed to the application.
    func nextCommittedEntries(maxBytes: Int) throws -> [Entry] {
        let low = max(applied + 1, try firstIndex())
        guard committed >= low else { return [] }
        return try slice(low, committed + 1, maxBytes: maxBytes)
    }

    /// Storage now holds entries up to `index` of `term`: they are no longer unstable.
    mutating func stable(to index: UInt64, term: UInt64) {
        guard index >= unstableOffset, index < unstableOffset + UInt64(unstableEntries.count),
            unstableEntries[Int(index - unstableOffset)].term == term
        else { return }
        unstableEntries.removeFirst(Int(index - unstableOffset + 1))
        unstableOffset = index + 1
    }

    mutating func stableSnapshot(to index: UInt64) {
        if unstableSnapshot?.metadata.index == index { unstableSnapshot = nil }
    }

    mutating func applied(to index: UInt64) {
        precondition(index <= committed, "applied \(index) beyond committed \(committed)")
        if index > applied { applied = index }
    }

    /// Replaces the log with a snapshot received from the leader.
    mutating func restore(_ snapshot: Snapshot) {
        committed = snapshot.metadata.index
        unstableSnapshot = snapshot
        unstableEntries = []
        unstableOffset = snapshot.metadata.index + 1
    }

    /// The snapshot to send to a follower that needs compacted entries.
    func snapshot() throws -> Snapshot {
        if let unstableSnapshot { return unstableSnapshot }
        return try storage.snapshot()
    }
}
