import EventLog
import Foundation
import Manager

/// Replays a realistic event log through the reducer: a three-node formation whose log is
/// dominated by coalesced heartbeats (one entry per 500 ms with three reports), with a
/// failover every 10,000 entries. Measures decode + apply (what a reader does with committed
/// Raft entries) and apply alone.
struct ReplayBenchmark {
    var entries: Int
    var runs: Int

    func run() throws {
        let log = makeLog()
        let encoded = log.map { $0.record.encoded() }
        print("replay: \(log.count) entries (3 nodes, coalesced heartbeats, a failover every 10,000 entries), \(runs) runs")
        var decodeAndApply: [Double] = []
        var applyOnly: [Double] = []
        for run in 1...runs {
            let clock = ContinuousClock()
            var start = clock.now
            var state = ClusterState()
            for (position, bytes) in encoded.enumerated() {
                let record = try EventRecord(decoding: bytes)
                state.apply(LogEntry(index: log[position].index, term: log[position].term, record: record))
            }
            let full = Double(log.count) / seconds(clock.now - start)
            start = clock.now
            var again = ClusterState()
            again.replay(log)
            let apply = Double(log.count) / seconds(clock.now - start)
            precondition(again == state, "replay is not deterministic")
            decodeAndApply.append(full)
            applyOnly.append(apply)
            print(String(format: "  run %d: decode+apply %.0f entries/s, apply %.0f entries/s", run, full, apply))
        }
        print(String(format: "replay: median decode+apply %.0f entries/s, apply %.0f entries/s",
                     decodeAndApply.sorted()[runs / 2], applyOnly.sorted()[runs / 2]))
    }

    private func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// A log a witness leader would write for a healthy formation with periodic failovers.
    private func makeLog() -> [LogEntry] {
        var log: [LogEntry] = []
        var clock: UInt64 = 0
        var state = ClusterState()
        var lsn: UInt64 = 1 << 24
        var silent: PGNodeID?
        func append(_ event: ClusterEvent) {
            let entry = LogEntry(
                index: UInt64(log.count + 1), term: 1,
                record: EventRecord(stamp: LogStamp(leaderClockNanos: clock, wallTimeMillis: Int64(clock / 1_000_000)), event: event))
            log.append(entry)
            state.apply(entry)
        }
        for id: PGNodeID in 1...3 {
            append(.nodeRegistered(NodeRegistration(node: id, name: "node\(id)", host: "10.0.0.\(id)", port: 5432, systemIdentifier: 1)))
        }
        while log.count < entries {
            clock += 500_000_000
            lsn += 16384
            if log.count % 10_000 == 0, let primary = state.primaryNode, primary.goal == .primary { silent = primary.id }
            var reports: [NodeReport] = []
            for node in state.sortedNodes where node.id != silent {
                // Managers reach their goal at once and report every heartbeat.
                let timeline = UInt32(1 + state.term)
                reports.append(
                    NodeReport(
                        node: node.id, reachedState: node.goal, postgresRunning: true, timeline: timeline, flushLSN: lsn,
                        replayLSN: lsn, syncState: .quorum, lagBytes: 0, sentAtNanos: clock))
            }
            append(.nodeReports(reports))
            if let id = silent, let node = state[id], node.goal == .demoted { silent = nil }
        }
        return log
    }
}
