import EventLog
import Foundation
import Manager
import NodeControl
import TestSupport

/// A whole cluster on loopback (three witnesses, three nodes; the `pgquorum` executable built
/// beside this one), a writer through the multi-host URI, and one fault per trial: the time
/// from the fault to the first acknowledged write after it, and acknowledged writes lost.
struct FailoverBenchmark {
    var trials: Int
    /// Settings applied (`pgquorum settings set`, in this order) once the cluster is healthy.
    var profile: [(key: String, value: String)] = []

    /// The fast profile of docs/BENCHMARKS.md: heartbeats every 100 ms, a 300 ms lease, a node
    /// unhealthy after 800 ms (the lease plus the watchdog's 500 ms grace). In this order from
    /// the defaults: each change is validated alone.
    static let fastProfile = [("heartbeat_interval", "100ms"), ("primary_lease", "300ms"), ("node_unhealthy_timeout", "800ms")]

    func run() async throws {
        try await withPGCluster { try await measure($0) }
    }

    private func primary(_ cluster: PGClusterFixture) async throws -> PGNodeID {
        let state = try await cluster.waitForHealthy(timeout: .seconds(120))
        return state.sortedNodes.first { $0.reached == .primary }!.id
    }

    private func measure(_ cluster: PGClusterFixture) async throws {
        try await cluster.createTable()
        try await cluster.apply(profile)
        let writer = RowWriter(uri: try await cluster.uri())
        var results: [String: [Duration]] = [:]
        let scenarios = ["node crash", "postgres crash", "switchover"]
        for trial in 1...trials {
            for scenario in scenarios {
                let old = try await primary(cluster)
                try await Task.sleep(for: .milliseconds(500))
                let fault = ContinuousClock.now
                switch scenario {
                case "node crash":
                    await cluster.killManager(old)
                case "postgres crash":
                    if let pid = cluster.postgresPID(of: old) { kill(pid, SIGKILL) }
                default:
                    let target = cluster.ids.first { $0 != old }!
                    let result = try await cluster.cli(["switchover", "--to", "\(target)"])
                    guard result.termination == .exited(code: 0) else { throw BenchmarkError("switchover failed: \(result.output)") }
                }
                // Let things settle (a killed postmaster's backends notice late), then measure.
                if scenario == "node crash" {
                    _ = try await cluster.waitFor("another primary", timeout: .seconds(120)) { state in
                        state.sortedNodes.contains { $0.id != old && $0.reached == .primary }
                    }
                } else {
                    _ = try await cluster.waitForHealthy(timeout: .seconds(120))
                }
                let settled = ContinuousClock.now
                let deadline = settled + .seconds(60)
                while writer.firstAck(after: settled + .seconds(1)) == nil && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                }
                guard let recovery = writer.recovery(after: fault), writer.firstAck(after: settled + .seconds(1)) != nil else {
                    throw BenchmarkError("\(scenario): writes did not come back within 60 s of the cluster being healthy")
                }
                let unavailable = scenario == "switchover" ? writer.longestGap(from: fault, to: ContinuousClock.now) : recovery
                results[scenario, default: []].append(unavailable)
                print("  trial \(trial), \(scenario) of node \(old): writes unavailable for \(millis(unavailable)) ms")
                if scenario == "node crash" { try cluster.startManager(old) }
                // The next fault starts from a cluster whose standbys all stream, as the
                // primary's committed report shows (a switchover needs it).
                _ = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(120))
            }
        }
        await writer.stop()
        let current = try await primary(cluster)
        let lost = try await cluster.lostRows(writer, on: current).count
        print("three witnesses and three PostgreSQL 15 nodes on loopback, \(trials) trials per fault, \(writer.count) writes acknowledged, \(lost) lost")
        for scenario in scenarios {
            let sorted = results[scenario]!.sorted()
            print(
                "  \(scenario): writes unavailable median \(millis(sorted[sorted.count / 2])) ms, min \(millis(sorted.first!)) ms, max \(millis(sorted.last!)) ms"
            )
        }
    }
}
