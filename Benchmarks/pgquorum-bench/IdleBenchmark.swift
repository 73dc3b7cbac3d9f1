import EventLog
import Foundation
import Manager
import NodeControl
import Raft
import TestSupport

/// The cost of the HA layer at rest: a healthy three-node cluster on loopback (three witnesses
/// with `--metrics`, three node managers with their HTTP endpoints, each with its lease
/// watchdog), observed as production would — `/metrics` of every process scraped every
/// `scrapeSeconds`, `/primary` of every node probed every 2 s (HAProxy's default check) — and
/// no client writing. Per window: CPU time of the witnesses, managers and watchdogs (postgres
/// excluded) as a share of one core, and their resident (RSS) and proportional (PSS) memory.
struct IdleBenchmark {
    var windows: Int
    var seconds: Int
    var scrapeSeconds: Int
    /// With false, no witness serves metrics, no manager its HTTP endpoints, and nothing is
    /// scraped or probed: what the endpoints cost, by difference.
    var endpoints: Bool
    /// Settings applied (`pgquorum settings set`, in this order) once the cluster is healthy.
    var settings: [(key: String, value: String)] = []

    func run() async throws {
        let off = Dictionary(uniqueKeysWithValues: (1...3).map { (PGNodeID($0), ["--http", "off"]) })
        try await withPGCluster(nodeArguments: endpoints ? [:] : off, witnessMetrics: endpoints) { try await measure($0) }
    }

    private struct Process {
        var kind: String
        var pid: pid_t
    }

    private func measure(_ cluster: PGClusterFixture) async throws {
        _ = try await cluster.waitForHealthy(timeout: .seconds(120))
        try await cluster.apply(settings)
        var processes = [NodeID(1), 2, 3].compactMap { id in cluster.witnesses.pid(of: id).map { Process(kind: "witness", pid: $0) } }
        for id in cluster.ids {
            guard let manager = cluster.manager(of: id)?.pid else { continue }
            processes.append(Process(kind: "manager", pid: manager))
            processes += ProcessTree.children(of: manager).filter { Self.commandLine($0).contains("watchdog") }.map { Process(kind: "watchdog", pid: $0) }
        }
        if endpoints {
            print("idle cluster: \(processes.count) processes (3 witnesses with --metrics, 3 managers with HTTP endpoints, their watchdogs); "
                + "/metrics scraped every \(scrapeSeconds) s, /primary probed every 2 s; postgres excluded")
        } else {
            print("idle cluster: \(processes.count) processes (3 witnesses, 3 managers with --http off, their watchdogs), nothing scraped or probed; postgres excluded")
        }
        print("  settling for 20 s…")
        let observer = Task { if endpoints { await observe(cluster) } }
        defer { observer.cancel() }
        try await Task.sleep(for: .seconds(20))
        var shares: [Double] = []
        var rss: [Double] = []
        var pss: [Double] = []
        for window in 1...windows {
            let before = processes.map { Self.cpuTicks($0.pid) }
            let started = ContinuousClock.now
            try await Task.sleep(for: .seconds(seconds))
            let elapsed = ContinuousClock.now - started
            let after = processes.map { Self.cpuTicks($0.pid) }
            let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
            let wall = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let each = zip(before, after).map { Double($1 - $0) / ticks / wall * 100 }
            let memory = processes.map { Self.memoryKiB($0.pid) }
            let total = each.reduce(0, +)
            shares.append(total)
            rss.append(Double(memory.map(\.rss).reduce(0, +)) / 1024)
            pss.append(Double(memory.map(\.pss).reduce(0, +)) / 1024)
            let byKind = [("witness", "witnesses"), ("manager", "managers"), ("watchdog", "watchdogs")].map { kind, plural in
                "\(plural) " + zip(processes, each).filter { $0.0.kind == kind }.map { String(format: "%.2f", $0.1) }.joined(separator: " ")
            }
            print(String(format: "  window %d (%d s): CPU %.2f%% of one core (%@); RSS %.0f MiB, PSS %.0f MiB",
                window, seconds, total, byKind.joined(separator: ", "), rss.last!, pss.last!))
        }
        print(String(format: "  median: CPU %.2f%% of one core, RSS %.0f MiB, PSS %.0f MiB", median(shares), median(rss), median(pss)))
    }

    /// Scrapes every process's `/metrics` and probes every node's `/primary`, as Prometheus
    /// and a load balancer would, until cancelled.
    private func observe(_ cluster: PGClusterFixture) async {
        var round = 0
        while !Task.isCancelled {
            if round % (scrapeSeconds / 2 == 0 ? 1 : scrapeSeconds / 2) == 0 {
                for id in [NodeID(1), 2, 3] {
                    if let port = cluster.witnesses.metricsPort(of: id) { _ = try? await onOwnThread { try httpRequest(host: "127.0.0.1", port: port, path: "/metrics") } }
                }
                for id in cluster.ids { _ = try? await onOwnThread { try cluster.http(id, "/metrics") } }
            }
            for id in cluster.ids { _ = try? await onOwnThread { try cluster.http(id, "/primary") } }
            round += 1
            try? await Task.sleep(for: .seconds(2))
        }
    }

    private func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

    /// User and system CPU time of `pid`, in clock ticks (/proc/PID/stat fields 14 and 15).
    static func cpuTicks(_ pid: pid_t) -> Int {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, so utime (14) and stime (15) are 11 and 12 here.
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return 0 }
        return user + system
    }

    /// Resident and proportional set sizes of `pid`, in KiB (/proc/PID/smaps_rollup).
    static func memoryKiB(_ pid: pid_t) -> (rss: Int, pss: Int) {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Int {
            text.split(separator: "\n").first { $0.hasPrefix(name + ":") }.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) } ?? 0
        }
        return (field("Rss"), field("Pss"))
    }

    static func commandLine(_ pid: pid_t) -> String {
        let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data()
        return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
    }
}
