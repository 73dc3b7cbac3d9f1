import EventLog

/// The policy: pg_auto_failover's monitor rules (src/monitor/group_state_machine.c), adapted
/// to log time and quorum reports. Each rule looks at the whole state, in node-id order, and
/// assigns goals with a one-line reason; the rules run until none changes anything.
/// What the policy reads of one node. Raw LSNs change with every heartbeat but matter only
/// through `caughtUp` (for catching-up nodes) and the election LSN.
struct PolicyInput: Equatable, Sendable {
    var id: PGNodeID
    var reached: NodeState
    var goal: NodeState
    var healthy: Bool
    var leaseExpired: Bool
    var postgresRunning: Bool
    var timeline: UInt32
    var electionLSN: LSN?
    var caughtUp: Bool
    var priorityBoost: Int
    var priority: UInt8
    var replicationQuorum: Bool
    var streamsToPrimary: Bool
    var seenStreaming: Bool
    var repliesMayHold = false
}

extension ClusterState {
    /// Everything the rules read, node by node, plus the election's k and whether standbys'
    /// replies may still hold an old primary (as a last pseudo-node).
    func policyInputs() -> [PolicyInput] {
        let primary = primaryNode
        var inputs = sortedNodes.map { node in
            PolicyInput(
                id: node.id, reached: node.reached, goal: node.goal, healthy: isHealthy(node), leaseExpired: leaseExpired(node),
                postgresRunning: node.lastReport?.postgresRunning ?? false, timeline: node.timeline, electionLSN: node.electionLSN,
                caughtUp: primary.map { node.goal == .catchingUp && caughtUp(node, with: $0) } ?? false,
                priorityBoost: node.priorityBoost, priority: node.registration.candidatePriority,
                replicationQuorum: node.registration.replicationQuorum, streamsToPrimary: streamsToPrimary(node),
                seenStreaming: seenStreamingByPrimary(node))
        }
        inputs.append(
            PolicyInput(
                id: 0, reached: .initial, goal: .initial, healthy: false, leaseExpired: false, postgresRunning: false, timeline: 0,
                electionLSN: nil, caughtUp: false, priorityBoost: Int(electionSyncStandbys), priority: settings.numberSyncStandbys,
                replicationQuorum: settings.strictSyncMode, streamsToPrimary: true, seenStreaming: true,
                repliesMayHold: standbyRepliesMayHoldOldPrimary))
        return inputs
    }

    /// Rules run at most this many rounds per entry; each round changes at least one goal.
    static let policyRoundsMax = 32
    /// How `waitingReason` begins when the rules did not settle within `policyRoundsMax`.
    static let policyUnsettled = "the policy did not settle"

    static let writableGoals: Set<NodeState> = [.single, .waitPrimary, .primary, .applySettings]
    static let primaryOwnedGoals: Set<NodeState> = [.draining, .demoteTimeout, .prepareMaintenance]
    /// pg_auto_failover's promote_wal_log_threshold and enable_sync_wal_log_threshold: 16 MB.
    static let catchUpDistanceBytes: UInt64 = 16 << 20

    mutating func runPolicy(changes: inout [GoalChange]) {
        for _ in 0..<Self.policyRoundsMax {
            let before = changes.count
            removeDroppedNodes()
            bootstrapRules(&changes)
            primaryRules(&changes)
            standbyRules(&changes)
            failoverTrigger(&changes)
            electionRules(&changes)
            promotionRules(&changes)
            rejoinRules(&changes)
            if changes.count == before { return }
        }
        // Rules that keep undoing each other are a bug. Every witness applies this same entry,
        // and a crash here would crash them all, again at every restart: the policy stops
        // instead (deterministically, so every reader agrees) and the status says so.
        waitingReason = "\(Self.policyUnsettled) in \(Self.policyRoundsMax) rounds at index \(appliedIndex) (a bug; please report it): "
            + changes.suffix(4).map(\.description).joined(separator: "; ")
    }

    /// The node that is, or just was, the primary: a writable goal first, else a primary-owned one.
    public var primaryNode: NodeRecord? {
        sortedNodes.first { Self.writableGoals.contains($0.goal) }
            ?? sortedNodes.first { Self.primaryOwnedGoals.contains($0.goal) }
    }

    /// The standbys that count in `synchronous_standby_names` and in an election's quorum.
    /// A node counts once it has streamed from a primary (it reached a standby state), until
    /// it leaves for maintenance or is dropped.
    public func quorumStandbys(excluding primary: PGNodeID?) -> [NodeRecord] {
        sortedNodes.filter {
            $0.id != primary && $0.registration.replicationQuorum
                && ![.maintenance, .dropped, .initial, .waitStandby, .prepareMaintenance, .demoted].contains($0.goal)
                && !Self.writableGoals.contains($0.goal) && !Self.primaryOwnedGoals.contains($0.goal)
                && !Self.unclonedStates.contains($0.reached)
        }
    }

    /// States of a node that has never streamed from the current history.
    static let unclonedStates: Set<NodeState> = [.initial, .waitStandby, .dropped]

    /// Healthy standbys in sync with the primary that count in the quorum: reporting to the
    /// witnesses, and streaming to the primary as its own reports see it (a link cut between
    /// the two alone shows only there).
    /// The quorum secondaries the primary can count on: healthy, and streaming to it. With
    /// `provenStreaming`, only those its latest report shows streaming (to go back to
    /// synchronous replication); without, also those not yet shown cut off for the unhealthy
    /// timeout (to decide whether to stop waiting for them).
    func healthyQuorumSecondaries(of primary: NodeRecord, provenStreaming: Bool = false) -> [NodeRecord] {
        quorumStandbys(excluding: primary.id).filter {
            $0.goal == .secondary && $0.reached == .secondary && isHealthy($0)
                && (provenStreaming ? seenStreamingByPrimary($0) : streamsToPrimary($0))
        }
    }

    private mutating func removeDroppedNodes() {
        for node in sortedNodes where node.goal == .dropped && node.reached == .dropped {
            remove(node.id)
        }
    }

    // MARK: - Bootstrap

    private mutating func bootstrapRules(_ changes: inout [GoalChange]) {
        for node in sortedNodes where node.goal == .initial {
            if primaryNode == nil && !electionInProgress {
                // Only the very first node starts a new cluster: where others hold data, a fresh
                // primary would throw their history away.
                let othersHoldData = sortedNodes.contains { $0.id != node.id && !Self.unclonedStates.contains($0.reached) }
                if othersHoldData {
                    waitingReason = "node \(node.id) waits: there is no primary to clone and other nodes hold data"
                } else if node.registration.candidatePriority > 0 {
                    assign(node.id, .single, "first node of the formation: it becomes the primary", &changes)
                }
            } else {
                assign(node.id, .waitStandby, "a primary exists: wait until it can be cloned", &changes)
            }
        }
        guard let primary = primaryNode, primary.goal == .single, primary.isConverged else { return }
        if sortedNodes.contains(where: { $0.goal == .waitStandby && $0.isConverged }) {
            assign(primary.id, .waitPrimary, "a standby registered: prepare replication", &changes)
        }
    }

    // MARK: - Primary

    private mutating func primaryRules(_ changes: inout [GoalChange]) {
        guard let primary = primaryNode, Self.writableGoals.contains(primary.goal), primary.goal != .single else { return }
        let others = sortedNodes.filter { $0.id != primary.id && $0.goal != .dropped }
        if others.isEmpty && primary.isConverged {
            assign(primary.id, .single, "every standby was dropped", &changes)
            return
        }
        let k = Int(settings.numberSyncStandbys)
        let inSync = healthyQuorumSecondaries(of: primary).count
        let streaming = healthyQuorumSecondaries(of: primary, provenStreaming: true).count
        let enough = streaming >= max(k, 1)
        // A standby waiting for maintenance goes first: it goes once the primary sits in
        // wait_primary, and back in primary, the primary would list it again and it would wait
        // for ever (also when the primary comes from apply_settings: story
        // maintenance_waits_for_the_standby).
        let maintenanceWaits = sortedNodes.contains { $0.goal == .waitMaintenance }
        switch (primary.goal, primary.isConverged) {
        case (.waitPrimary, true) where enough && !maintenanceWaits:
            assign(primary.id, .primary, "\(streaming) quorum standby(s) caught up: synchronous replication on", &changes)
        case (.applySettings, true):
            assign(primary.id, enough && !maintenanceWaits ? .primary : .waitPrimary, "new replication settings applied", &changes)
        case (.primary, _) where inSync < k:
            if settings.strictSyncMode {
                waitingReason = "strict sync mode: writes wait until \(k) quorum standby(s) are back (\(inSync) in sync)"
            } else {
                assign(primary.id, .waitPrimary, "only \(inSync) of \(k) quorum standby(s) in sync: synchronous replication off", &changes)
            }
        default:
            break
        }
    }

    // MARK: - Standbys

    private mutating func standbyRules(_ changes: inout [GoalChange]) {
        guard let primary = primaryNode, Self.writableGoals.contains(primary.goal) else { return }
        let primaryReady = primary.isConverged && [.waitPrimary, .primary, .applySettings].contains(primary.goal)
        for node in sortedNodes where node.id != primary.id {
            switch (node.goal, node.isConverged) {
            case (.waitStandby, true) where primaryReady:
                // join_primary: clone only a primary whose pg_hba.conf admits this node, that
                // is one that reached a goal assigned since the node registered; else give the
                // primary such a goal (apply_settings: it rewrites pg_hba.conf and reloads).
                if primary.goalIndex >= node.registeredIndex {
                    assign(node.id, .catchingUp, "the primary is ready and admits it: clone it and catch up", &changes)
                } else if [.waitPrimary, .primary].contains(primary.goal) {
                    assign(primary.id, .applySettings, "node \(node.id) registered: admit it in pg_hba.conf before it clones", &changes)
                }
            case (.catchingUp, true) where primaryReady && isHealthy(node) && caughtUp(node, with: primary):
                assign(node.id, .secondary, "caught up with the primary on its timeline: a failover candidate", &changes)
            case (.secondary, _) where !isHealthy(node):
                assign(node.id, .catchingUp, "unhealthy: not a failover candidate until it catches up", &changes)
            case (.waitMaintenance, true) where primary.goal == .waitPrimary && primary.reached == .waitPrimary:
                // Only once the primary reached wait_primary (synchronous replication off): a
                // primary only asked to, cut off before it acted, still lists this node, and
                // the node's replies would acknowledge writes nobody else holds (the simulation
                // found them lost when that primary was dropped).
                assign(node.id, .maintenance, "the primary no longer waits for this node", &changes)
            default:
                break
            }
        }
    }

    /// Same timeline as the primary, and within 16 MB of its LSN.
    func caughtUp(_ node: NodeRecord, with primary: NodeRecord) -> Bool {
        guard let report = node.lastReport, let primaryReport = primary.lastReport, report.postgresRunning else { return false }
        guard report.timeline == primaryReport.timeline, node.lsn > 0 else { return false }
        return primary.lsn <= node.lsn || primary.lsn - node.lsn <= Self.catchUpDistanceBytes
    }

    // MARK: - Rejoining after a failover

    private mutating func rejoinRules(_ changes: inout [GoalChange]) {
        guard let primary = primaryNode, [.waitPrimary, .primary].contains(primary.goal),
            [.waitPrimary, .primary].contains(primary.reached), isHealthy(primary)
        else { return }
        for node in sortedNodes where node.id != primary.id && node.isConverged {
            switch node.goal {
            case .demoted:
                assign(node.id, .catchingUp, "a new primary runs: rewind and follow it", &changes)
            case .joinSecondary:
                assign(node.id, .secondary, "follow the new primary", &changes)
            case .reportLSN where promotedNode == nil:
                assign(node.id, .secondary, "the primary is healthy: follow it again", &changes)
            default:
                break
            }
        }
    }
}
