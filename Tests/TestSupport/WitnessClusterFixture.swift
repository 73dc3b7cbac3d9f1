import EventLog
import Foundation
import NodeControl
import Raft
import Synchronization

/// Real `pgquorum witness run` processes on loopback (or, given a `NetworkLab`, witness N on the
/// lab's host N − 1), in a temporary folder, each with its own free port. Every process is
/// stopped by pid in `destroy()`.
public final class WitnessClusterFixture: Sendable {
    public let folder: TemporaryDirectory
    /// The cluster's PKI (`pgquorum pki init`): witnesses and nodes get their certificates
    /// from it as they start.
    public let pki: PKIDirectory
    /// The credentials of operator `test`, which the fixture's clients and CLI calls use.
    public let credentialsPath: String
    public let credentials: WitnessCredentials
    /// Extra arguments for every `witness run` (timing, snapshot settings).
    public let extraArguments: [String]
    /// The lab whose hosts the witnesses run on, if any.
    public let lab: NetworkLab?
    private let executable: String
    private let state: Mutex<State>

    private struct State {
        var ports: [NodeID: Int] = [:]
        /// The ports of the witnesses' metrics endpoints, when the fixture serves them.
        var metricsPorts: [NodeID: Int] = [:]
        var initialMembers: [NodeID] = []
        var processes: [NodeID: ChildProcess] = [:]
    }

    /// Whether every witness serves `--metrics` (on a port of its own: `metrics(of:)`).
    public let servesMetrics: Bool

    public init(witnesses: Int = 3, extraArguments: [String] = [], root: String = "/tmp", lab: NetworkLab? = nil, metrics: Bool = false) throws {
        servesMetrics = metrics
        precondition(lab.map { $0.hosts.count >= witnesses } ?? true, "the lab has fewer hosts than witnesses")
        self.lab = lab
        folder = try TemporaryDirectory(prefix: "pgquorum-witness", root: root)
        pki = try PKIDirectory.create(at: folder.appending("pki"))
        credentialsPath = try pki.issue(try ClusterIdentity(role: .operator, name: "test"))
        credentials = try WitnessCredentials.load(from: credentialsPath)
        self.extraArguments = extraArguments
        executable = try BuiltProducts.path(of: "pgquorum")
        var initial = State()
        for id in 1...NodeID(witnesses) {
            initial.ports[id] = try FreePort.next()
            initial.initialMembers.append(id)
        }
        state = Mutex(initial)
    }

    public func port(of id: NodeID) -> Int { state.withLock { $0.ports[id]! } }

    /// The lab host witness `id` runs on, if any.
    public func host(of id: NodeID) -> NetworkLab.Host? { lab?.hosts[Int(id) - 1] }

    public func endpoint(of id: NodeID) -> WitnessEndpoint { WitnessEndpoint(host: host(of: id)?.address ?? "127.0.0.1", port: port(of: id)) }

    /// The endpoints of the initial members, in id order.
    public var endpoints: [WitnessEndpoint] { state.withLock { $0.initialMembers }.map(endpoint(of:)) }

    public var peersArgument: String {
        state.withLock { $0.initialMembers }.map { "\($0)=\(endpoint(of: $0))" }.joined(separator: ",")
    }

    public func logPath(of id: NodeID) -> String { folder.appending("witness-\(id).log") }

    public func log(of id: NodeID) -> String { (try? String(contentsOfFile: logPath(of: id), encoding: .utf8)) ?? "" }

    /// Reserves a port for a witness that is not an initial member (to add or replace with).
    public func reserve(_ id: NodeID) throws -> WitnessEndpoint {
        let port = try FreePort.next()
        state.withLock { $0.ports[id] = port }
        return endpoint(of: id)
    }

    /// The credentials file of `identity`, issued on first use (with the hosts given then).
    public func credentialsPath(of identity: ClusterIdentity, hosts: [String] = []) throws -> String {
        let path = pki.credentialsFile(of: identity)
        if FileManager.default.fileExists(atPath: path) { return path }
        return try pki.issue(identity, hosts: hosts)
    }

    /// Node `name`'s credentials (with the replication password), issued on first use for
    /// `hosts` (the addresses and names its postgres is reached at).
    public func nodeCredentialsPath(_ name: String, hosts: [String] = ["127.0.0.1"]) throws -> String {
        try credentialsPath(of: try ClusterIdentity(role: .node, name: name), hosts: hosts)
    }

    /// Starts witness `id` (an initial member, or one reserved, with `join`).
    public func start(_ id: NodeID, join: Bool = false) throws {
        var arguments = [
            "witness", "run", "--id", "\(id)", "--data", folder.appending("witness-\(id)"), "--listen", "\(endpoint(of: id))",
            "--peers", peersArgument + (join ? ",\(id)=\(endpoint(of: id))" : ""),
            "--credentials", try credentialsPath(of: .witness(id), hosts: [endpoint(of: id).host]),
        ]
        if join { arguments.append("--join") }
        if servesMetrics {
            let port = try state.withLock { state in try state.metricsPorts[id] ?? FreePort.next() }
            state.withLock { $0.metricsPorts[id] = port }
            arguments += ["--metrics", "\(endpoint(of: id).host):\(port)"]
        }
        let process: ChildProcess
        if let lab, let host = host(of: id) {
            process = try lab.spawn(on: host, executable, arguments + extraArguments, output: .file(path: logPath(of: id)))
        } else {
            process = try ChildProcess.spawn(executable, arguments + extraArguments, output: .file(path: logPath(of: id)), parentDeathSignal: "KILL")
        }
        state.withLock { $0.processes[id] = process }
    }

    public func startAll() throws {
        for id in state.withLock({ $0.initialMembers }) { try start(id) }
    }

    /// The process id of witness `id`, while the fixture runs it.
    public func pid(of id: NodeID) -> pid_t? { state.withLock { $0.processes[id] }?.pid }

    public func isRunning(_ id: NodeID) -> Bool { state.withLock { $0.processes[id] }?.isRunning ?? false }

    /// Sends `signal` to witness `id` (SIGSTOP and SIGCONT freeze and thaw it). After SIGSTOP
    /// it returns once the process is stopped (at most a second): the signal is delivered
    /// asynchronously, and a witness that still answers a request sent right after it would
    /// not look hung to the client.
    public func signal(_ id: NodeID, _ signal: Int32) {
        guard let process = state.withLock({ $0.processes[id] }) else { return }
        process.send(signal)
        guard signal == SIGSTOP else { return }
        for _ in 0..<1_000 {
            // /proc/PID/stat: "PID (COMM) STATE …"; T is stopped.
            guard let stat = try? String(contentsOfFile: "/proc/\(process.pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return }
            if stat[stat.index(after: close)...].dropFirst().first == "T" { return }
            usleep(1_000)
        }
    }

    /// SIGKILL, then waits until the process is gone.
    public func kill(_ id: NodeID) async {
        guard let process = state.withLock({ $0.processes.removeValue(forKey: id) }) else { return }
        _ = await process.stop(signal: SIGKILL, grace: .seconds(5))
    }

    /// SIGTERM; returns how the process ended.
    @discardableResult
    public func stop(_ id: NodeID) async -> Termination? {
        guard let process = state.withLock({ $0.processes.removeValue(forKey: id) }) else { return nil }
        return await process.stop(signal: SIGTERM, grace: .seconds(10))
    }

    /// A client with operator `test`'s credentials (or `credentials`).
    public func client(_ endpoints: [WitnessEndpoint]? = nil, timeout: Duration = .seconds(15), credentials: WitnessCredentials? = nil) -> WitnessClient {
        // The fixture's own credentials were loaded once already: they load again.
        try! WitnessClient(endpoints: endpoints ?? self.endpoints, credentials: credentials ?? self.credentials, requestTimeout: timeout)
    }

    /// Waits until some witness reports itself leader, and returns its id.
    public func waitForLeader(among ids: [NodeID]? = nil, timeout: Duration = .seconds(30)) async throws -> NodeID {
        let ids = ids ?? state.withLock { $0.initialMembers }
        let deadline = ContinuousClock.now + timeout
        // One client per witness for the whole wait: its connection (and TLS handshake, slow
        // in a debug build on a loaded machine) is made once, not at every attempt.
        let clients = Dictionary(uniqueKeysWithValues: ids.map { ($0, self.client([endpoint(of: $0)], timeout: .seconds(6))) })
        defer { for client in clients.values { client.close() } }
        var last: [NodeID: String] = [:]
        while ContinuousClock.now < deadline {
            for id in ids where isRunning(id) {
                do {
                    let status = try await clients[id]!.status(of: endpoint(of: id))
                    if status.role == "leader" { return id }
                    last[id] = "\(status.role), term \(status.term)"
                } catch {
                    last[id] = "\(error)"
                }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let seen = ids.map { "witness \($0): \(last[$0] ?? (isRunning($0) ? "not asked" : "not running"))" }.joined(separator: "; ")
        throw TestSupportError("no witness became leader within \(timeout) (last answers: \(seen))")
    }

    /// The port of witness `id`'s metrics endpoint, once started with one.
    public func metricsPort(of id: NodeID) -> Int? { state.withLock { $0.metricsPorts[id] } }

    /// Witness `id`'s `/metrics`, parsed (the fixture must serve metrics).
    public func metrics(of id: NodeID) async throws -> PrometheusText {
        guard let port = metricsPort(of: id) else { throw TestSupportError("witness \(id) serves no metrics") }
        let host = endpoint(of: id).host
        let answer = try await onOwnThread { try httpRequest(host: host, port: port, path: "/metrics") }
        guard answer.status == 200 else { throw TestSupportError("GET /metrics of witness \(id): \(answer.status) \(answer.body)") }
        return try PrometheusText(answer.body)
    }

    /// The status of one witness.
    public func status(of id: NodeID) async throws -> WitnessStatus {
        let client = self.client([endpoint(of: id)], timeout: .seconds(5))
        defer { client.close() }
        return try await client.status(of: endpoint(of: id))
    }

    /// Every committed entry one witness holds from `from` on (it must not be compacted there):
    /// a linearizable read, or with `stale` what that witness applied, however old.
    public func entries(of id: NodeID, from: UInt64 = 1, stale: Bool = false) async throws -> [CommittedEntry] {
        let client = self.client([endpoint(of: id)], timeout: .seconds(5))
        defer { client.close() }
        var all: [CommittedEntry] = []
        var next = from
        while true {
            let batch = try await client.read(from: next, maxEntries: 10_000, stale: stale)
            guard let last = batch.last else { return all }
            all += batch
            next = last.index + 1
        }
    }

    /// Stops every witness still running (SIGKILL) and deletes the folder.
    public func destroy() async {
        let processes = state.withLock { state in
            defer { state.processes = [:] }
            return Array(state.processes.values)
        }
        for process in processes { _ = await process.stop(signal: SIGKILL, grace: .seconds(5)) }
        // The nodes of whole-cluster tests live in this folder too.
        SharedMemory.removeOrphans(under: folder.path)
        folder.remove()
    }

    /// The logs of every witness, for a failing test's message.
    public func logs() -> String {
        state.withLock { Array($0.ports.keys) }.sorted().map { "--- witness \($0)\n" + logTail(log(of: $0), lines: 30) }.joined(separator: "\n")
    }
}

/// Waits until the async `condition` holds, polling, or fails after `timeout` with `message`.
public func waitUntilAsync(
    _ message: @autoclosure () -> String, timeout: Duration = .seconds(30), _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        if (try? await condition()) == true { return }
        if ContinuousClock.now >= deadline { throw TestSupportError("timed out after \(timeout): \(message())") }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// Runs `body` with a witness cluster and always destroys it; a failure carries the logs.
public func withWitnessCluster(
    witnesses: Int = 3, extraArguments: [String] = [], lab: NetworkLab? = nil, metrics: Bool = false, _ body: (WitnessClusterFixture) async throws -> Void
) async throws {
    let cluster = try WitnessClusterFixture(witnesses: witnesses, extraArguments: extraArguments, lab: lab, metrics: metrics)
    do {
        try await body(cluster)
    } catch {
        let logs = cluster.logs()
        await cluster.destroy()
        throw TestSupportError("\(error)\nwitness logs:\n\(logs)")
    }
    await cluster.destroy()
}

/// The last `lines` lines of a process's log; when the process crashed, the crash's first
/// lines (the reason and the innermost frames) come first, since a backtrace is longer than
/// any tail.
public func logTail(_ text: String, lines: Int) -> String {
    let all = text.split(separator: "\n", omittingEmptySubsequences: true)
    guard let crash = all.firstIndex(where: { $0.contains("Fatal error") || $0.contains("Program crashed") }), crash < all.count - lines else {
        return all.suffix(lines).joined(separator: "\n")
    }
    let start = max(all.startIndex, crash - 3)
    return (all[start..<min(crash + 24, all.count)] + ["…"] + all.suffix(lines)).joined(separator: "\n")
}
