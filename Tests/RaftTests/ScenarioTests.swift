import Foundation
import Testing
import TestSupport

@testable import Raft

/// Runs the multi-replica stories in `testdata/*.txt`. Each block is one command, a line
/// `----`, and the trace the command must produce. `RAFT_REWRITE=1 swift test --filter
/// ScenarioTests` rewrites the expectations from what the code does now (then read the diff).
@Suite("Raft scenario files")
struct ScenarioTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("testdata")

    static var files: [String] { ScenarioScript.files(in: folder) }

    @Test("scenario", arguments: files)
    func scenario(file: String) throws {
        var runner = ScenarioRunner()
        let results = try ScenarioScript.run(path: Self.folder.appendingPathComponent(file).path, rewriteVariable: "RAFT_REWRITE") {
            runner.run($0)
        }
        for (block, actual) in results {
            #expect(actual == block.expected, "\(file):\(block.line): \(block.command)")
        }
    }

    @Test("there are scenario files to run")
    func filesExist() {
        #expect(Self.files.count >= 5)
    }
}

struct ScenarioError: Error, CustomStringConvertible {
    var description: String
}

/// Interprets scenario commands against a `Cluster`.
struct ScenarioRunner {
    var cluster: Cluster?

    mutating func run(_ command: String) -> String {
        let words = command.split(separator: " ").map(String.init)
        do {
            let lines = try execute(words)
            return lines.isEmpty ? "ok" : lines.joined(separator: "\n")
        } catch {
            return "error: \(error)"
        }
    }

    private mutating func execute(_ words: [String]) throws -> [String] {
        guard let verb = words.first else { return [] }
        let arguments = Array(words.dropFirst())
        if verb == "add-nodes" { return try addNodes(arguments) }
        guard let cluster else { throw ScenarioError(description: "add-nodes must come first") }
        let mark = cluster.trace.count
        func id(_ position: Int) throws -> NodeID {
            guard position < arguments.count, let value = NodeID(arguments[position]) else {
                throw ScenarioError(description: "\(verb) needs a replica id as argument \(position + 1)")
            }
            return value
        }
        var extra: [String] = []
        switch verb {
        case "campaign": try cluster.with(try id(0)) { try $0.campaign() }
        case "tick": try cluster.tick(try id(0), times: arguments.count > 1 ? Int(arguments[1]) ?? 1 : 1)
        case "tick-election": try cluster.tick(try id(0), times: 20)
        case "propose":
            let index = try cluster.with(try id(0)) { try $0.propose(Array(arguments.dropFirst().joined(separator: " ").utf8)) }
            extra.append("proposed at index \(index)")
        case "add-voter", "remove-voter", "add-learner":
            let target = try id(1)
            let change: MembershipChange =
                verb == "add-voter" ? .addVoter(target) : verb == "add-learner" ? .addLearner(target) : .removeVoter(target)
            let index = try cluster.with(try id(0)) { try $0.proposeMembershipChange(change) }
            extra.append("proposed \(change) at index \(index)")
        case "transfer-leadership":
            let target = try id(1)
            try cluster.with(try id(0)) { try $0.transferLeadership(to: target) }
        case "read-index":
            // `read-index ID CONTEXT lazy`: a read that waits for the next regular heartbeat.
            let context = arguments.count > 1 ? UInt64(arguments[1]) ?? 0 : 0
            try cluster.with(try id(0)) { try $0.readIndex(context: context, prompt: arguments.count < 3 || arguments[2] != "lazy") }
        case "deliver": try cluster.deliverRound(to: arguments.isEmpty ? nil : try id(0))
        case "stabilize": try cluster.stabilize()
        case "process-ready": break
        case "partition":
            let groups = arguments.split(separator: "|").map { $0.compactMap { NodeID($0) } }
            cluster.partition(groups)
        case "isolate": cluster.isolate(try id(0))
        case "heal": cluster.heal()
        case "crash": cluster.crash(try id(0))
        case "restart": try cluster.restart(try id(0))
        case "compact":
            let replica = cluster.replicas[try id(0)]!
            try replica.compact()
            extra.append("compacted to \(try replica.storage.firstIndex() - 1)")
        case "status": return cluster.statusLines()
        case "log": return try cluster.logLines(try id(0))
        default: throw ScenarioError(description: "unknown command \(verb)")
        }
        if verb != "deliver" && verb != "stabilize" { try cluster.processReady() }
        return extra + Array(cluster.trace[mark...])
    }

    private mutating func addNodes(_ arguments: [String]) throws -> [String] {
        guard let count = arguments.first.flatMap(UInt64.init) else {
            throw ScenarioError(description: "add-nodes needs a count")
        }
        var options: [String: String] = [:]
        for argument in arguments.dropFirst() {
            let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { options[parts[0]] = parts[1] }
        }
        let voters = options["voters"].map { Set($0.split(separator: ",").compactMap { NodeID($0) }) }
        let cluster = try Cluster(ids: Array(1...count), voters: voters) { config in
            config.preVote = options["prevote"] != "false"
            config.checkQuorum = options["checkquorum"] != "false"
        }
        try cluster.processReady()
        self.cluster = cluster
        return cluster.statusLines()
    }
}
