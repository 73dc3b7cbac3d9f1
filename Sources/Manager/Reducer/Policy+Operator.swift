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
            drop(id, forced: false, &changes)
        case .forceDrop(let id):
            drop(id, forced: true, &changes)
        case .setCandidatePriority(let id, let priority):
            setCandidatePriority(id, to: priority)
        case .setReplicationQuorum(let id, let enabled):
            setReplicationQuorum(id, to: enabled, &changes)
        case .setParameter(let name, let value, let id):
            setParameter(name, to: value, node: id)
        case .restartPostgres(let id):
            if let refusal = restartRefusal(id) {
                waitingReason = "restart of node \(id) refused: \(refusal)"
                return
            }
            waitingReason = nil
            let index = appliedIndex
            nodes.update(id) { $0.restartIndex = index }
        }
    }

    /// `pgquorum drop [--force]`. Unforced, the node's manager stops postgres and reports it.
    /// Forced, that manager is gone for good, so nobody will: safe only when the node cannot
    /// be writing — not a primary, or a primary whose lease has provably run out (then an
    /// election follows).
    private mutating func drop(_ id: PGNodeID, forced: Bool, _ changes: inout [GoalChange]) {
        guard let node = nodes[id] else {
            waitingReason = "\(forced ? "forced drop" : "drop request") ignored: node \(id) is not registered"
            return
        }
        let inElection = [.reportLSN, .fastForward, .preparePromotion, .stopReplication].contains(node.goal)
            || quorumStandbys(excluding: fencedPrimary?.id).contains { $0.id == id }
        if electionInProgress && inElection {
            // Its WAL may be the only copy of acknowledged writes the election must find (a
            // quorum standby not asked yet will be, once the old primary stopped).
            waitingReason = "\(forced ? "forced drop" : "drop") of node \(id) refused: it takes part in the election in progress"
            return
        }
        // Forced, the state it last reached counts too: nobody will report it leaving it.
        let ownsPrimary = (forced ? [node.goal, node.reached] : [node.goal]).contains {
            Self.writableGoals.contains($0) || Self.primaryOwnedGoals.contains($0)
        }
        if forced && ownsPrimary && !leaseExpired(node) {
            waitingReason = "forced drop of node \(id) refused: it is the primary and its lease may still run; switch over or wait until it is unhealthy"
            return
        }
        let leavesQuorum = primaryNode.map { primary in primary.id != id && quorumStandbys(excluding: primary.id).contains { $0.id == id } } ?? false
        assign(id, .dropped, forced ? "dropped by the operator, forced: its manager will not report" : "dropped by the operator", &changes)
        if forced {
            nodes.update(id) { $0.reached = .dropped }
            if narrowingPrimary == id { narrowingPrimary = nil }
        }
        if ownsPrimary {
            askForLSNReports(excluding: id, &changes)
        } else if leavesQuorum {
            resynchronize(after: id, &changes)
        }
    }

    private mutating func switchover(to target: PGNodeID?, _ changes: inout [GoalChange]) {
        // As pg_auto_failover's perform_failover: only from a primary with synchronous
        // replication on, so that the standbys hold every acknowledged write.
        guard let primary = primaryNode, primary.isConverged, primary.goal == .primary else {
            waitingReason = "switchover ignored: the primary must be in state primary (synchronous replication on)"
            return
        }
        // A candidate streams from the primary (its latest view says so): the clean shutdown
        // hands it the last WAL. A standby cut off from the primary may lack acknowledged
        // writes held only by the primary and a standby since gone to maintenance.
        let candidates = sortedNodes.filter {
            $0.id != primary.id && $0.goal == .secondary && $0.reached == .secondary && isHealthy($0) && seenStreamingByPrimary($0)
                && ($0.registration.candidatePriority > 0 || $0.id == target)
        }
        if let target {
            guard candidates.contains(where: { $0.id == target }) else {
                waitingReason = "switchover ignored: node \(target) is not a healthy secondary streaming from the primary"
                return
            }
            // As pg_auto_failover's perform_promotion: the target wins the election.
            nodes.update(target) { $0.priorityBoost = 101 }
        }
        guard !candidates.isEmpty else {
            waitingReason = "switchover ignored: no healthy secondary streaming from the primary can take over"
            return
        }
        waitingReason = nil
        // Standbys are asked for their LSN once the primary stopped (see electionRules): a
        // clean shutdown first streams every WAL record to the standbys still connected.
        assign(primary.id, .draining, "switchover requested: stop taking writes", &changes)
    }

    private mutating func startMaintenance(_ id: PGNodeID, _ changes: inout [GoalChange]) {
        let node = nodes[id]!
        guard let primary = primaryNode else {
            waitingReason = "maintenance of node \(id) ignored: there is no primary"
            return
        }
        if id == primary.id {
            let candidates = sortedNodes.filter {
                $0.id != id && $0.goal == .secondary && $0.reached == .secondary && isHealthy($0) && $0.registration.candidatePriority > 0
            }
            guard primary.isConverged, primary.goal == .primary, !candidates.isEmpty else {
                waitingReason = "maintenance of the primary ignored: it must be primary with a healthy standby to take over"
                return
            }
            assign(id, .prepareMaintenance, "maintenance requested on the primary: a standby takes over", &changes)
            return
        }
        // As pg_auto_failover's start_maintenance: only a standby that follows the primary.
        guard [.secondary, .catchingUp].contains(node.goal), node.isConverged, !electionInProgress else {
            waitingReason = "maintenance of node \(id) ignored: it is \(node.reached.rawValue), not a standby following the primary"
            return
        }
        // A primary on its way to other replication settings (apply_settings, or primary or
        // wait_primary not reached yet) may still wait for this standby, and it would not
        // wait for it to leave: only a settled primary is asked to (pg_auto_failover also
        // starts maintenance only beside a settled primary).
        guard !node.registration.replicationQuorum || (primary.isConverged && [.primary, .waitPrimary, .single].contains(primary.goal)) else {
            waitingReason = "maintenance of node \(id) refused for now: the primary node \(primary.id) is changing its replication settings (\(primary.reached.rawValue) → \(primary.goal.rawValue)); ask again once it settled"
            return
        }
        let k = Int(settings.numberSyncStandbys)
        let inSync = healthyQuorumSecondaries(of: primary)
        let lastNeeded = primary.goal == .primary && inSync.contains { $0.id == id } && inSync.count - 1 < k
        if lastNeeded && !settings.strictSyncMode {
            assign(primary.id, .waitPrimary, "node \(id) goes to maintenance: too few quorum standbys left", &changes)
            assign(id, .waitMaintenance, "wait until the primary stops waiting for this node", &changes)
        } else {
            assign(id, .maintenance, "maintenance requested", &changes)
            if node.registration.replicationQuorum { resynchronize(after: id, &changes) }
        }
    }

    /// A quorum standby left: it may have been the only one holding the latest acknowledged
    /// writes. The primary re-applies `synchronous_standby_names` (apply_settings), and its
    /// manager returns to primary only once a remaining quorum standby flushed past its current
    /// LSN; until then no automatic failover starts.
    mutating func resynchronize(after departed: PGNodeID, _ changes: inout [GoalChange]) {
        guard let primary = primaryNode, primary.goal == .primary, settings.numberSyncStandbys > 0 else { return }
        assign(primary.id, .applySettings, "quorum standby node \(departed) left: wait until the others hold every acknowledged write", &changes)
        narrowingPrimary = primary.id
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
