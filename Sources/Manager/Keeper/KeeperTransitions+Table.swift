import EventLog

/// The node manager's transition table: one flat list of (current, goal, action, reason),
/// after pg_auto_failover's `KeeperFSM[]` (src/bin/pg_autoctl/fsm.c) with its states.
public enum KeeperTransitions {
    public static let table: [KeeperTransition] = bootstrapRows + primaryRows + failoverRows + standbyRows + maintenanceRows + dropRows

    /// The row for (current, goal), or an error naming both states.
    public static func transition(from current: NodeState, to goal: NodeState) throws(KeeperTransitionError) -> KeeperTransition {
        guard let row = index[Pair(current: current, goal: goal)] else { throw KeeperTransitionError(current: current, goal: goal) }
        return row
    }

    private struct Pair: Hashable {
        var current: NodeState
        var goal: NodeState
    }

    private static let index: [Pair: KeeperTransition] = Dictionary(
        table.map { (Pair(current: $0.current, goal: $0.goal), $0) }, uniquingKeysWith: { first, _ in first })

    /// The table as a Mermaid state diagram, for `pgquorum` to print.
    public static func mermaid() -> String {
        var lines = ["stateDiagram-v2"]
        for row in table {
            lines.append("    \(row.current.rawValue) --> \(row.goal.rawValue): \(row.action.rawValue)")
        }
        return lines.joined(separator: "\n")
    }

    private static func rows(_ currents: [NodeState], _ goal: NodeState, _ action: KeeperAction, _ reason: String) -> [KeeperTransition] {
        currents.map { KeeperTransition(current: $0, goal: goal, action: action, reason: reason) }
    }

    static let bootstrapRows: [KeeperTransition] =
        rows([.initial, .dropped], .single, .initPrimary, "first node of the formation: create or adopt the primary")
        + rows([.initial, .dropped], .waitStandby, .none, "a primary exists: wait until it is ready to be cloned")
        + rows([.initial, .dropped], .reportLSN, .initFromStandby, "no primary is left: clone the most advanced standby")
        + rows([.waitStandby], .catchingUp, .initStandby, "the primary is ready: clone it through our replication slot")

    static let primaryRows: [KeeperTransition] =
        rows([.single], .waitPrimary, .none, "a standby registered: replication is prepared eagerly")
        + rows([.primary, .applySettings], .waitPrimary, .disableSyncReplication, "no quorum standby is left: stop waiting for one")
        + rows([.waitPrimary, .applySettings], .primary, .enableSyncReplication, "a quorum standby caught up: turn synchronous replication on")
        + rows([.primary, .waitPrimary], .applySettings, .none, "replication settings changed: re-apply them next")
        + rows([.primary, .waitPrimary, .applySettings], .single, .disableReplication, "every standby was dropped")
        + rows([.demoteTimeout], .primary, .startPostgres, "the old primary was reachable after all: resume")
        + rows([.demoteTimeout], .waitPrimary, .startPostgres, "fenced by its own lease, and still the primary: resume")
        + rows([.demoteTimeout], .applySettings, .startPostgres, "fenced by its own lease, and still the primary: resume with the new settings")
        + rows([.demoted, .demoteTimeout, .draining], .single, .resumeAsPrimary, "every other node was dropped: resume as primary")

    static let failoverRows: [KeeperTransition] =
        rows([.primary, .applySettings, .waitPrimary, .demoteTimeout], .draining, .stopPostgres, "a standby takes over: stop taking writes")
        + rows([.primary, .applySettings, .waitPrimary, .draining, .demoteTimeout], .demoted, .stopPostgres, "a standby took over: stay fenced")
        + rows([.primary, .applySettings, .waitPrimary, .draining], .demoteTimeout, .stopPostgres, "fence before the new primary opens for writes")
        + rows(
            [.initial, .single, .catchingUp, .secondary, .preparePromotion, .stopReplication, .maintenance,
             .prepareMaintenance, .waitMaintenance, .reportLSN, .fastForward, .joinSecondary],
            .demoted, .stopPostgres, "another node is taking over as primary")
        + rows([.demoted], .catchingUp, .rewindOrReinitialize, "follow the new primary: rewind, or clone it again")
        + rows([.draining, .demoted], .reportLSN, .reportLSNAndDropSlots, "the old primary joins the election")
        + rows([.secondary, .catchingUp, .maintenance, .prepareMaintenance], .reportLSN, .reportLSN, "election: stop following the primary and report the LSN")
        + rows(
            [.waitMaintenance, .fastForward, .preparePromotion, .stopReplication, .joinSecondary],
            .reportLSN, .reportLSN, "a new election started: report the LSN again")
        + rows([.secondary, .catchingUp, .reportLSN], .preparePromotion, .none, "chosen for promotion: wait until the old primary is fenced")
        + rows([.preparePromotion], .stopReplication, .stopReplicationAndPromote, "promote, still read-only until the old primary is fenced")
        + rows([.stopReplication], .waitPrimary, .openForWrites, "the old primary is fenced: take writes")
        + rows(
            [.secondary, .catchingUp, .preparePromotion, .stopReplication, .reportLSN, .waitMaintenance, .fastForward],
            .single, .promoteStandby, "the only node left: promote and run alone")
        + rows([.reportLSN], .fastForward, .fastForward, "elected but behind: fetch the missing WAL from the most advanced standby")
        + rows([.fastForward], .preparePromotion, .cleanupAsPrimary, "caught up with the most advanced standby")
        + rows([.reportLSN], .joinSecondary, .checkpointAndStop, "lost the election: stop before following the winner")
        + rows([.reportLSN, .joinSecondary], .secondary, .followNewPrimary, "follow the new primary")

    static let standbyRows: [KeeperTransition] =
        rows([.catchingUp], .secondary, .prepareForSecondary, "caught up on the primary's timeline: a failover candidate")
        + rows([.secondary], .catchingUp, .followNewPrimary, "lagging or unhealthy: not a candidate until it catches up")
        + rows([.joinSecondary, .reportLSN], .catchingUp, .followNewPrimary, "follow the new primary; not a candidate until it catches up")

    static let maintenanceRows: [KeeperTransition] =
        rows([.primary, .demoteTimeout], .prepareMaintenance, .stopForPrimaryMaintenance, "the primary enters maintenance: a standby takes over")
        + rows([.primary], .maintenance, .stopForPrimaryMaintenance, "the primary enters maintenance")
        + rows([.prepareMaintenance, .demoteTimeout], .maintenance, .stopAndSetUpStandby, "the old primary is out: leave it as a standby without upstream")
        + rows([.secondary, .catchingUp], .waitMaintenance, .none, "wait until the primary stops waiting for us")
        + rows([.secondary, .catchingUp, .waitMaintenance], .maintenance, .startMaintenance, "the operator owns this node now")
        + rows([.maintenance, .prepareMaintenance, .waitMaintenance], .catchingUp, .restartStandby, "maintenance is over: rejoin as a standby")

    static let dropRows: [KeeperTransition] =
        rows(NodeState.allCases.filter { $0 != .dropped }, .dropped, .dropNode, "the node is removed from the formation")
}
