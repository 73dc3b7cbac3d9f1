import EventLog

extension ClusterState {
    /// Operator requests (pg_auto_failover's perform_failover/promotion, start/stop_maintenance,
    /// remove_node). A request that cannot be honoured now changes nothing and says why.
    mutating func handle(_ request: OperatorRequest, changes: inout [GoalChange]) {
        switch request {
        case .switchover(let target):
            switchover(to: target, &changes)
        case .maintenance(let id, let enabled):
            guard nodes[id] != nil else {
                waitingReason = "maintenance request ignored: node \(id) is not registered"
                return
            }
            if enabled { startMaintenance(id, &changes) } else { stopMaintenance(id, &changes) }
        case .dropNode(let id):
            guard let node = nodes[id] else {
                waitingReason = "drop request ignored: node \(id) is not registered"
                return
            }
            let wasPrimary = Self.writableGoals.contains(node.goal) || Self.primaryOwnedGoals.contains(node.goal)
            assign(id, .dropped, "dropped by the operator", &changes)
            if wasPrimary { askForLSNReports(excluding: id, &changes) }
        }
    }

    private mutating func switchover(to target: PGNodeID?, _ changes: inout [GoalChange]) {
        guard let primary = primaryNode, primary.isConverged, [.primary, .waitPrimary].contains(primary.goal) else {
            waitingReason = "switchover ignored: no converged primary"
            return
        }
        let candidates = sortedNodes.filter {
            $0.id != primary.id && $0.goal == .secondary && $0.reached == .secondary && isHealthy($0)
                && ($0.registration.candidatePriority > 0 || $0.id == target)
        }
        if let target {
            guard candidates.contains(where: { $0.id == target }) else {
                waitingReason = "switchover ignored: node \(target) is not a healthy secondary"
                return
            }
            // As pg_auto_failover's perform_promotion: the target wins the election.
            nodes[target]!.priorityBoost = 101
        }
        guard !candidates.isEmpty else {
            waitingReason = "switchover ignored: no healthy secondary can take over"
            return
        }
        waitingReason = nil
        assign(primary.id, .draining, "switchover requested: stop taking writes", &changes)
        askForLSNReports(excluding: primary.id, &changes)
    }

    private mutating func startMaintenance(_ id: PGNodeID, _ changes: inout [GoalChange]) {
        let node = nodes[id]!
        guard let primary = primaryNode else {
            assign(id, .maintenance, "maintenance requested", &changes)
            return
        }
        if id == primary.id {
            let candidates = sortedNodes.filter {
                $0.id != id && $0.goal == .secondary && $0.reached == .secondary && isHealthy($0) && $0.registration.candidatePriority > 0
            }
            guard primary.isConverged, !candidates.isEmpty else {
                waitingReason = "maintenance of the primary ignored: no healthy standby can take over"
                return
            }
            assign(id, .prepareMaintenance, "maintenance requested on the primary: a standby takes over", &changes)
            askForLSNReports(excluding: id, &changes)
            return
        }
        let k = Int(settings.numberSyncStandbys)
        let inSync = healthyQuorumSecondaries(of: primary)
        let lastNeeded = primary.goal == .primary && inSync.contains { $0.id == id } && inSync.count - 1 < k
        if lastNeeded && !settings.strictSyncMode {
            assign(primary.id, .waitPrimary, "node \(id) goes to maintenance: too few quorum standbys left", &changes)
            assign(id, .waitMaintenance, "wait until the primary stops waiting for this node", &changes)
        } else {
            assign(id, .maintenance, node.goal == .maintenance ? node.goalReason : "maintenance requested", &changes)
        }
    }

    private mutating func stopMaintenance(_ id: PGNodeID, _ changes: inout [GoalChange]) {
        guard nodes[id]!.goal == .maintenance else {
            waitingReason = "maintenance stop ignored: node \(id) is not in maintenance"
            return
        }
        if let primary = primaryNode, Self.writableGoals.contains(primary.goal), primary.id != id {
            assign(id, .catchingUp, "maintenance is over: rejoin as a standby", &changes)
        } else {
            assign(id, .reportLSN, "maintenance is over and there is no primary: report the LSN", &changes)
        }
    }
}
