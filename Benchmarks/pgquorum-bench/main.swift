// pgquorum-bench: prints the figures recorded in docs/BENCHMARKS.md.
//
//   swift run -c release pgquorum-bench raft [--entries N] [--batch N] [--payload BYTES]
//   swift run -c release pgquorum-bench lmdb [--seconds S] [--payload BYTES] [--dir DIR]
//   swift run -c release pgquorum-bench replay [--entries N] [--runs N]
//   swift build -c release && .build/release/pgquorum-bench witness [--seconds S] [--trials N] [--root DIR]
//   swift build -c release && .build/release/pgquorum-bench failover [--trials N] [--profile default|fast] [--settings KEY=VALUE,…]
//   swift build -c release && .build/release/pgquorum-bench partition [--trials N] [--cut SECONDS] [--fault NAME]   (as root)
//   swift build -c release && .build/release/pgquorum-bench idle [--windows N] [--seconds S] [--scrape SECONDS] [--endpoints on|off] [--settings KEY=VALUE,…]
//   swift build -c release && .build/release/pgquorum-bench soak [--seconds S] [--busy N] [--settings KEY=VALUE,…] [--kill-leader-every SECONDS]
//   swift build -c release && .build/release/pgquorum-bench scale [--formations 1,10,100] [--nodes-per-formation N] [--seconds S] [--filter on|off] [--snapshot-entries N]
//
// Every figure is measured in this process on this machine; compare ratios from one run.
import Foundation
import Raft
import TestSupport

func argument(_ name: String, default value: Int) -> Int {
    let arguments = CommandLine.arguments
    guard let position = arguments.firstIndex(of: name), position + 1 < arguments.count else { return value }
    guard let parsed = Int(arguments[position + 1]), parsed > 0 else {
        FileHandle.standardError.write(Data("pgquorum-bench: \(name) needs a positive whole number, not \(arguments[position + 1])\n".utf8))
        exit(64)
    }
    return parsed
}

/// `--settings KEY=VALUE,KEY=VALUE,…`: settings to apply in that order.
func settingsArgument() throws -> [(key: String, value: String)] {
    guard let position = CommandLine.arguments.firstIndex(of: "--settings"), position + 1 < CommandLine.arguments.count else { return [] }
    return try CommandLine.arguments[position + 1].split(separator: ",").map { pair in
        let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { throw BenchmarkError("--settings takes KEY=VALUE,KEY=VALUE,…, not \(pair)") }
        return (parts[0], parts[1])
    }
}

extension PGClusterFixture {
    /// Sets `settings` with `pgquorum settings set`, in the order given (each change must be
    /// valid on its own), and with `announce` prints them.
    func apply(_ settings: [(key: String, value: String)], announce: Bool = true) async throws {
        for (key, value) in settings {
            let result = try await cli(["settings", "set", key, value])
            guard result.termination == .exited(code: 0) else { throw BenchmarkError("settings set \(key) \(value) failed: \(result.output)") }
        }
        if announce, !settings.isEmpty { print("  settings: " + settings.map { "\($0.key) \($0.value)" }.joined(separator: ", ")) }
    }
}

let usage = """
    usage: pgquorum-bench raft [--entries N] [--batch N] [--payload BYTES] [--runs N]
           pgquorum-bench lmdb [--seconds S] [--payload BYTES] [--runs N] [--dir DIR]
           pgquorum-bench replay [--entries N] [--runs N]
           pgquorum-bench witness [--seconds S] [--trials N] [--root DIR]
           pgquorum-bench failover [--trials N] [--profile default|fast] [--settings KEY=VALUE,…]
           pgquorum-bench partition [--trials N] [--cut SECONDS] [--fault NAME]
           pgquorum-bench idle [--windows N] [--seconds S] [--scrape SECONDS] [--endpoints on|off] [--settings KEY=VALUE,…]
           pgquorum-bench soak [--seconds S] [--busy N] [--settings KEY=VALUE,…] [--kill-leader-every SECONDS]
           pgquorum-bench scale [--formations 1,10,100] [--nodes-per-formation N] [--seconds S] [--filter on|off] [--snapshot-entries N]

      raft   entries committed per second by a 3-replica in-process Raft cluster on
             in-memory storage: the leader proposes batches, messages are delivered
             in process, every replica persists and applies every entry.
      lmdb   durable appends per second to the LMDB Raft storage with one entry and with
             100 entries per write transaction, and commit latency p50/p99.
      replay entries per second through the reducer over a heartbeat-dominated log of
             a three-node formation, with and without decoding.
      witness three `pgquorum witness run` processes on loopback (build the pgquorum
             executable first: `swift build -c release`): committed appends per second
             with 1 and 64 concurrent appenders, latency p50/p99, linearizable and stale
             reads per second with 1 and 64 readers, and the time from SIGKILL of the
             leader to the next committed append over N trials.
      failover a whole cluster (3 witnesses, 3 PostgreSQL nodes) and a writer through the
             multi-host URI; per trial a node crash (SIGKILL of the primary's manager),
             a postgres crash and a switchover: write unavailability and writes lost.
             --profile fast first sets heartbeat_interval 100ms, primary_lease 300ms,
             node_unhealthy_timeout 800ms (default: the settings' defaults); --settings
             then sets others, in the order given (each step must be valid on its own).
      partition the same cluster across three network-namespace hosts (run as root), a
             writer on the client host and three inside the primary's host (plain, one
             that cancels a statement after 1 s, one with synchronous_commit=local,
             counted apart), a probe of every node every 100 ms from its own host; per
             trial one fault is held for SECONDS (30) and
             healed: primary-host (cut off), leader-host and standby-host (a standby's
             host cut off, the witness there the Raft leader or a follower),
             replication-links (the primary cut off from its standbys only),
             frozen-manager (SIGSTOP of the primary's manager); all of them, or the one
             --fault names: how long the old primary takes writes, when another node does,
             when writes resume, when the faulted node is heard and the cluster healthy
             after the heal, writes lost.
      idle   the same cluster on loopback at rest, observed as in production (every
             process's /metrics scraped every SECONDS (15), every node's /primary probed
             every 2 s): CPU of the witnesses, managers and watchdogs as a share of one
             core, and their RSS and PSS, per window of S seconds (30), N windows (3);
             --endpoints off: no metrics, no HTTP endpoints, nothing scraped (the base);
             --settings: timings to apply first, in the order given.
      soak   false alarms under load: the failover bench's cluster and writer, the
             settings applied, held for S seconds (180) while N busy loops (3) and a
             loop of 64 MB synchronous dd writes load the machine; then every goal
             change and new Raft term in the log of that stretch, the longest write gap;
             --kill-leader-every: SIGKILL of the witness leader that often (restarted 5 s
             later), which must not cost any node its health either.
      scale  three witness processes serving more and more formations (1, then 10, then
             100 by default), each of N (3) simulated node managers without postgres: per
             manager its own client, a registration, a stream of its formation's entries
             replayed with the reducer (--filter off: of every entry), a report every
             heartbeat. Once all converged, per stage over S seconds (20): report and
             operator-request commit latency, witness CPU, RSS and PSS, log growth, and
             how long one real manager takes to load its formation from the snapshot
             (the witnesses snapshot every N entries, 2000, keeping N/4 behind it).
    """

let command = CommandLine.arguments.dropFirst().first
/// The options each benchmark takes (each followed by a value).
let options: [String: Set<String>] = [
    "raft": ["--entries", "--batch", "--payload", "--runs"], "lmdb": ["--seconds", "--payload", "--runs", "--dir"],
    "replay": ["--entries", "--runs"], "witness": ["--seconds", "--trials", "--root"], "failover": ["--trials", "--profile", "--settings"], "soak": ["--seconds", "--busy", "--settings", "--kill-leader-every"],
    "partition": ["--trials", "--cut", "--fault"], "scale": ["--formations", "--nodes-per-formation", "--seconds", "--filter", "--snapshot-entries"], "idle": ["--windows", "--seconds", "--scrape", "--endpoints", "--settings"],
]
// `--help` anywhere prints the usage, and an option the benchmark does not take is refused,
// rather than a long run with defaults.
let rest = Array(CommandLine.arguments.dropFirst(2))
if rest.contains(where: { ["--help", "-h"].contains($0) }) {
    print(usage)
    exit(0)
}
if let command, let known = options[command] {
    var index = 0
    while index < rest.count {
        guard known.contains(rest[index]), index + 1 < rest.count else {
            FileHandle.standardError.write(
                Data("pgquorum-bench \(command): \(known.contains(rest[index]) ? "\(rest[index]) needs a value" : "unknown option \(rest[index])")\n\n\(usage)\n".utf8))
            exit(64)
        }
        index += 2
    }
}
do {
    switch command {
    case "raft":
        try RaftBenchmark(
            entries: argument("--entries", default: 2_000_000),
            batch: argument("--batch", default: 256),
            payloadBytes: argument("--payload", default: 128),
            runs: argument("--runs", default: 5)
        ).run()
    case "lmdb":
        let position = CommandLine.arguments.firstIndex(of: "--dir")
        try LMDBBenchmark(
            directory: position.flatMap { $0 + 1 < CommandLine.arguments.count ? CommandLine.arguments[$0 + 1] : nil },
            seconds: Double(argument("--seconds", default: 3)),
            payloadBytes: argument("--payload", default: 128),
            runs: argument("--runs", default: 3)
        ).run()
    case "replay":
        try ReplayBenchmark(entries: argument("--entries", default: 1_000_000), runs: argument("--runs", default: 5)).run()
    case "witness":
        let root = CommandLine.arguments.firstIndex(of: "--root").flatMap { $0 + 1 < CommandLine.arguments.count ? CommandLine.arguments[$0 + 1] : nil }
        try await WitnessBenchmark(
            seconds: Double(argument("--seconds", default: 5)), trials: argument("--trials", default: 10), root: root ?? "/tmp"
        ).run()
    case "failover":
        let profile = CommandLine.arguments.firstIndex(of: "--profile").map { $0 + 1 < CommandLine.arguments.count ? CommandLine.arguments[$0 + 1] : "" } ?? "default"
        guard ["default", "fast"].contains(profile) else { throw BenchmarkError("--profile takes default or fast, not \(profile)") }
        try await FailoverBenchmark(trials: argument("--trials", default: 5), profile: (profile == "fast" ? FailoverBenchmark.fastProfile : []) + settingsArgument()).run()
    case "soak":
        let killEvery = CommandLine.arguments.contains("--kill-leader-every") ? argument("--kill-leader-every", default: 30) : nil
        try await SoakBenchmark(
            seconds: argument("--seconds", default: 180), busyLoops: argument("--busy", default: 3), settings: settingsArgument(),
            killLeaderEverySeconds: killEvery
        ).run()
    case "idle":
        let endpoints = CommandLine.arguments.firstIndex(of: "--endpoints").map { $0 + 1 < CommandLine.arguments.count ? CommandLine.arguments[$0 + 1] : "" } ?? "on"
        guard ["on", "off"].contains(endpoints) else { throw BenchmarkError("--endpoints takes on or off, not \(endpoints)") }
        try await IdleBenchmark(
            windows: argument("--windows", default: 3), seconds: argument("--seconds", default: 30), scrapeSeconds: argument("--scrape", default: 15),
            endpoints: endpoints == "on", settings: settingsArgument()
        ).run()
    case "scale":
        let counts = try (CommandLine.arguments.firstIndex(of: "--formations").map { $0 + 1 < CommandLine.arguments.count ? CommandLine.arguments[$0 + 1] : "" } ?? "1,10,100")
            .split(separator: ",").map { text in
                guard let count = Int(text), count > 0, count <= 1_000 else { throw BenchmarkError("--formations takes counts from 1 to 1000 separated by commas, not \(text)") }
                return count
            }
        let filter = CommandLine.arguments.firstIndex(of: "--filter").map { $0 + 1 < CommandLine.arguments.count ? CommandLine.arguments[$0 + 1] : "" } ?? "on"
        guard ["on", "off"].contains(filter) else { throw BenchmarkError("--filter takes on or off, not \(filter)") }
        try await ScaleBenchmark(
            formationCounts: counts, nodesPerFormation: argument("--nodes-per-formation", default: 3), seconds: argument("--seconds", default: 20),
            filtered: filter == "on", snapshotEntries: argument("--snapshot-entries", default: 2_000)
        ).run()
    case "partition":
        let name = CommandLine.arguments.firstIndex(of: "--fault").flatMap { $0 + 1 < CommandLine.arguments.count ? CommandLine.arguments[$0 + 1] : nil }
        let faults = try name.map { name in
            guard let fault = PartitionFault(rawValue: name) else {
                throw BenchmarkError("unknown fault \(name); one of \(PartitionFault.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return [fault]
        } ?? PartitionFault.allCases
        try await PartitionBenchmark(trials: argument("--trials", default: 5), cutSeconds: argument("--cut", default: 30), faults: faults).run()
    default:
        print(usage)
        exit(command == nil || command == "--help" ? 0 : 64)
    }
} catch {
    FileHandle.standardError.write(Data("pgquorum-bench \(command ?? ""): \(error)\n".utf8))
    exit(1)
}
