import Foundation
import Raft

/// A 3-replica cluster in one process: the leader proposes batches of entries; messages go
/// straight to their target; every replica persists to a `MemoryStorage` and applies.
struct RaftBenchmark {
    var entries: Int
    var batch: Int
    var payloadBytes: Int
    var runs: Int

    /// Entries proposed but not yet committed, at most (the leader stops proposing past it).
    let uncommittedEntriesMax = 16_384
    /// Replicas compact their log every this many applied entries, as a witness would.
    let compactionIntervalEntries: UInt64 = 100_000

    func run() throws {
        print("raft: 3 replicas in process, in-memory storage, \(entries) entries of \(payloadBytes) bytes, batches of \(batch)")
        var rates: [Double] = []
        for run in 1...runs {
            let (seconds, committed) = try once()
            let rate = Double(committed) / seconds
            rates.append(rate)
            print(String(format: "  run %d: %d entries committed in %.3f s = %.0f entries/s", run, committed, seconds, rate))
        }
        let median = rates.sorted()[rates.count / 2]
        print(String(format: "raft: median %.0f entries/s over %d runs", median, runs))
    }

    private func once() throws -> (seconds: Double, committed: UInt64) {
        let ids: [NodeID] = [1, 2, 3]
        var storages: [NodeID: MemoryStorage] = [:]
        var nodes: [NodeID: RaftNode] = [:]
        var applied: [NodeID: UInt64] = [:]
        for id in ids {
            let storage = MemoryStorage()
            try RaftNode.bootstrap(storage: storage, voters: Set(ids))
            var config = RaftConfig(id: id)
            config.maxMessageSizeBytes = 1 << 20
            config.maxInflightMessages = 256
            storages[id] = storage
            nodes[id] = try RaftNode(config: config, storage: storage)
            applied[id] = 0
        }
        var inbox: [Message] = []
        func drive() throws {
            repeat {
                for id in ids where nodes[id]!.hasReady() {
                    let ready = try nodes[id]!.ready()
                    try storages[id]!.persist(hardState: ready.hardState, entries: ready.entries, snapshot: ready.snapshot)
                    inbox += ready.messages
                    if let last = ready.committedEntries.last {
                        applied[id] = last.index
                        let firstIndex = try storages[id]!.firstIndex()
                        if last.index - firstIndex > compactionIntervalEntries {
                            try storages[id]!.compact(to: last.index, membership: Membership(voters: Set(ids)), data: [])
                        }
                    }
                    nodes[id]!.advance(ready)
                }
                let batch = inbox
                inbox.removeAll(keepingCapacity: true)
                for message in batch { try nodes[message.to]!.step(message) }
            } while !inbox.isEmpty || ids.contains { nodes[$0]!.hasReady() }
        }
        try nodes[1]!.campaign()
        try drive()
        precondition(nodes[1]!.role == .leader, "replica 1 did not become leader")
        let payload = [UInt8](repeating: 0x5a, count: payloadBytes)
        let commands = [[UInt8]](repeating: payload, count: batch)
        let start = applied[1]!
        let target = start + UInt64(entries)
        let clock = ContinuousClock()
        let began = clock.now
        var proposed = start
        while applied.values.min()! < target {
            while proposed < target && proposed - applied[1]! < UInt64(uncommittedEntriesMax) {
                proposed = try nodes[1]!.propose(commands)
            }
            try drive()
        }
        let elapsed = clock.now - began
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return (seconds, applied.values.min()! - start)
    }
}
