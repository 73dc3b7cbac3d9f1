import ArgumentParser
import EventLog
import Foundation
import Manager

/// `pgquorum log`: the event history with the decisions each event caused.
struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Show the event history: time, index, node, event, and the decisions it caused.",
        discussion: """
            Heartbeat reports and idle ticks are hidden unless --all is given, or unless they \
            caused a decision (a failover is decided on the report or tick that shows a node \
            unhealthy). Kinds: \(LogCommand.kinds.joined(separator: ", ")).
            """
    )

    static let kinds = [
        "node-registered", "node-reports", "state-reached", "operator-request", "settings-changed", "tick", "term-started",
        "membership-changed",
    ]

    @OptionGroup var options: FormationOptions
    @OptionGroup var read: StaleReadOption

    @Option(help: ArgumentHelp("Only events of this node (id or name) or decisions about it.", valueName: "node"))
    var node: String?

    @Option(help: ArgumentHelp("Only events of these kinds (comma-separated).", valueName: "kinds"))
    var kind: String?

    @Option(help: ArgumentHelp("Only events after this time: a duration ago (10m, 2h) or an ISO 8601 time.", valueName: "time"))
    var since: String?

    @Option(help: ArgumentHelp("Only events before this time: a duration ago or an ISO 8601 time.", valueName: "time"))
    var until: String?

    @Option(help: "Only events from this log index on.")
    var fromIndex: UInt64 = 1

    @Option(name: .short, help: "Only the last N events shown.")
    var n: Int?

    @Flag(help: "Keep printing events as they commit (Ctrl-C to stop).")
    var follow = false

    @Flag(help: "Include heartbeat reports and idle ticks.")
    var all = false

    @Flag(help: "Print one JSON object per event, one per line.")
    var json = false

    func validate() throws {
        if let kind {
            for name in kind.split(separator: ",") where !Self.kinds.contains(String(name)) {
                throw ValidationError("unknown kind \(name); kinds are \(Self.kinds.joined(separator: ", "))")
            }
        }
        if let n, n < 0 { throw ValidationError("-n must not be negative") }
        if follow && read.stale { throw ValidationError("--follow follows the quorum's log; it cannot be combined with --stale") }
    }

    func run() async throws {
        let client = try options.connection.makeClient()
        defer { client.close() }
        let sinceMillis = try since.map { try parseTimeBound($0) }
        let untilMillis = try until.map { try parseTimeBound($0) }
        let kinds = kind.map { Set($0.split(separator: ",").map(String.init)) }
        var state = ClusterState(formation: options.formation)
        var nodeFilter: PGNodeID?
        var lines: [String] = []
        var compactedBefore: UInt64?
        let keep: (ClusterLog.Step) -> Bool = { step in
            let entry = step.entry
            guard entry.index >= fromIndex, entry.record.formation == options.formation || entry.record.event.isGlobal else { return false }
            let event = entry.record.event
            if let kinds, !kinds.contains(event.kindName) { return false }
            if !all, [.tick].contains(event) || event.isReports, step.changes.isEmpty, step.waitingReason == nil { return false }
            if let sinceMillis, entry.record.stamp.wallTimeMillis < sinceMillis { return false }
            if let untilMillis, entry.record.stamp.wallTimeMillis > untilMillis { return false }
            if let nodeFilter {
                return event.nodes.contains(nodeFilter) || step.changes.contains { $0.node == nodeFilter }
            }
            return true
        }
        var next = try await ClusterLog.replay(from: client, into: &state, stale: read.stale, onSnapshot: { compactedBefore = $0.index + 1 }) { step in
            if keep(step) { lines.append(render(step)) }
        }
        if let node {
            // Names are known once the registrations are replayed: filter again with the id.
            let id = try resolveNode(node, in: state).id
            nodeFilter = id
            lines = []
            state = ClusterState(formation: options.formation)
            next = try await ClusterLog.replay(from: client, into: &state, stale: read.stale, onSnapshot: { compactedBefore = $0.index + 1 }) { step in
                if keep(step) { lines.append(render(step)) }
            }
        }
        if let compactedBefore, compactedBefore > fromIndex, !json {
            print("(entries before index \(compactedBefore) were compacted into a snapshot)")
        }
        for line in n.map({ Array(lines.suffix($0)) }) ?? lines { print(line) }
        guard follow else { return }
        fflush(nil)
        for try await item in client.stream(from: next, formation: options.formation) {
            switch item {
            case .snapshot(let snapshot): state = try ClusterLog.restore(snapshot, formation: options.formation)
            case .skipped(let through): ClusterLog.skip(through: through, in: &state)
            case .entries(let entries):
                for entry in entries {
                    ClusterLog.apply(entry, to: &state) { step in
                        if keep(step) { print(render(step)) }
                    }
                }
            }
            fflush(nil)
        }
    }

    private func render(_ step: ClusterLog.Step) -> String {
        let entry = step.entry
        let time = formatTime(entry.record.stamp.wallTimeMillis)
        let nodes = entry.record.event.nodes
        if json {
            return JSONDocument.line(
                LogEntryDocument(
                    index: entry.index, term: entry.term, time: time, formation: entry.record.formation, kind: entry.record.event.kindName,
                    node: nodes.count == 1 ? nodes[0] : nil, event: describe(entry.record.event),
                    decisions: step.changes.map { .init(node: $0.node, from: $0.from.rawValue, to: $0.to.rawValue, reason: $0.reason) },
                    waiting: step.waitingReason, retryOf: step.retryOf, by: entry.record.author))
        }
        var text = "\(time)  \(pad("\(entry.index)", 6))  \(pad(nodes.count == 1 ? "node \(nodes[0])" : "", 8))  \(describe(entry.record.event))"
        if let author = entry.record.author { text += "  (by \(author))" }
        if let retryOf = step.retryOf { text += "  (a retry of index \(retryOf); not applied again)" }
        for change in step.changes {
            text += "\n    -> node \(change.node): goal \(change.from.rawValue) -> \(change.to.rawValue): \(change.reason)"
        }
        if let waiting = step.waitingReason { text += "\n    waiting: \(waiting)" }
        return text
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}

func formatTime(_ millis: Int64) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: Date(timeIntervalSince1970: Double(millis) / 1000))
}

/// One line for an event.
func describe(_ event: ClusterEvent) -> String {
    switch event {
    case .nodeRegistered(let registration):
        return "registered \(registration.name) at \(registration.host):\(registration.port), priority \(registration.candidatePriority), "
            + (registration.replicationQuorum ? "synchronous" : "asynchronous")
    case .nodeReports(let reports):
        return "reports: " + reports.map { report in
            "node \(report.node) \(report.reachedState.rawValue) postgres \(report.postgresRunning ? "up" : "down") "
                + "tli \(report.timeline) lsn \(ClusterView.lsn(max(report.flushLSN, report.replayLSN)))"
        }.joined(separator: "; ")
    case .stateReached(let node, let state):
        return "node \(node) reached \(state.rawValue)"
    case .operatorRequest(.switchover(let target)):
        return "operator asked for a switchover" + (target.map { " to node \($0)" } ?? "")
    case .operatorRequest(.maintenance(let node, let enabled)):
        return "operator asked to \(enabled ? "start" : "end") maintenance of node \(node)"
    case .operatorRequest(.dropNode(let node)):
        return "operator asked to drop node \(node)"
    case .operatorRequest(.forceDrop(let node)):
        return "operator forced the drop of node \(node)"
    case .operatorRequest(.setCandidatePriority(let node, let priority)):
        return "operator set the candidate priority of node \(node) to \(priority)"
    case .operatorRequest(.setReplicationQuorum(let node, let enabled)):
        return "operator made node \(node) \(enabled ? "a quorum (synchronous)" : "an asynchronous") standby"
    case .operatorRequest(.setParameter(let name, let value, let node)):
        let scope = node.map { " on node \($0)" } ?? ""
        return value.map { "operator set parameter \(name) = '\($0)'\(scope)" } ?? "operator reset parameter \(name)\(scope)"
    case .operatorRequest(.restartPostgres(let node)):
        return "operator asked to restart postgres on node \(node)"
    case .settingsChanged(let settings):
        return "settings: " + ClusterView.settingsLines(settings).map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    case .tick:
        return "tick"
    case .termStarted(let carried):
        return "a new witness leader: log time carries on, at most \(carried / 1_000_000) ms since the last entry it holds"
    case .membershipChanged(let members):
        return "witnesses: " + members.map { "\($0.id)=\($0.address)" }.joined(separator: " ")
    }
}

extension ClusterEvent {
    /// The nodes the event is about.
    var nodes: [PGNodeID] {
        switch self {
        case .nodeRegistered(let registration): return [registration.node]
        case .nodeReports(let reports): return reports.map(\.node)
        case .stateReached(let node, _): return [node]
        case .operatorRequest(.switchover(let target)): return target.map { [$0] } ?? []
        case .operatorRequest(.maintenance(let node, _)), .operatorRequest(.dropNode(let node)), .operatorRequest(.forceDrop(let node)),
            .operatorRequest(.setCandidatePriority(let node, _)), .operatorRequest(.setReplicationQuorum(let node, _)),
            .operatorRequest(.restartPostgres(let node)):
            return [node]
        case .operatorRequest(.setParameter(_, _, let node)): return node.map { [$0] } ?? []
        case .settingsChanged, .tick, .termStarted, .membershipChanged: return []
        }
    }

    var isReports: Bool {
        if case .nodeReports = self { return true }
        return false
    }
}
