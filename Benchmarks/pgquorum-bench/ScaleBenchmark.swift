import EventLog
import Foundation
import Manager
import Raft
import Synchronization
import TestSupport

/// How the cost of one witness quorum grows with the formations it serves: three real witness
/// processes, and per formation `nodesPerFormation` simulated node managers. Each simulated
/// manager is what a real one is to the witnesses, without postgres: its own client and
/// connections, a registration, a stream of the log it replays with the reducer (of its own
/// formation only, or of every formation with `filtered` false, as before formations could be
/// followed apart), and a report every heartbeat interval saying it reached its goal, with
/// the primary's view of its standbys. Formations are added in stages (1, 10, 100 by default);
/// once every formation has converged, each stage measures over a window: the commit latency
/// of reports and of operator requests (a settings change every 500 ms), the witnesses' CPU
/// and memory, the log's growth, and how long one real manager takes to load its formation's
/// state from the snapshot and the entries after it (witnesses snapshot every
/// `snapshotEntries`, so that there is one).
struct ScaleBenchmark {
    var formationCounts: [Int]
    var nodesPerFormation: Int
    var seconds: Int
    var filtered: Bool
    /// The witnesses snapshot every this many entries (keeping a quarter of that behind the
    /// snapshot), so that a manager that starts loads from a snapshot at every stage.
    var snapshotEntries: Int

    func run() async throws {
        try await withWitnessCluster(extraArguments: ["--snapshot-entries", "\(snapshotEntries)", "--keep-entries", "\(snapshotEntries / 4)"]) {
            try await measure($0)
        }
    }

    private func measure(_ cluster: WitnessClusterFixture) async throws {
        try cluster.startAll()
        _ = try await cluster.waitForLeader()
        let operatorClient = cluster.client()
        defer { operatorClient.close() }
        print("scale: three witness processes on loopback (a snapshot every \(snapshotEntries) entries), \(nodesPerFormation) simulated managers per formation "
            + "(each: its own client, a stream of \(filtered ? "its formation's entries" : "every entry"), a report every heartbeat); "
            + "\(seconds) s windows")
        print("  formations | nodes | reports/s | report commit p50/p99 ms | operator p50/p99 ms | witness CPU % of a core (leader, all) | "
            + "witness RSS/PSS MiB (all) | log entries/s, KiB/s | data.mdb MiB | load f0000 ms (snapshot index, entries after)")
        var managers: [SimulatedManager] = []
        defer { for manager in managers { manager.stop() } }
        for count in formationCounts.sorted() {
            let existing = managers.count / nodesPerFormation
            guard count > existing else { continue }
            for formation in existing..<count {
                let name = Self.formationName(formation)
                for node in 1...nodesPerFormation {
                    let manager = SimulatedManager(
                        formation: name, node: PGNodeID(node), nodes: PGNodeID(nodesPerFormation), client: cluster.client(), filtered: filtered)
                    managers.append(manager)
                    // The first node registers first, so that it is the one that starts as single.
                    try await manager.register()
                    manager.start()
                }
            }
            do {
                try await waitUntilAsync("\(count) formations converged (a primary and \(nodesPerFormation - 1) secondaries each)", timeout: .seconds(180)) {
                    stride(from: 0, to: managers.count, by: nodesPerFormation).allSatisfy { managers[$0].formationConverged }
                }
            } catch {
                for manager in managers where !manager.formationConverged && manager.node == 1 { print("  not converged: \(manager.summary)") }
                throw error
            }
            try await Task.sleep(for: .seconds(3))
            try await window(cluster, operatorClient: operatorClient, formations: count, managers: managers)
        }
    }

    static func formationName(_ index: Int) -> String { String(format: "f%04d", index) }

    private func window(_ cluster: WitnessClusterFixture, operatorClient: WitnessClient, formations: Int, managers: [SimulatedManager]) async throws {
        let leader = try await cluster.waitForLeader()
        let witnesses = [NodeID(1), 2, 3]
        let pids = witnesses.compactMap { cluster.pid(of: $0) }
        let startCommit = try await cluster.status(of: leader).commit
        for manager in managers { manager.recording(true) }
        // The log's growth, counted as it commits (the window may outlast what the witnesses
        // keep behind a snapshot).
        let counted = Mutex<(index: UInt64, bytes: Int)>((startCommit, 0))
        let counter = Task {
            for try await item in operatorClient.stream(from: startCommit + 1) {
                guard case .entries(let entries) = item else { throw BenchmarkError("the log's growth outran the stream counting it") }
                let bytes = entries.reduce(0) { total, entry in
                    if case .event(let record) = entry.payload { total + record.encoded().count } else { total }
                }
                counted.withLock { $0 = (entries.last!.index, $0.bytes + bytes) }
            }
        }
        let cpuBefore = pids.map(IdleBenchmark.cpuTicks)
        let started = ContinuousClock.now
        // Operator requests on the first formation while the window runs: a settings change
        // that alters nothing the simulated managers depend on.
        let operatorTask = Task { () -> [Duration] in
            var latencies: [Duration] = []
            var settings = FormationSettings()
            while ContinuousClock.now - started < .seconds(seconds) {
                settings.postgresRestartTimeoutMillis = settings.postgresRestartTimeoutMillis == 5_000 ? 5_001 : 5_000
                let sent = ContinuousClock.now
                _ = try await operatorClient.append(.settingsChanged(settings), formation: Self.formationName(0))
                latencies.append(ContinuousClock.now - sent)
                try await Task.sleep(for: .milliseconds(500))
            }
            return latencies
        }
        let operatorLatencies = try await operatorTask.value
        let remaining = .seconds(seconds) - (ContinuousClock.now - started)
        if remaining > .zero { try await Task.sleep(for: remaining) }
        let elapsed = Self.seconds(ContinuousClock.now - started)
        let cpuAfter = pids.map(IdleBenchmark.cpuTicks)
        for manager in managers { manager.recording(false) }
        let endCommit = try await cluster.status(of: leader).commit
        let entriesPerSecond = Double(endCommit - startCommit) / elapsed
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let cpu = zip(cpuBefore, cpuAfter).map { Double($1 - $0) / ticks / elapsed * 100 }
        let leaderCPU = witnesses.firstIndex(of: leader).map { cpu[$0] } ?? 0
        let memory = pids.map(IdleBenchmark.memoryKiB)
        let reports = managers.flatMap { $0.takeLatencies() }.sorted()
        let operators = operatorLatencies.sorted()
        try await waitUntilAsync("the log's growth is counted", timeout: .seconds(30)) { counted.withLock { $0.index } >= endCommit }
        counter.cancel()
        _ = await counter.result
        let bytes = counted.withLock { $0.bytes }
        let dataMiB = Double((try? FileManager.default.attributesOfItem(atPath: cluster.folder.appending("witness-\(leader)/data.mdb"))[.size] as? Int) ?? 0) / 1_048_576

        // One real manager starting: its formation's state from the snapshot and what follows.
        let loader = cluster.client()
        defer { loader.close() }
        let snapshotIndex = try await loader.snapshot().index
        let loadStarted = ContinuousClock.now
        let state = try await ClusterLog.load(from: loader, formation: Self.formationName(0))
        let loadMillis = Self.seconds(ContinuousClock.now - loadStarted) * 1000
        guard state.sortedNodes.count == nodesPerFormation else { throw BenchmarkError("the loaded state of f0000 has \(state.sortedNodes.count) nodes") }

        print(String(
            format: "  %10d | %5d | %9.0f | %9.1f / %-12.1f | %6.1f / %-9.1f | %6.1f, %6.1f | %6.0f / %-6.0f | %7.0f, %7.1f | %6.1f | %7.1f (%llu, %llu)",
            formations, managers.count, Double(reports.count) / elapsed, Self.millis(reports, 0.5), Self.millis(reports, 0.99),
            Self.millis(operators, 0.5), Self.millis(operators, 0.99), leaderCPU, cpu.reduce(0, +),
            Double(memory.map(\.rss).reduce(0, +)) / 1024, Double(memory.map(\.pss).reduce(0, +)) / 1024,
            entriesPerSecond, Double(bytes) / 1024 / elapsed, dataMiB, loadMillis,
            snapshotIndex, state.appliedIndex - snapshotIndex))
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func millis(_ sorted: [Duration], _ fraction: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        return seconds(sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]) * 1000
    }
}

/// A node manager without postgres, as the witnesses see one: it registers, follows the log
/// by a stream and replays it with the reducer, and reports every heartbeat interval that it
/// reached its goal (a primary also reports its standbys streaming in quorum).
final class SimulatedManager: Sendable {
    let formation: String
    let node: PGNodeID
    let nodes: PGNodeID
    let filtered: Bool
    private let client: WitnessClient
    private let state: Mutex<ClusterState>
    private let tasks = Mutex<[Task<Void, Never>]>([])
    private let latencies = Mutex<(recording: Bool, values: [Duration])>((false, []))

    init(formation: String, node: PGNodeID, nodes: PGNodeID, client: WitnessClient, filtered: Bool) {
        self.formation = formation
        self.node = node
        self.nodes = nodes
        self.client = client
        self.filtered = filtered
        state = Mutex(ClusterState(formation: formation))
    }

    /// Whether this manager's view shows its formation settled: every node converged, one
    /// primary, the others secondaries.
    var formationConverged: Bool {
        state.withLock { state in
            let nodes = state.sortedNodes
            return nodes.count == Int(self.nodes) && nodes.allSatisfy(\.isConverged) && nodes.filter { $0.goal == .primary }.count == 1
                && nodes.filter { $0.goal == .secondary }.count == nodes.count - 1
        }
    }

    /// The formation as this manager sees it, for a report of what did not converge.
    var summary: String {
        state.withLock { state in
            "\(formation) at \(state.appliedIndex): "
                + state.sortedNodes.map { "node \($0.id) \($0.reached.rawValue) -> \($0.goal.rawValue)" }.joined(separator: ", ")
                + (state.waitingReason.map { "; waiting: \($0)" } ?? "")
        }
    }

    func register() async throws {
        let registration = NodeRegistration(
            node: node, name: "\(formation)-node\(node)", host: "10.0.\(node).1", port: 5432, systemIdentifier: 7)
        _ = try await client.append(.nodeRegistered(registration), formation: formation)
    }

    func start() {
        let follow = Task { [self] in
            while !Task.isCancelled {
                do {
                    let from = state.withLock { $0.appliedIndex } + 1
                    for try await item in client.stream(from: from, preferLeader: true, formation: filtered ? formation : nil) {
                        switch item {
                        case .entries(let entries):
                            state.withLock { state in for entry in entries { ClusterLog.apply(entry, to: &state, onStep: nil) } }
                        case .snapshot(let snapshot):
                            let restored = try ClusterLog.restore(snapshot, formation: formation)
                            state.withLock { $0 = restored }
                        case .skipped(let through):
                            state.withLock { ClusterLog.skip(through: through, in: &$0) }
                        }
                    }
                } catch {
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        let report = Task { [self] in
            var reachedGoalIndex: UInt64 = 0
            while !Task.isCancelled {
                let (report, interval, me) = state.withLock { state in (self.report(in: state), state.settings.heartbeatIntervalMillis, state[node]) }
                // A new goal is reached at once, and says so as a real manager does.
                if let me, me.goal != me.reached, me.goalIndex > reachedGoalIndex,
                    (try? await client.append(.stateReached(node: node, state: me.goal), formation: formation)) != nil
                {
                    reachedGoalIndex = me.goalIndex
                }
                let sent = ContinuousClock.now
                if (try? await client.report(report, formation: formation)) != nil {
                    let took = ContinuousClock.now - sent
                    latencies.withLock { if $0.recording { $0.values.append(took) } }
                }
                try? await Task.sleep(for: .milliseconds(Int64(interval)) - (ContinuousClock.now - sent))
            }
        }
        tasks.withLock { $0 = [follow, report] }
    }

    private func report(in state: ClusterState) -> NodeReport {
        let goal = state[node]?.goal ?? .initial
        let lsn = LSN(DispatchTime.now().uptimeNanoseconds / 1_000)
        let leads = [NodeState.single, .waitPrimary, .primary].contains(goal)
        var report = NodeReport(
            node: node, reachedState: goal, postgresRunning: true, timeline: 1, flushLSN: lsn, replayLSN: lsn,
            syncState: leads ? .unknown : .quorum, lagBytes: 0, sentAtNanos: DispatchTime.now().uptimeNanoseconds)
        if leads {
            report.standbys = state.sortedNodes.filter { $0.id != node }.map {
                StandbyView(node: $0.id, streaming: true, syncState: .quorum, flushLagBytes: 0, replyAgeMillis: 10)
            }
        }
        return report
    }

    func recording(_ on: Bool) { latencies.withLock { $0.recording = on } }

    func takeLatencies() -> [Duration] {
        latencies.withLock { latencies in
            let values = latencies.values
            latencies.values = []
            return values
        }
    }

    func stop() {
        for task in tasks.withLock({ $0 }) { task.cancel() }
        client.close()
    }
}
