import EventLog
import Testing

@testable import Manager

/// Node settings and PostgreSQL parameters through the log (issue 18, items 1 and 2): the
/// reducer's side. The stories are in testdata/node_settings.txt.
@Suite("node settings and parameters in the reducer")
struct NodeSettingsTests {
    var index: UInt64 = 0

    mutating func apply(_ state: inout ClusterState, _ event: ClusterEvent) -> [GoalChange] {
        index += 1
        return state.apply(LogEntry(index: index, term: 1, record: EventRecord(stamp: LogStamp(leaderClockNanos: index * 1_000_000, wallTimeMillis: 0), event: event)))
    }

    mutating func threeNodes() -> ClusterState {
        var state = ClusterState()
        for id: PGNodeID in 1...3 {
            _ = apply(&state, .nodeRegistered(NodeRegistration(node: id, name: "n\(id)", host: "10.0.0.\(id)", port: 5432, systemIdentifier: 42)))
        }
        return state
    }

    @Test("parameters: set for the formation and for one node, the node's on top; reset removes; names are case-insensitive")
    mutating func parameters() throws {
        var state = threeNodes()
        _ = apply(&state, .operatorRequest(.setParameter(name: "Work_Mem", value: "64MB", node: nil)))
        _ = apply(&state, .operatorRequest(.setParameter(name: "work_mem", value: "128MB", node: 2)))
        _ = apply(&state, .operatorRequest(.setParameter(name: "log_min_duration_statement", value: "250ms", node: nil)))
        #expect(state.parameters(for: 1) == ["work_mem": "64MB", "log_min_duration_statement": "250ms"])
        #expect(state.parameters(for: 2) == ["work_mem": "128MB", "log_min_duration_statement": "250ms"])
        _ = apply(&state, .operatorRequest(.setParameter(name: "work_mem", value: nil, node: 2)))
        _ = apply(&state, .operatorRequest(.setParameter(name: "log_min_duration_statement", value: nil, node: nil)))
        #expect(state.parameters(for: 2) == ["work_mem": "64MB"])
        #expect(state.waitingReason == nil)

        // Snapshots carry both scopes.
        _ = apply(&state, .operatorRequest(.setParameter(name: "work_mem", value: "32MB", node: 3)))
        let restored = try ClusterState(snapshot: state.snapshotData())
        #expect(restored == state)
        #expect(restored.parameters(for: 3) == ["work_mem": "32MB"])
    }

    @Test("a parameter pgquorum owns, an unsafe synchronous_commit or an unknown node changes nothing and says why")
    mutating func refusedParameters() {
        var state = threeNodes()
        let before = state.parameters
        _ = apply(&state, .operatorRequest(.setParameter(name: "Synchronous_Standby_Names", value: "*", node: nil)))
        #expect(state.waitingReason?.contains("synchronous_standby_names is set by pgquorum") == true)
        _ = apply(&state, .operatorRequest(.setParameter(name: "synchronous_commit", value: "local", node: nil)))
        #expect(state.waitingReason?.contains("acknowledges commits no synchronous standby flushed") == true)
        _ = apply(&state, .operatorRequest(.setParameter(name: "work_mem", value: "1MB", node: 9)))
        #expect(state.waitingReason == "parameter change ignored: node 9 is not registered")
        #expect(state.parameters == before && state.sortedNodes.allSatisfy { $0.parameters.isEmpty })
        _ = apply(&state, .operatorRequest(.setParameter(name: "synchronous_commit", value: "remote_apply", node: nil)))
        #expect(state.parameters == ["synchronous_commit": "remote_apply"])
    }

    @Test("candidate priority: the last standby candidate cannot go to 0; the primary's own can; unknown nodes are named")
    mutating func candidatePriority() {
        var state = threeNodes()
        // Without a primary, every node is a standby candidate.
        #expect(state.candidatePriorityRefusal(1, 0) == nil)
        _ = apply(&state, .operatorRequest(.setCandidatePriority(node: 1, priority: 0)))
        _ = apply(&state, .operatorRequest(.setCandidatePriority(node: 2, priority: 0)))
        #expect(state.candidatePriorityRefusal(3, 0)?.hasPrefix("no standby would be left to fail over to") == true)
        _ = apply(&state, .operatorRequest(.setCandidatePriority(node: 3, priority: 0)))
        #expect(state[3]?.registration.candidatePriority == 50)
        #expect(state.waitingReason?.hasPrefix("candidate priority of node 3 refused: no standby") == true)
        #expect(state.candidatePriorityRefusal(3, 101) == "101 is above 100")
        #expect(state.candidatePriorityRefusal(4, 10) == "node 4 is not registered")
        _ = apply(&state, .operatorRequest(.setCandidatePriority(node: 2, priority: 100)))
        #expect(state[2]?.registration.candidatePriority == 100)
        #expect(state.waitingReason == nil)
    }

    @Test("replication quorum: leaving is refused when fewer quorum standbys than k would be left")
    mutating func replicationQuorum() {
        var state = threeNodes()
        // k = 1 and no primary yet: of three quorum nodes, two may leave.
        _ = apply(&state, .operatorRequest(.setReplicationQuorum(node: 1, enabled: false)))
        _ = apply(&state, .operatorRequest(.setReplicationQuorum(node: 2, enabled: false)))
        #expect(state.replicationQuorumRefusal(3, false) == "0 quorum standbys would be left for number_sync_standbys 1; lower number_sync_standbys first")
        #expect(state.replicationQuorumRefusal(3, true) == nil)
        #expect(state.replicationQuorumRefusal(2, true) == nil)
        _ = apply(&state, .operatorRequest(.setReplicationQuorum(node: 3, enabled: false)))
        #expect(state[3]?.registration.replicationQuorum == true)
        var settings = state.settings
        settings.numberSyncStandbys = 0
        _ = apply(&state, .settingsChanged(settings))
        _ = apply(&state, .operatorRequest(.setReplicationQuorum(node: 3, enabled: false)))
        #expect(state[3]?.registration.replicationQuorum == false)
    }
}
