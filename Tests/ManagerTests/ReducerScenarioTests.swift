import EventLog
import Foundation
import Testing
import TestSupport

@testable import Manager

/// pg_auto_failover's canonical stories, replayed through the reducer. Each block is a
/// command, `----`, and the goal changes it causes. `MANAGER_REWRITE=1 swift test --filter
/// ReducerScenarioTests` rewrites the expectations (then read the diff).
@Suite("reducer scenario files")
struct ReducerScenarioTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("testdata")

    static var files: [String] { ScenarioScript.files(in: folder) }

    @Test("story", arguments: files)
    func story(file: String) throws {
        var runner = StoryRunner()
        var replayMismatches: [Int] = []
        var line = 0
        let results = try ScenarioScript.run(path: Self.folder.appendingPathComponent(file).path, rewriteVariable: "MANAGER_REWRITE") { command in
            line += 1
            let output = runner.run(command)
            // Every reader replaying the same log must reach the same state, from the start or
            // from a snapshot (starting from the stories' settings, as the runner does).
            var replayed = ClusterState()
            replayed.settings = StoryRunner.storySettings
            replayed.replay(runner.log)
            let restored = try? ClusterState(snapshot: runner.state.snapshotData())
            if replayed != runner.state || restored != runner.state { replayMismatches.append(line) }
            return output
        }
        for (block, actual) in results {
            #expect(actual == block.expected, "\(file):\(block.line): \(block.command)")
        }
        #expect(replayMismatches.isEmpty, "\(file): replay or snapshot differs after commands \(replayMismatches)")
    }

    @Test("the stories are there")
    func filesExist() {
        #expect(Self.files.count >= 10)
    }
}

struct StoryError: Error, CustomStringConvertible {
    var description: String
}

extension StoryRunner {
    /// Runs one command and returns its trace: goal changes, then a changed waiting reason.
    mutating func run(_ command: String) -> String {
        let words = command.split(separator: " ").map(String.init)
        var lines: [String]
        do {
            lines = try execute(words)
        } catch {
            return "error: \(error)"
        }
        if state.waitingReason != lastWaiting {
            lastWaiting = state.waitingReason
            lines.append("waiting: \(state.waitingReason ?? "no longer")")
        }
        return lines.isEmpty ? "ok" : lines.joined(separator: "\n")
    }

    private mutating func execute(_ words: [String]) throws -> [String] {
        guard let verb = words.first else { return [] }
        var options: [String: String] = [:]
        var positional: [String] = []
        for word in words.dropFirst() {
            let parts = word.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { options[parts[0]] = parts[1] } else { positional.append(word) }
        }
        func node(_ position: Int = 0) throws -> PGNodeID {
            guard position < positional.count, let id = PGNodeID(positional[position]) else {
                throw StoryError(description: "\(verb) needs a node id")
            }
            return id
        }
        var changes: [GoalChange]
        switch verb {
        case "register":
            // `register auto host=H` registers without an id: the reducer assigns one.
            let id = positional.first == "auto" ? 0 : try node()
            let registration = NodeRegistration(
                node: id, name: options["name"] ?? "node\(id)", host: options["host"] ?? "10.0.0.\(id)", port: 5432, systemIdentifier: 42,
                candidatePriority: UInt8(options["priority"] ?? "50") ?? 50, replicationQuorum: options["quorum"] != "false")
            changes = append(.nodeRegistered(registration))
        case "converge": changes = converge()
        case "elapse":
            let text = positional.first ?? "0ms"
            let milliseconds = text.hasSuffix("ms") ? UInt64(text.dropLast(2)) ?? 0 : (UInt64(text.dropLast()) ?? 0) * 1000
            changes = elapse(milliseconds: milliseconds)
        case "lsn":
            lsnMB[try node()] = UInt64(positional.count > 1 ? positional[1] : "0") ?? 0
            changes = []
        case "down":
            down.insert(try node())
            changes = []
        case "up":
            down.remove(try node())
            changes = []
        case "unlink":
            unlinked.insert(try node())
            changes = []
        case "receiver-gone":
            // The standby's WAL receiver lost its connection now (its primary died).
            receiverGoneSince[try node()] = clockNanos
            changes = []
        case "relink":
            unlinked.remove(try node())
            changes = []
        case "postgres":
            postgresRunning[try node()] = positional.count > 1 && positional[1] == "up"
            changes = []
        case "new-term":
            // `new-term carried=MS`: the new leader's first entry carries log time over.
            let carried = options["carried"].map { text in (UInt64(text.hasSuffix("ms") ? text.dropLast(2) : Substring(text)) ?? 0) * 1_000_000 }
            changes = newTerm(carriedNanos: carried)
        case "switchover": changes = append(.operatorRequest(.switchover(target: positional.first.flatMap { PGNodeID($0) })))
        case "maintenance": changes = append(.operatorRequest(.maintenance(node: try node(), enabled: positional.count > 1 && positional[1] == "on")))
        case "drop": changes = append(.operatorRequest(.dropNode(node: try node())))
        case "drop-force": changes = append(.operatorRequest(.forceDrop(node: try node())))
        case "set-priority":
            changes = append(.operatorRequest(.setCandidatePriority(node: try node(), priority: UInt8(positional.count > 1 ? positional[1] : "") ?? 0)))
        case "set-quorum":
            changes = append(.operatorRequest(.setReplicationQuorum(node: try node(), enabled: positional.count > 1 && positional[1] == "true")))
        case "settings":
            var settings = state.settings
            if let k = options["k"].flatMap(UInt8.init) { settings.numberSyncStandbys = k }
            if let strict = options["strict"] { settings.strictSyncMode = strict == "true" }
            if let lease = options["lease"].flatMap(UInt32.init) { settings.primaryLeaseMillis = lease }
            if let unhealthy = options["unhealthy"].flatMap(UInt32.init) { settings.nodeUnhealthyTimeoutMillis = unhealthy }
            changes = append(.settingsChanged(settings))
        case "deadline":
            // The next time the witness leader would tick for (`nextDeadlineNanos`).
            guard let deadline = state.nextDeadlineNanos else { return ["no deadline"] }
            return ["next deadline in \((deadline - state.nowNanos) / 1_000_000) ms"]
        case "tick-at-deadline":
            // The witness leader's tick at the next deadline, with nothing else in between.
            guard let deadline = state.nextDeadlineStampNanos else { throw StoryError(description: "no deadline to tick at") }
            clockNanos = deadline
            changes = append(.tick)
        case "status":
            return statusLines()
        case "derived":
            var lines: [String] = []
            for record in state.sortedNodes {
                let names = state.synchronousStandbyNames(for: record.id)
                if !names.isEmpty { lines.append("\(record.id) synchronous_standby_names: \(names)") }
                if let upstream = state.upstream(of: record.id) { lines.append("\(record.id) follows \(upstream.host):\(upstream.port)") }
            }
            if let narrowing = state.narrowingPrimary {
                lines.append("\(narrowing) narrows its quorum: \(state.standbysToHoldWrites) standby(s) must hold its writes")
            }
            lines.append("uri: \(state.connectionURI())")
            return lines
        default:
            throw StoryError(description: "unknown command \(verb)")
        }
        return changes.map(\.description)
    }
}
