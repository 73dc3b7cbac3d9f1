import Testing

@testable import EventLog

@Suite("node states")
struct NodeStateTests {
    @Test("state names are pg_auto_failover's, as DESIGN §6 lists them")
    func namesMatchPgAutoFailover() {
        let names = NodeState.allCases.map(\.rawValue)
        #expect(names == [
            "init", "single", "wait_primary", "primary", "apply_settings", "draining", "demote_timeout",
            "demoted", "catchingup", "secondary", "prepare_promotion", "stop_replication", "wait_standby",
            "report_lsn", "fast_forward", "join_secondary", "maintenance", "prepare_maintenance",
            "wait_maintenance", "dropped",
        ])
        #expect(NodeState(rawValue: "wait_primary") == .waitPrimary)
    }

    @Test("only primary states are writable")
    func writableStates() {
        #expect(NodeState.allCases.filter(\.isWritable) == [.single, .waitPrimary, .primary, .applySettings])
    }
}
