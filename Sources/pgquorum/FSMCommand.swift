import ArgumentParser
import Manager

/// `pgquorum fsm`: prints the node manager's transition table (DESIGN §6).
struct FSMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fsm",
        abstract: "Print the node manager's state transition table.",
        discussion: """
            Each row says how a node manager moves PostgreSQL from its current state to the goal \
            state the formation assigned: the action it runs and why. State names follow \
            pg_auto_failover. The mermaid format pastes into any Mermaid renderer.
            """
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table
        case mermaid
    }

    @Option(help: "Output format: \(Format.allCases.map(\.rawValue).joined(separator: " or ")).")
    var format: Format = .table

    func run() {
        switch format {
        case .mermaid:
            print(KeeperTransitions.mermaid())
        case .table:
            let rows = KeeperTransitions.table
            let currentWidth = max("CURRENT".count, rows.map(\.current.rawValue.count).max() ?? 0)
            let goalWidth = max("GOAL".count, rows.map(\.goal.rawValue.count).max() ?? 0)
            let actionWidth = max("ACTION".count, rows.map(\.action.rawValue.count).max() ?? 0)
            func pad(_ text: String, _ width: Int) -> String { text + String(repeating: " ", count: width - text.count) }
            print("\(pad("CURRENT", currentWidth))  \(pad("GOAL", goalWidth))  \(pad("ACTION", actionWidth))  REASON")
            for row in rows {
                print("\(pad(row.current.rawValue, currentWidth))  \(pad(row.goal.rawValue, goalWidth))  \(pad(row.action.rawValue, actionWidth))  \(row.reason)")
            }
        }
    }
}
