import EventLog

/// A goal the policy assigned, with the one-line reason `pgquorum log` prints.
public struct GoalChange: Sendable, Equatable, CustomStringConvertible {
    public var node: PGNodeID
    public var from: NodeState
    public var to: NodeState
    public var reason: String

    public var description: String { "node \(node): goal \(from.rawValue) -> \(to.rawValue) (\(reason))" }
}

extension ClusterState {
    /// Applies one committed entry and returns the goals it changed. Deterministic: no clock
    /// but the entry's stamp, no randomness, iteration in node-id order.
    @discardableResult
    public mutating func apply(_ entry: LogEntry) -> [GoalChange] {
        var carried: UInt64?
        if case .termStarted(let nanos) = entry.record.event { carried = nanos }
        advanceTime(term: entry.term, leaderClockNanos: entry.record.stamp.leaderClockNanos, carriedNanos: carried)
        appliedIndex = entry.index
        // Every formation's entries advance log time; only ours change our nodes.
        guard entry.record.formation == formation else { return [] }
        // A retry of a request that already committed is the same request: apply it once.
        if let request = entry.record.requestID,
            requests.admit(request, index: entry.index, wallTimeMillis: entry.record.stamp.wallTimeMillis) != .new
        {
            return []
        }
        var changes: [GoalChange] = []
        applyEvent(entry.record.event, changes: &changes)
        // Heartbeats dominate the log; most change nothing the policy reads. The policy is a
        // fixpoint, so with the same inputs as when it last settled it would change nothing.
        switch entry.record.event {
        case .nodeReports, .tick, .stateReached:
            let inputs = policyInputs()
            if changes.isEmpty, inputs == settledInputs { return changes }
            runPolicy(changes: &changes)
            settledInputs = changes.isEmpty ? inputs : policyInputs()
        default:
            runPolicy(changes: &changes)
            settledInputs = policyInputs()
        }
        return changes
    }

    /// Log time: within a term, the leader's clock, plus an offset. At a new term whose first
    /// entry says how long ago, at most, the last entry before it was stamped (`termStarted`,
    /// measured by the new leader from when it stored that entry, which is later), log time
    /// carries on from there, and what it measures is never more than what really passed; but
    /// the nodes' timers pause for that gap: while the witnesses had no leader nobody's report
    /// could commit, and that silence is no evidence against a node (with a timeout shorter
    /// than a witness election and a client's move to the new leader, every node would look
    /// unhealthy after each one). A timer that pauses only measures less, so every wait it
    /// bounds (a lease, the standbys' last replies) only gets longer. Otherwise, or when the gap
    /// is longer than the unhealthy timeout (the witnesses were without a leader for long:
    /// nodes get their time to report first), every timer restarts from the new term's first
    /// entry, so a witness with a wrong clock can delay a failover by one timeout, never cause
    /// one (DESIGN §4).
    mutating func advanceTime(term entryTerm: UInt64, leaderClockNanos: UInt64, carriedNanos: UInt64? = nil) {
        if entryTerm != term {
            term = entryTerm
            if let carried = carriedNanos, appliedIndex > 0, carried <= UInt64(settings.nodeUnhealthyTimeoutMillis) * 1_000_000,
                nowNanos + carried >= leaderClockNanos
            {
                clockOffsetNanos = nowNanos + carried - leaderClockNanos
                nowNanos += carried
                // Every timer started before the gap, at or before the old now: moved by the
                // gap, it stays at or before the new one.
                if let stopped = lastStoppedFollowingNanos { lastStoppedFollowingNanos = stopped + carried }
                nodes.updateAll { node in
                    node.lastHeardNanos += carried
                    if let ended = node.followingEndedNanos { node.followingEndedNanos = ended + carried }
                    if let down = node.postgresDownSinceNanos { node.postgresDownSinceNanos = down + carried }
                    if let since = node.unstreamedSinceNanos { node.unstreamedSinceNanos = since + carried }
                }
                return
            }
            clockOffsetNanos = 0
            nowNanos = leaderClockNanos
            if lastStoppedFollowingNanos != nil { lastStoppedFollowingNanos = leaderClockNanos }
            nodes.updateAll { node in
                node.lastHeardNanos = leaderClockNanos
                if node.followingEndedNanos != nil { node.followingEndedNanos = leaderClockNanos }
                if node.postgresDownSinceNanos != nil { node.postgresDownSinceNanos = leaderClockNanos }
                if node.unstreamedSinceNanos != nil { node.unstreamedSinceNanos = leaderClockNanos }
            }
        } else {
            nowNanos = max(nowNanos, clockOffsetNanos + leaderClockNanos)
        }
    }

    private mutating func applyEvent(_ event: ClusterEvent, changes: inout [GoalChange]) {
        switch event {
        case .nodeRegistered(var registration):
            if registration.node == 0 {
                // Without an id: the node already at that address registers again (a retried
                // `node create`); a new one gets the next id, never one given before.
                registration.node = node(host: registration.host, port: registration.port)?.id ?? highestNodeID + 1
            }
            highestNodeID = max(highestNodeID, registration.node)
            if var existing = nodes[registration.node] {
                existing.registration = registration
                existing.registeredIndex = appliedIndex
                nodes[registration.node] = existing
            } else {
                var record = NodeRecord(registration: registration)
                record.lastHeardNanos = nowNanos
                record.registeredIndex = appliedIndex
                nodes[registration.node] = record
            }
        case .nodeReports(let reports):
            let now = nowNanos
            for report in reports { noteStandbyViews(report) }
            var followingEndedMoved = false
            for report in reports {
                nodes.update(report.node) { node in
                    // The state reached comes from `stateReached` only: a report built before
                    // its manager reached a state may commit after it, and must not undo it.
                    node.lastReport = report
                    node.lastHeardNanos = now
                    node.postgresDownSinceNanos = report.postgresRunning ? nil : (node.postgresDownSinceNanos ?? now)
                    if node.reached == .reportLSN && report.reachedState == .reportLSN {
                        node.electionLSN = max(report.flushLSN, report.replayLSN)
                        // Its WAL receiver was gone before it reached report_lsn: its last
                        // reply to the old primary is that much older.
                        if report.followingEndedMillisAgo != UInt32.max, let ended = node.followingEndedNanos {
                            let evidence = now - min(now, UInt64(report.followingEndedMillisAgo) * 1_000_000)
                            if evidence < ended {
                                node.followingEndedNanos = evidence
                                followingEndedMoved = true
                            }
                        }
                    }
                }
            }
            if followingEndedMoved { noteFollowingEnded() }
        case .stateReached(let id, let state):
            guard var node = nodes[id] else { return }
            node.reached = state
            node.lastHeardNanos = nowNanos
            if id == narrowingPrimary && [.applySettings, .dropped].contains(state) { narrowingPrimary = nil }
            if state == .reportLSN { node.followingEndedNanos = nowNanos }
            if state == .waitPrimary { primaryAcknowledgedAlone = true }
            // A primary that acted on a goal set after the change read it.
            if Self.writableGoals.contains(state), node.goalIndex >= formerTimeoutsIndex {
                formerLeaseMillis = nil
                formerUnhealthyMillis = nil
            }
            if [.primary, .single].contains(state) { primaryAcknowledgedAlone = false }
            if state != .reportLSN { node.electionLSN = nil }
            nodes[id] = node
            if state == .reportLSN { noteFollowingEnded() }
        case .operatorRequest(let request):
            handle(request, changes: &changes)
        case .settingsChanged(let newSettings):
            do {
                try newSettings.validate()
                if newSettings.primaryLeaseMillis < holdLeaseMillis || newSettings.nodeUnhealthyTimeoutMillis < leaseExpiryMillis {
                    formerLeaseMillis = holdLeaseMillis
                    formerUnhealthyMillis = leaseExpiryMillis
                    formerTimeoutsIndex = appliedIndex
                }
                settings = newSettings
                // Writes acknowledged under an earlier, smaller k stay protected by it; turning
                // synchronous replication off (k = 0) protects nothing new and forgets nothing.
                let newK = newSettings.numberSyncStandbys
                if newK > 0 { electionSyncStandbys = electionSyncStandbys == 0 ? newK : min(electionSyncStandbys, newK) }
                waitingReason = nil
                if let primary = primaryNode, [.primary, .waitPrimary].contains(primary.goal), primary.isConverged {
                    assign(primary.id, .applySettings, "replication settings changed", &changes)
                }
            } catch {
                waitingReason = "settings change ignored: \(error)"
            }
        case .tick, .termStarted, .membershipChanged:
            break
        }
    }

    /// `lastStoppedFollowingNanos` from the standbys' `followingEndedNanos`: the latest.
    mutating func noteFollowingEnded() {
        lastStoppedFollowingNanos = sortedNodes.compactMap(\.followingEndedNanos).max()
    }

    /// The primary's report says which standbys stream to it: each quorum standby that does
    /// not (`streamsInView`) is marked since its last reply (or now, without a WAL sender).
    mutating func noteStandbyViews(_ report: NodeReport) {
        guard report.standbysKnown, report.postgresRunning, let primary = primaryNode, primary.id == report.node,
            Self.writableGoals.contains(primary.reached)
        else { return }
        let now = nowNanos
        for standby in sortedNodes where standby.id != primary.id {
            let view = report.standbys.first { $0.node == standby.id }
            let streams = view.map(streamsInView) ?? false
            // Silent since its last reply; without a WAL sender, since now.
            let since = view.map { $0.streaming && $0.replyAgeMillis != UInt32.max ? now - min(now, UInt64($0.replyAgeMillis) * 1_000_000) : now } ?? now
            nodes.update(standby.id) { node in
                node.unstreamedSinceNanos = streams ? nil : min(node.unstreamedSinceNanos ?? since, since)
            }
        }
    }

    /// Sets a node's goal, recording the change when it is one.
    mutating func assign(_ id: PGNodeID, _ goal: NodeState, _ reason: String, _ changes: inout [GoalChange]) {
        guard let current = nodes[id]?.goal, current != goal else { return }
        changes.append(GoalChange(node: id, from: current, to: goal, reason: reason))
        let index = appliedIndex
        // A narrowing primary being dropped may still list the standby that left: its
        // successor waits for it to stop (`promotionRules`).
        if id == narrowingPrimary && ![.applySettings, .dropped].contains(goal) { narrowingPrimary = nil }
        nodes.update(id) { node in
            node.goal = goal
            node.goalReason = reason
            node.goalIndex = index
        }
    }

    /// Replays a whole log from an empty state (or continues from `self`).
    public mutating func replay(_ entries: [LogEntry]) {
        for entry in entries { apply(entry) }
    }
}
