@testable import Raft

/// An in-process cluster driven step by step: messages wait in a queue until delivered, links
/// can be cut, replicas crash and restart. Everything is deterministic, and every step can
/// write a readable trace (for scenario files).
final class Cluster {
    var replicas: [NodeID: Replica] = [:]
    /// Messages sent and not yet delivered, in send order.
    var pending: [Message] = []
    /// Links (from, to) that drop every message.
    var cutLinks: Set<[NodeID]> = []
    var trace: [String] = []
    var restarts: UInt64 = 0

    var ids: [NodeID] { replicas.keys.sorted() }

    /// Creates replicas `ids`; those in `voters` are bootstrapped as the founding members, the
    /// others start empty (to be added later).
    init(ids: [NodeID], voters: Set<NodeID>? = nil, configure: (inout RaftConfig) -> Void = { _ in }) throws {
        let founders = voters ?? Set(ids)
        for id in ids {
            var config = RaftConfig(id: id)
            configure(&config)
            let replica = Replica(id: id, config: config)
            if founders.contains(id) { try RaftNode.bootstrap(storage: replica.storage, voters: founders) }
            try replica.start(seed: id)
            replicas[id] = replica
        }
    }

    func node(_ id: NodeID) -> RaftNode {
        guard let node = replicas[id]?.raft else { preconditionFailure("replica \(id) is down") }
        return node
    }

    /// Runs `body` on a live replica's core.
    func with<T>(_ id: NodeID, _ body: (inout RaftNode) throws -> T) rethrows -> T {
        guard let replica = replicas[id], var node = replica.raft else { preconditionFailure("replica \(id) is down") }
        defer { replica.raft = node }
        return try body(&node)
    }

    /// Processes every replica's ready batches, queueing their messages.
    func processReady() throws {
        for id in ids {
            guard let replica = replicas[id] else { continue }
            let (messages, events) = try replica.processReady()
            for event in events { record(id, event) }
            pending += messages
        }
    }

    private func record(_ id: NodeID, _ event: ReplicaEvent) {
        switch event {
        case .softState(let soft, let term):
            trace.append("\(id) is \(soft.role.rawValue) at term \(term)" + (soft.leader.map { ", leader \($0)" } ?? ""))
        case .persisted:
            break
        case .snapshotInstalled(let metadata, _):
            trace.append("\(id) installed snapshot \(metadata.term)/\(metadata.index)")
        case .applied(let entry, _):
            trace.append("\(id) applied \(entry.shortDescription)")
        case .readState(let read):
            trace.append("\(id) read confirmed: context=\(read.context) index=\(read.index)")
        }
    }

    /// Delivers every pending message once (replies queue up for the next round). Returns how
    /// many were delivered or dropped.
    @discardableResult
    func deliverRound(to target: NodeID? = nil) throws -> Int {
        let batch = pending.filter { target == nil || $0.to == target }
        pending.removeAll { target == nil || $0.to == target }
        for message in batch {
            guard let replica = replicas[message.to], replica.isUp,
                !cutLinks.contains([message.from, message.to])
            else {
                trace.append("dropped \(message)")
                continue
            }
            trace.append("\(message)")
            do {
                try with(message.to) { try $0.step(message) }
            } catch let error as RaftError {
                trace.append("\(message.to) refused: \(error)")
            }
        }
        return batch.count
    }

    /// Processes and delivers until no replica has anything left to say.
    func stabilize(maxRounds: Int = 1000) throws {
        for _ in 0..<maxRounds {
            try processReady()
            if pending.isEmpty { return }
            try deliverRound()
        }
        preconditionFailure("cluster did not stabilize within \(maxRounds) rounds")
    }

    func tick(_ id: NodeID, times: Int = 1) throws {
        for _ in 0..<times { try with(id) { try $0.tick() } }
    }

    /// Cuts every link between the groups (messages across them are dropped).
    func partition(_ groups: [[NodeID]]) {
        cutLinks = []
        for (position, group) in groups.enumerated() {
            for other in groups[(position + 1)...] {
                for a in group {
                    for b in other {
                        cutLinks.insert([a, b])
                        cutLinks.insert([b, a])
                    }
                }
            }
        }
    }

    func isolate(_ id: NodeID) {
        partition([[id], ids.filter { $0 != id }])
    }

    func heal() {
        cutLinks = []
    }

    func crash(_ id: NodeID) {
        replicas[id]?.crash()
        pending.removeAll { $0.to == id }
    }

    func restart(_ id: NodeID) throws {
        restarts += 1
        try replicas[id]?.start(seed: id &* 1000 &+ restarts)
    }

    /// The one-line summary of each replica, for `status` in scenario files.
    func statusLines() -> [String] {
        ids.map { id in
            guard let raft = replicas[id]?.raft else { return "\(id): down" }
            let s = raft.status
            let voters = s.membership.voters.sorted().map(String.init).joined(separator: ",")
            let learners = s.membership.learners.sorted().map(String.init).joined(separator: ",")
            return "\(id): \(s.role.rawValue) term=\(s.term) leader=\(s.leader.map(String.init) ?? "none") "
                + "commit=\(s.commit) applied=\(s.applied) last=\(s.lastIndex) voters=(\(voters))" + (learners.isEmpty ? "" : " learners=(\(learners))")
        }
    }

    /// The persisted log of one replica, for `log` in scenario files.
    func logLines(_ id: NodeID) throws -> [String] {
        guard let replica = replicas[id] else { return [] }
        let storage = replica.storage
        var lines: [String] = []
        let snapshot = try storage.snapshot()
        if !snapshot.isEmpty { lines.append("snapshot \(snapshot.metadata.term)/\(snapshot.metadata.index)") }
        let first = try storage.firstIndex()
        let last = try storage.lastIndex()
        if first <= last {
            lines += try storage.entries(from: first, to: last + 1, maxBytes: .max).map(\.shortDescription)
        }
        return lines.isEmpty ? ["(empty)"] : lines
    }
}
