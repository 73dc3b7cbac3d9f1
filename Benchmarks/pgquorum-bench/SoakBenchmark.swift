import EventLog
import Foundation
import Manager
import NodeControl
import TestSupport

/// False alarms under load: a healthy cluster on loopback (three witnesses, three PostgreSQL
/// nodes) with a writer through the multi-host URI, the given settings applied, held for
/// `seconds` while the machine is loaded — `busyLoops` shell loops that only spin, and a loop
/// of 64 MB synchronous `dd` writes into the cluster's folder. Then the log of that stretch is
/// read back: every goal change (a healthy cluster under load should have none), every new
/// Raft term, and how long the writer went without an acknowledged write. With
/// `killLeaderEverySeconds`, the witnesses' leader is also killed (SIGKILL) that often and
/// started again 5 s later: a new witness election must not cost a node its health.
struct SoakBenchmark {
    var seconds: Int
    var busyLoops: Int
    var settings: [(key: String, value: String)]
    var killLeaderEverySeconds: Int?

    func run() async throws {
        try await withPGCluster { try await measure($0) }
    }

    private func measure(_ cluster: PGClusterFixture) async throws {
        _ = try await cluster.waitForHealthy(timeout: .seconds(120))
        try await cluster.createTable()
        try await cluster.apply(settings, announce: false)
        _ = try await cluster.waitForHealthyAndStreaming(timeout: .seconds(60))
        let client = cluster.client()
        defer { client.close() }
        let start = try await ClusterLog.load(from: client, formation: cluster.formation)
        let writer = RowWriter(uri: try await cluster.uri())
        print("soak: three witnesses, three PostgreSQL 15 nodes and a writer on loopback for \(seconds) s; settings: "
            + (settings.isEmpty ? "the defaults" : settings.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            + "; load: \(busyLoops) busy loops and a loop of 64 MB synchronous dd writes"
            + (killLeaderEverySeconds.map { "; the witness leader killed every \($0) s" } ?? ""))
        var load: [ChildProcess] = []
        for _ in 0..<busyLoops {
            load.append(try ChildProcess.spawn("/bin/sh", ["-c", "while :; do :; done"], parentDeathSignal: "KILL"))
        }
        let scratch = cluster.witnesses.folder.appending("soak-dd")
        load.append(
            try ChildProcess.spawn(
                "/bin/sh", ["-c", "while :; do dd if=/dev/zero of=\(scratch) bs=1M count=64 oflag=sync 2>/dev/null; done"], parentDeathSignal: "KILL"))
        var loadAverages: [Double] = []
        var kills = 0
        let began = ContinuousClock.now
        do {
            while ContinuousClock.now - began < .seconds(seconds) {
                try await Task.sleep(for: .seconds(5))
                let elapsed = Int((ContinuousClock.now - began).components.seconds)
                if let every = killLeaderEverySeconds, elapsed / every > kills, ContinuousClock.now - began < .seconds(seconds - 10) {
                    kills += 1
                    let leader = try await cluster.witnesses.waitForLeader()
                    await cluster.witnesses.kill(leader)
                    try await Task.sleep(for: .seconds(5))
                    try cluster.witnesses.start(leader)
                }
                if let text = try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8), let one = text.split(separator: " ").first.flatMap({ Double($0) }) {
                    loadAverages.append(one)
                }
            }
        } catch {
            for process in load { _ = await process.stop(signal: SIGKILL, grace: .seconds(5)) }
            throw error
        }
        let ended = ContinuousClock.now
        for process in load { _ = await process.stop(signal: SIGKILL, grace: .seconds(5)) }
        try? FileManager.default.removeItem(atPath: scratch)
        let longestGap = writer.longestGap(from: began, to: ended)
        await writer.stop()

        var state = start
        var changes: [String] = []
        var terms = 0
        try await ClusterLog.replay(from: client, into: &state) { step in
            if case .termStarted = step.entry.record.event { terms += 1 }
            for change in step.changes {
                changes.append("  index \(step.entry.index): node \(change.node) \(change.from.rawValue) -> \(change.to.rawValue): \(change.reason)")
            }
        }
        let sortedLoad = loadAverages.sorted()
        print(String(format: "  load average (1 min) median %.1f, max %.1f; %d writes acknowledged, ", sortedLoad.isEmpty ? 0 : sortedLoad[sortedLoad.count / 2], sortedLoad.last ?? 0, writer.count)
            + "longest gap between them \(millis(longestGap)) ms")
        print("  log entries \(start.appliedIndex + 1)–\(state.appliedIndex): \(terms) new Raft terms (\(kills) witness leaders killed), \(changes.count) goal changes")
        for line in changes { print(line) }
        let failovers = changes.filter { $0.contains("-> prepare_promotion") || $0.contains("-> fast_forward") }.count
        print("  false failovers: \(failovers)")
    }
}
