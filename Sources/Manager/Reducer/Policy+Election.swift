import EventLog
import NodeControl

extension ClusterState {
    /// A node is being promoted, or standbys are reporting their LSN for an election.
    public var electionInProgress: Bool {
        sortedNodes.contains { [.reportLSN, .fastForward, .preparePromotion, .stopReplication, .draining, .prepareMaintenance].contains($0.goal) }
    }

    /// The node on its way to becoming primary, if any.
    var promotedNode: NodeRecord? {
        sortedNodes.first { [.fastForward, .preparePromotion, .stopReplication].contains($0.goal) }
    }

    /// The old primary during a failover: a primary-owned goal, or else the primary dropped
    /// last among those that have not yet said they stopped.
    var fencedPrimary: NodeRecord? {
        sortedNodes.first { Self.primaryOwnedGoals.contains($0.goal) }
            ?? droppedPrimaries.max { $0.goalIndex < $1.goalIndex }
    }

    /// Primaries being dropped that have not yet said they stopped: one dropped while cut
    /// off stays so, and a later primary dropped too must not hide behind it.
    var droppedPrimaries: [NodeRecord] {
        sortedNodes.filter { $0.goal == .dropped && (Self.writableGoals.contains($0.reached) || Self.primaryOwnedGoals.contains($0.reached)) }
    }

    /// Starts a failover when the primary is unhealthy and a healthy candidate exists. Only a
    /// primary that reached primary — synchronous replication on, a quorum standby caught up —
    /// is failed over automatically: one in wait_primary or apply_settings (even on its way to
    /// primary) has no set of standbys known to hold its writes, and promoting any could lose
    /// acknowledged writes.
    mutating func failoverTrigger(_ changes: inout [GoalChange]) {
        guard let primary = primaryNode, [.primary, .applySettings].contains(primary.goal), primary.reached == .primary,
            !isHealthy(primary)
        else { return }
        let candidates = sortedNodes.filter {
            $0.id != primary.id && $0.goal == .secondary && $0.reached == .secondary && isHealthy($0)
                && $0.registration.candidatePriority > 0
        }
        guard !candidates.isEmpty else {
            waitingReason = "primary node \(primary.id) is unhealthy but no healthy standby with priority > 0 can take over"
            return
        }
        guard narrowingPrimary != primary.id else {
            waitingReason = "primary node \(primary.id) is unhealthy while its quorum narrows: a standby that left may hold writes the others lack; "
                + "no automatic failover (bring the primary back, or drop it with --force to accept the loss)"
            return
        }
        assign(primary.id, .draining, "the primary is unhealthy: fence it and elect a new one", &changes)
        askForLSNReports(excluding: primary.id, &changes)
    }

    /// Asks every healthy standby to stop following the primary and report its LSN.
    mutating func askForLSNReports(excluding primary: PGNodeID, _ changes: inout [GoalChange]) {
        for node in sortedNodes
        where node.id != primary && [.secondary, .catchingUp].contains(node.goal)
            && [.secondary, .catchingUp].contains(node.reached) && isHealthy(node)
        {
            assign(node.id, .reportLSN, "election: stop following the primary and report the LSN", &changes)
        }
    }

    /// The election (DESIGN §4): wait until every possible synchronous quorum is represented
    /// among the reports — with `ANY k` over n quorum standbys, n − k + 1 of them — then pick
    /// the highest candidate priority, then the highest timeline and LSN.
    mutating func electionRules(_ changes: inout [GoalChange]) {
        // A planned handover (switchover, maintenance) starts once the primary has stopped.
        if promotedNode == nil, let old = fencedPrimary, old.isConverged, [.draining, .prepareMaintenance].contains(old.goal),
            isHealthy(old) || old.lastReport?.postgresRunning == false
        {
            askForLSNReports(excluding: old.id, &changes)
        }
        // No election while a node holds a writable goal: it is the primary (a node left in
        // report_lsn from an election that is over follows it again, see rejoinRules).
        guard promotedNode == nil, sortedNodes.contains(where: { $0.goal == .reportLSN }),
            !sortedNodes.contains(where: { Self.writableGoals.contains($0.goal) })
        else { return }
        let oldPrimary = fencedPrimary ?? primaryNode
        // Standbys that come back while the election waits are asked for their LSN too.
        if let oldPrimary { askForLSNReports(excluding: oldPrimary.id, &changes) }
        let quorum = quorumStandbys(excluding: oldPrimary?.id)
        let reported = sortedNodes.filter { $0.goal == .reportLSN && $0.reached == .reportLSN && $0.electionLSN != nil }
        // Writes acknowledged under `ANY k` are on k quorum standbys: n − k + 1 reports find
        // one. Without synchronous replication, every healthy quorum standby reports.
        let k = Int(electionSyncStandbys)
        let required = k >= 1 ? max(quorum.count - k + 1, 1) : max(quorum.filter { isHealthy($0) }.count, 1)
        let reportedQuorum = reported.filter { $0.registration.replicationQuorum }
        if reportedQuorum.count < required {
            let missing = quorum.filter { node in !reported.contains { $0.id == node.id } }.map { "node \($0.id)" }
            waitingReason = "election waits for LSN reports: \(reportedQuorum.count) of \(required) quorum standbys reported"
                + (missing.isEmpty ? "" : "; missing \(missing.joined(separator: ", "))")
            return
        }
        // What a primary acknowledged alone (wait_primary), and what it held of the writes
        // acknowledged before it, is wherever it streamed: every healthy standby asked for its
        // LSN reports, in the quorum or not.
        let reportedIDs = Set(reported.map(\.id))
        let unreported = sortedNodes.filter { $0.goal == .reportLSN && isHealthy($0) && !reportedIDs.contains($0.id) }
        if primaryAcknowledgedAlone, !unreported.isEmpty {
            waitingReason = "election waits for LSN reports: node \(oldPrimary.map { "\($0.id)" } ?? "?") took writes without synchronous replication; "
                + "missing \(unreported.map { "node \($0.id)" }.joined(separator: ", "))"
            return
        }
        let candidates = reported.filter { $0.effectivePriority > 0 && isHealthy($0) }
        guard let winner = candidates.max(by: { rank($0) < rank($1) }) else {
            waitingReason = "election waits: no reporting standby has a candidate priority above 0"
            return
        }
        let mostAdvanced = reported.max { ($0.timeline, $0.lsn, -Int($0.id)) < ($1.timeline, $1.lsn, -Int($1.id)) }!
        waitingReason = nil
        for node in reported where node.priorityBoost != 0 { nodes.update(node.id) { $0.priorityBoost = 0 } }
        if (winner.timeline, winner.lsn) < (mostAdvanced.timeline, mostAdvanced.lsn) {
            assign(winner.id, .fastForward,
                   "elected (priority \(winner.registration.candidatePriority)); fetching WAL up to \(LSNFormat.format(mostAdvanced.lsn)) from node \(mostAdvanced.id)",
                   &changes)
        } else {
            assign(winner.id, .preparePromotion,
                   "elected: priority \(winner.registration.candidatePriority), most advanced LSN \(LSNFormat.format(winner.lsn))", &changes)
        }
    }

    /// Orders candidates: priority, then timeline and LSN, then the lower node id.
    private func rank(_ node: NodeRecord) -> (Int, UInt32, LSN, Int) {
        (node.effectivePriority, node.timeline, node.lsn, -Int(node.id))
    }

    /// The node to fetch missing WAL from during fast-forward: the most advanced reporter.
    public var fastForwardSource: NodeRecord? {
        sortedNodes.filter { $0.goal == .reportLSN || $0.goal == .joinSecondary }
            .max { ($0.timeline, $0.lsn, -Int($0.id)) < ($1.timeline, $1.lsn, -Int($1.id)) }
    }

    /// Until when the last replies of the standbys that stopped following a primary for an
    /// election may still hold that primary (`LeaseRules.remainingBySynchronousStandbys`): a
    /// lease and the watchdog's grace after the last of them stopped, if synchronous
    /// replication was on; nil otherwise.
    var standbyRepliesHoldUntilNanos: UInt64? {
        guard electionSyncStandbys > 0, let stopped = lastStoppedFollowingNanos else { return nil }
        return stopped + (UInt64(holdLeaseMillis) + UInt64(FormationSettings.watchdogGraceMillis)) * 1_000_000
    }

    /// Whether those replies may still hold the old primary now.
    var standbyRepliesMayHoldOldPrimary: Bool { standbyRepliesHoldUntilNanos.map { nowNanos < $0 } ?? false }

    /// Drives the elected node to primary: fast-forward, then read-only promotion, then writes
    /// once the old primary is fenced or its lease has provably run out (DESIGN §5 rule 1).
    mutating func promotionRules(_ changes: inout [GoalChange]) {
        guard let winner = promotedNode, winner.isConverged else { return }
        let old = fencedPrimary
        switch winner.goal {
        case .fastForward:
            assign(winner.id, .preparePromotion, "caught up with the most advanced standby", &changes)
        case .preparePromotion:
            assign(winner.id, .stopReplication, "promote, read-only until the old primary is fenced", &changes)
            if let old, old.goal == .draining {
                assign(old.id, .demoteTimeout, "a standby is being promoted: stay fenced", &changes)
            }
            for node in sortedNodes where node.goal == .reportLSN && node.id != winner.id {
                if node.reached == .reportLSN {
                    assign(node.id, .joinSecondary, "lost the election to node \(winner.id): follow it", &changes)
                } else {
                    // It never stopped to report: it simply follows the new primary.
                    assign(node.id, .catchingUp, "node \(winner.id) won the election: follow it", &changes)
                }
            }
        case .stopReplication:
            var reason = "no old primary to fence: take writes"
            if let old {
                let fenced = [.demoteTimeout, .demoted, .maintenance, .dropped].contains(old.reached)
                    || (old.goal == .prepareMaintenance && old.reached == .prepareMaintenance)
                guard fenced || leaseExpired(old) else {
                    waitingReason = "node \(winner.id) stays read-only until node \(old.id) is fenced or its lease runs out"
                    return
                }
                // A primary dropped while narrowing its quorum may still list the standby
                // that left, which no election asks to stop following: its replies can hold
                // that primary for as long as it streams. Only the primary's own stop counts.
                guard fenced || narrowingPrimary != old.id else {
                    waitingReason = "node \(winner.id) stays read-only until node \(old.id) stops: it was narrowing its quorum, "
                        + "and a standby that left may still hold it (drop it with --force if it is gone for good)"
                    return
                }
                if let other = droppedPrimaries.first(where: { $0.id != old.id && !leaseExpired($0) }) {
                    waitingReason = "node \(winner.id) stays read-only until node \(other.id) is fenced or its lease runs out"
                    return
                }
                // With synchronous replication, fresh replies of the standbys that reported
                // for this election may still hold the old primary: until a lease (and the
                // watchdog's grace) after the last of them stopped following it.
                if !fenced, standbyRepliesMayHoldOldPrimary {
                    waitingReason = "node \(winner.id) stays read-only until the standbys' last replies can no longer hold node \(old.id)"
                    return
                }
                if old.goal == .prepareMaintenance {
                    assign(old.id, .maintenance, "a new primary took over: maintenance can start", &changes)
                } else if old.goal != .dropped {
                    assign(old.id, .demoted, fenced ? "fenced: a new primary took over" : "lease ran out: a new primary took over", &changes)
                }
                reason = fenced ? "node \(old.id) is fenced: take writes" : "the lease of node \(old.id) ran out: take writes"
            }
            waitingReason = nil
            electionSyncStandbys = settings.numberSyncStandbys
            assign(winner.id, .waitPrimary, reason, &changes)
        default:
            break
        }
    }
}
