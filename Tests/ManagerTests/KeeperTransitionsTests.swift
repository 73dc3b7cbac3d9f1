import EventLog
import Testing

@testable import Manager

@Suite("the node manager's transition table")
struct KeeperTransitionsTests {
    @Test("every (current, goal) pair appears once")
    func pairsUnique() {
        var seen: Set<String> = []
        for row in KeeperTransitions.table {
            let pair = "\(row.current.rawValue) -> \(row.goal.rawValue)"
            #expect(seen.insert(pair).inserted, "duplicate pair \(pair)")
        }
        #expect(seen.count == KeeperTransitions.table.count)
    }

    @Test("every state is reachable from init, and every state but none can be left")
    func reachability() {
        var reached: Set<NodeState> = [.initial]
        var frontier: [NodeState] = [.initial]
        while let state = frontier.popLast() {
            for row in KeeperTransitions.table where row.current == state && !reached.contains(row.goal) {
                reached.insert(row.goal)
                frontier.append(row.goal)
            }
        }
        #expect(reached == Set(NodeState.allCases))
        for state in NodeState.allCases {
            #expect(KeeperTransitions.table.contains { $0.current == state }, "no way out of \(state.rawValue)")
        }
    }

    @Test("every action is used and every row says why")
    func actionsAndReasons() {
        #expect(Set(KeeperTransitions.table.map(\.action)) == Set(KeeperAction.allCases))
        #expect(KeeperTransitions.table.allSatisfy { !$0.reason.isEmpty && !$0.reason.contains("\n") })
    }

    @Test("a lookup finds the row; an unknown pair is an error naming both states")
    func lookup() throws {
        let row = try KeeperTransitions.transition(from: .demoted, to: .catchingUp)
        #expect(row.action == .rewindOrReinitialize)
        #expect(throws: KeeperTransitionError(current: .single, goal: .secondary)) {
            try KeeperTransitions.transition(from: .single, to: .secondary)
        }
        #expect(KeeperTransitionError(current: .single, goal: .secondary).description
            == "the node manager does not know how to go from single to secondary")
    }

    @Test("the failover path of a standby and the fencing of the old primary are in the table")
    func failoverPath() throws {
        let promotion: [(NodeState, NodeState)] = [
            (.secondary, .reportLSN), (.reportLSN, .preparePromotion), (.preparePromotion, .stopReplication),
            (.stopReplication, .waitPrimary), (.waitPrimary, .primary),
        ]
        for (current, goal) in promotion { _ = try KeeperTransitions.transition(from: current, to: goal) }
        let fencing: [(NodeState, NodeState)] = [(.primary, .draining), (.draining, .demoted), (.demoted, .catchingUp), (.catchingUp, .secondary)]
        for (current, goal) in fencing { _ = try KeeperTransitions.transition(from: current, to: goal) }
    }

    @Test("the table prints as a Mermaid state diagram, one line per row")
    func mermaid() {
        let lines = KeeperTransitions.mermaid().split(separator: "\n")
        #expect(lines.first == "stateDiagram-v2")
        #expect(lines.count == KeeperTransitions.table.count + 1)
        #expect(lines.contains("    demoted --> catchingup: rewindOrReinitialize"))
    }
}
