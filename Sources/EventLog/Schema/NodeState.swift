/// The states a PostgreSQL node moves through, named as pg_auto_failover names them so that
/// its users feel at home (DESIGN §6). A node *reaches* a state; the policy assigns a *goal*.
public enum NodeState: String, Sendable, CaseIterable, Codable {
    case initial = "init"
    case single
    case waitPrimary = "wait_primary"
    case primary
    case applySettings = "apply_settings"
    case draining
    case demoteTimeout = "demote_timeout"
    case demoted
    case catchingUp = "catchingup"
    case secondary
    case preparePromotion = "prepare_promotion"
    case stopReplication = "stop_replication"
    case waitStandby = "wait_standby"
    case reportLSN = "report_lsn"
    case fastForward = "fast_forward"
    case joinSecondary = "join_secondary"
    case maintenance
    case prepareMaintenance = "prepare_maintenance"
    case waitMaintenance = "wait_maintenance"
    case dropped

    /// What a node in this state is doing, in one line for `pgquorum status`.
    public var summary: String {
        switch self {
        case .initial: return "registered, not yet set up"
        case .single: return "primary without standbys; writes do not wait for replication"
        case .waitPrimary: return "primary waiting for a standby to catch up; synchronous replication off"
        case .primary: return "primary with synchronous standbys"
        case .applySettings: return "primary applying new replication settings"
        case .draining: return "old primary refusing new writes before demotion"
        case .demoteTimeout: return "old primary being stopped after a demotion timeout"
        case .demoted: return "old primary stopped, waiting to rejoin as a standby"
        case .catchingUp: return "standby replaying WAL, not yet a failover candidate"
        case .secondary: return "standby in sync, a failover candidate"
        case .preparePromotion: return "standby chosen for promotion, waiting for the old primary to be fenced"
        case .stopReplication: return "standby cutting replication before promotion"
        case .waitStandby: return "new primary waiting for standbys before synchronous replication"
        case .reportLSN: return "standby stopped following its primary and reporting its LSN for an election"
        case .fastForward: return "election winner fetching missing WAL from a more advanced standby"
        case .joinSecondary: return "standby switching to follow the new primary"
        case .maintenance: return "node in maintenance; not managed, not a candidate"
        case .prepareMaintenance: return "primary handing over before maintenance"
        case .waitMaintenance: return "standby waiting to enter maintenance"
        case .dropped: return "node removed from the formation"
        }
    }

    /// States in which postgres accepts writes.
    public var isWritable: Bool {
        switch self {
        case .single, .waitPrimary, .primary, .applySettings: return true
        default: return false
        }
    }
}
