import EventLog

extension ClusterState {
    /// Why node `id`'s candidate priority may not become `priority` now, or nil when it may:
    /// not during an election (its choice rests on the priorities it started with), and not
    /// when no standby would be left a candidate for failover. The CLI asks this before it
    /// appends; the reducer asks it again when the request commits.
    public func candidatePriorityRefusal(_ id: PGNodeID, _ priority: UInt8) -> String? {
        guard let node = nodes[id] else { return "node \(id) is not registered" }
        guard priority <= NodeRegistration.candidatePriorityMax else { return "\(priority) is above \(NodeRegistration.candidatePriorityMax)" }
        guard !electionInProgress else { return "an election is in progress; try again once it is over" }
        // The primary is no candidate for failover: its own priority counts only later.
        let primary = primaryNode?.id
        guard priority == 0, node.registration.candidatePriority > 0, id != primary else { return nil }
        let remaining = sortedNodes.filter { $0.id != id && $0.id != primary && $0.goal != .dropped && $0.registration.candidatePriority > 0 }
        guard remaining.isEmpty else { return nil }
        return "no standby would be left to fail over to (every other standby has candidate priority 0); raise another node's priority first"
    }

    /// Why node `id` may not join (`enabled`) or leave the replication quorum now, or nil
    /// when it may: not during an election, and not when fewer quorum standbys than
    /// `number_sync_standbys` would be left.
    public func replicationQuorumRefusal(_ id: PGNodeID, _ enabled: Bool) -> String? {
        guard let node = nodes[id] else { return "node \(id) is not registered" }
        guard node.registration.replicationQuorum != enabled else { return nil }
        guard !electionInProgress else { return "an election is in progress; try again once it is over" }
        guard !enabled else { return nil }
        let k = Int(settings.numberSyncStandbys)
        let primary = primaryNode?.id
        let left = sortedNodes.filter { $0.id != id && $0.id != primary && $0.goal != .dropped && $0.registration.replicationQuorum }.count
        guard left < k else { return nil }
        return "\(left) quorum standby\(left == 1 ? "" : "s") would be left for number_sync_standbys \(k); lower number_sync_standbys first"
    }

    /// Why node `id`'s postgres may not be restarted now, or nil when it may: only a standby
    /// that is where its goal wants it (a converged secondary or catchingup), never the primary
    /// (it switches over first) nor during an election.
    public func restartRefusal(_ id: PGNodeID) -> String? {
        guard let node = nodes[id] else { return "node \(id) is not registered" }
        guard !electionInProgress else { return "an election is in progress; try again once it is over" }
        if Self.writableGoals.contains(node.goal) || Self.primaryOwnedGoals.contains(node.goal) {
            return "it is the primary: switch over first (`pgquorum pg restart --rolling` does)"
        }
        guard node.isConverged, [.secondary, .catchingUp].contains(node.goal) else {
            return "it is \(node.reached.rawValue) (goal \(node.goal.rawValue)), not a standby following the primary"
        }
        return nil
    }

    /// `pgquorum node set NODE candidate-priority N`. The policy runs after it: a formation
    /// whose remaining nodes all had priority 0 may elect now.
    mutating func setCandidatePriority(_ id: PGNodeID, to priority: UInt8) {
        if let refusal = candidatePriorityRefusal(id, priority) {
            waitingReason = "candidate priority of node \(id) refused: \(refusal)"
            return
        }
        waitingReason = nil
        nodes.update(id) { $0.registration.candidatePriority = priority }
    }

    /// `pgquorum node set NODE replication-quorum true|false`. A quorum standby that leaves
    /// the quorum may hold writes no other standby holds yet: the primary narrows its quorum
    /// as when a quorum standby goes to maintenance (`resynchronize`). One that joins is
    /// listed at once (apply_settings).
    mutating func setReplicationQuorum(_ id: PGNodeID, to enabled: Bool, _ changes: inout [GoalChange]) {
        if let refusal = replicationQuorumRefusal(id, enabled) {
            waitingReason = "replication quorum of node \(id) refused: \(refusal)"
            return
        }
        waitingReason = nil
        guard nodes[id]?.registration.replicationQuorum != enabled else { return }
        let primary = primaryNode
        let wasQuorumStandby = primary.map { primary in quorumStandbys(excluding: primary.id).contains { $0.id == id } } ?? false
        nodes.update(id) { $0.registration.replicationQuorum = enabled }
        guard let primary, primary.id != id else { return }
        if wasQuorumStandby {
            resynchronize(after: id, &changes)
        } else if enabled, [.primary, .waitPrimary].contains(primary.goal), primary.isConverged {
            assign(primary.id, .applySettings, "node \(id) joins the replication quorum", &changes)
        }
    }
}
