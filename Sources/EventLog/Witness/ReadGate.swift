import Raft

/// The witness's linearizable reads (Raft thesis §6.4) as a pure core: reads wait here until
/// Raft confirms a read index for them and this witness has applied up to it, or until their
/// deadline passes. Reads that arrive together share one confirmation (one heartbeat round on
/// the leader), so a burst of reads costs what one read costs.
///
/// `Read` is whatever the shell needs to answer one read: `served` returns the reads to answer
/// from the applied state now, `expired` and `failedBatch` those to answer `noQuorum`.
struct ReadGate<Read> {
    /// The most reads waiting at once; past it a new read is refused at once.
    static var pendingMax: Int { 65_536 }

    private struct Pending {
        var read: Read
        var deadlineNanos: UInt64
    }

    /// Reads that arrived since the last batch was asked for.
    private var unbatched: [Pending] = []
    /// Whether one of them cannot wait for the leader's next append or regular heartbeat.
    private var unbatchedPrompt = false
    /// Batches asked for and not yet confirmed, by the context Raft was given.
    private var awaitingIndex: [UInt64: [Pending]] = [:]
    /// Confirmed batches waiting for the applied index to reach theirs, in confirmation order.
    private var awaitingApply: [(index: UInt64, reads: [Pending])] = []
    private var lastContext: UInt64 = 0
    private(set) var count = 0

    /// Queues a read that must be answered by `deadlineNanos`; false when too many wait. A
    /// read that is not `prompt` may wait for the leader's next append or regular heartbeat to
    /// be confirmed; a batch is prompt when one of its reads is.
    mutating func add(_ read: Read, deadlineNanos: UInt64, prompt: Bool = true) -> Bool {
        guard count < Self.pendingMax else { return false }
        unbatched.append(Pending(read: read, deadlineNanos: deadlineNanos))
        unbatchedPrompt = unbatchedPrompt || prompt
        count += 1
        return true
    }

    /// Closes the current batch: the context to pass to `RaftNode.readIndex`, and whether it
    /// is prompt, or nil when no read arrived since the last batch.
    mutating func startBatch() -> (context: UInt64, prompt: Bool)? {
        guard !unbatched.isEmpty else { return nil }
        lastContext += 1
        awaitingIndex[lastContext] = unbatched
        defer {
            unbatched = []
            unbatchedPrompt = false
        }
        return (lastContext, unbatchedPrompt)
    }

    /// Raft refused the batch (no leader known): its reads are answered `noQuorum` now.
    mutating func failedBatch(_ context: UInt64) -> [Read] {
        let reads = awaitingIndex.removeValue(forKey: context) ?? []
        count -= reads.count
        return reads.map(\.read)
    }

    /// Raft confirmed a read index for a batch. A context this gate does not know (answered
    /// already, or expired) is ignored.
    mutating func confirmed(_ state: ReadState) {
        guard let reads = awaitingIndex.removeValue(forKey: state.context) else { return }
        awaitingApply.append((state.index, reads))
    }

    /// The reads that may be answered now that `applied` entries are applied.
    mutating func served(applied: UInt64) -> [Read] {
        var ready: [Read] = []
        awaitingApply.removeAll { batch in
            guard batch.index <= applied else { return false }
            ready += batch.reads.map(\.read)
            return true
        }
        count -= ready.count
        return ready
    }

    /// The reads whose deadline passed without a confirmed, applied read index.
    mutating func expired(nowNanos: UInt64) -> [Read] {
        var late: [Read] = []
        func split(_ reads: [Pending]) -> [Pending] {
            var kept: [Pending] = []
            for pending in reads {
                if pending.deadlineNanos <= nowNanos { late.append(pending.read) } else { kept.append(pending) }
            }
            return kept
        }
        unbatched = split(unbatched)
        for (context, reads) in awaitingIndex {
            let kept = split(reads)
            awaitingIndex[context] = kept.isEmpty ? nil : kept
        }
        awaitingApply = awaitingApply.compactMap { batch in
            let kept = split(batch.reads)
            return kept.isEmpty ? nil : (batch.index, kept)
        }
        count -= late.count
        return late
    }

    /// The earliest deadline of a waiting read, nil when none waits (the shell wakes then to
    /// answer it `expired`).
    func earliestDeadlineNanos() -> UInt64? {
        var earliest: UInt64?
        func note(_ reads: [Pending]) {
            for pending in reads where pending.deadlineNanos < (earliest ?? .max) { earliest = pending.deadlineNanos }
        }
        note(unbatched)
        for reads in awaitingIndex.values { note(reads) }
        for batch in awaitingApply { note(batch.reads) }
        return earliest
    }

    /// Every waiting read (the witness is stopping).
    mutating func removeAll() -> [Read] {
        let all = unbatched.map(\.read) + awaitingIndex.values.flatMap { $0.map(\.read) } + awaitingApply.flatMap { $0.reads.map(\.read) }
        unbatched = []
        awaitingIndex = [:]
        awaitingApply = []
        count = 0
        return all
    }
}
