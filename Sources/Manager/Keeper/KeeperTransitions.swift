import EventLog

/// What the node manager does to PostgreSQL to move from one state to the next. Each action
/// is small, idempotent and retried until it succeeds (DESIGN §6); the node manager issue
/// implements them against NodeControl.
public enum KeeperAction: String, Sendable, CaseIterable {
    /// Nothing to do on this host: the step is a synchronisation point for the others.
    case none
    /// initdb (or adopt a stopped data directory), start postgres writable, no sync replication.
    case initPrimary
    /// pg_basebackup from the primary through our replication slot, then start as a standby.
    case initStandby
    /// pg_basebackup from the most advanced standby when no primary is left.
    case initFromStandby
    /// Check we follow the primary on its timeline; create and advance slots for the peers.
    case prepareForSecondary
    /// Point `primary_conninfo` at the current primary and restart replication.
    case followNewPrimary
    /// `synchronous_standby_names = ''` and reload.
    case disableSyncReplication
    /// Apply the derived `synchronous_standby_names`; done once a quorum standby caught up.
    case enableSyncReplication
    /// Keep postgres running, sync replication off, slots matching the peers.
    case disableReplication
    /// Stop postgres (fast shutdown): fencing an old primary.
    case stopPostgres
    /// Start postgres again and re-apply the replication settings (a false alarm).
    case startPostgres
    /// Start postgres as primary again, sync replication off (the others are gone).
    case resumeAsPrimary
    /// pg_rewind against the new primary, or a fresh basebackup if rewind cannot work.
    case rewindOrReinitialize
    /// Stop following the primary (restart without `primary_conninfo`) and report the LSN.
    case reportLSN
    /// The same, and drop local replication slots (an old primary joining an election).
    case reportLSNAndDropSlots
    /// Follow the most advanced standby until our LSN reaches its LSN.
    case fastForward
    /// Remove the standby settings before promotion.
    case cleanupAsPrimary
    /// `default_transaction_read_only = on`, then promote: writable only once fenced.
    case stopReplicationAndPromote
    /// `default_transaction_read_only = off`: the new primary takes writes.
    case openForWrites
    /// Promote (no-op if already promoted), remove standby settings, disable replication.
    case promoteStandby
    /// Two CHECKPOINTs, reset `primary_conninfo`, stop (an election loser before it follows).
    case checkpointAndStop
    /// CHECKPOINT and stop before the primary's maintenance.
    case stopForPrimaryMaintenance
    /// Stop and write a standby configuration without upstream.
    case stopAndSetUpStandby
    /// Stop supervising postgres: the operator owns it.
    case startMaintenance
    /// Leaving maintenance: rewind or re-clone, since anything may have happened meanwhile.
    case restartStandby
    /// Stop postgres and leave the formation.
    case dropNode
}

/// One row of the transition table: to go from `current` to `goal`, do `action`.
public struct KeeperTransition: Sendable, Equatable {
    public var current: NodeState
    public var goal: NodeState
    public var action: KeeperAction
    /// One line saying why, for `pgquorum log` and the printed table.
    public var reason: String
}

/// A (current, goal) pair the table does not know.
public struct KeeperTransitionError: Error, Equatable, CustomStringConvertible {
    public var current: NodeState
    public var goal: NodeState
    public var description: String {
        "the node manager does not know how to go from \(current.rawValue) to \(goal.rawValue)"
    }
}
