import EventLog
import Foundation
import Manager
import NodeControl
import Synchronization

/// A whole cluster of real processes: three witnesses and N `pgquorum node run` managers,
/// each with its postgres (fsync off: tests need no crash safety from the disk). On loopback,
/// or given a `NetworkLab`, one witness and one node per lab host (node N on host N − 1,
/// wrapping), clients on the test process's own lab address. Every process is stopped by pid
/// in `destroy()`.
public final class PGClusterFixture: Sendable {
    public let witnesses: WitnessClusterFixture
    public let nodeCount: Int
    /// The lab the cluster runs in, if any.
    public let lab: NetworkLab?
    /// More `node create` arguments for some nodes (a candidate priority, --async…).
    public let nodeArguments: [PGNodeID: [String]]
    private let executable: String
    private let state = Mutex<[PGNodeID: Node]>([:])

    struct Node {
        var directory: String
        var port: Int
        /// Where its manager's HTTP endpoints listen.
        var httpPort: Int
        var manager: ChildProcess?
    }

    /// Nodes registered by their lab host's name rather than its address.
    public let registeredByName: Set<PGNodeID>

    /// The formation its nodes belong to.
    public let formation: String
    /// Whether the witnesses are another fixture's too (not started or destroyed by this one).
    private let sharesWitnesses: Bool

    /// `sharedWitnesses`: run the nodes on witnesses another cluster (formation) also uses.
    public init(
        nodes: Int = 3, nodeArguments: [PGNodeID: [String]] = [:], lab: NetworkLab? = nil, registeredByName: Set<PGNodeID> = [], witnessMetrics: Bool = false,
        formation: String = EventRecord.defaultFormation, sharedWitnesses: WitnessClusterFixture? = nil
    ) throws {
        precondition(lab != nil || registeredByName.isEmpty, "only lab hosts have names")
        self.registeredByName = registeredByName
        self.formation = formation
        sharesWitnesses = sharedWitnesses != nil
        witnesses = try sharedWitnesses ?? WitnessClusterFixture(lab: lab, metrics: witnessMetrics)
        self.lab = lab
        nodeCount = nodes
        self.nodeArguments = nodeArguments
        executable = try BuiltProducts.path(of: "pgquorum")
        var table: [PGNodeID: Node] = [:]
        for id in 1...PGNodeID(nodes) {
            let name = formation == EventRecord.defaultFormation ? "node-\(id)" : "\(formation)-node-\(id)"
            table[id] = Node(directory: witnesses.folder.appending(name), port: try FreePort.next(), httpPort: try FreePort.next())
        }
        state.withLock { $0 = table }
    }

    public var ids: [PGNodeID] { (1...PGNodeID(nodeCount)).map { $0 } }

    public func port(of id: PGNodeID) -> Int { state.withLock { $0[id]!.port } }

    /// The port of node `id`'s HTTP endpoints (on its address).
    public func httpPort(of id: PGNodeID) -> Int { state.withLock { $0[id]!.httpPort } }

    /// `METHOD path` against node `id`'s HTTP endpoints, from the test process.
    public func http(_ id: PGNodeID, _ path: String, method: String = "GET") throws -> HTTPAnswer {
        try httpRequest(host: address(of: id), port: httpPort(of: id), method: method, path: path)
    }

    /// Node `id`'s manager's `/metrics`, parsed.
    public func metrics(of id: PGNodeID) async throws -> PrometheusText {
        let answer = try await onOwnThread { try self.http(id, "/metrics") }
        guard answer.status == 200 else { throw TestSupportError("GET /metrics of node \(id): \(answer.status) \(answer.body)") }
        return try PrometheusText(answer.body)
    }

    public func directory(of id: PGNodeID) -> String { state.withLock { $0[id]!.directory } }

    public func logPath(of id: PGNodeID) -> String {
        witnesses.folder.appending(formation == EventRecord.defaultFormation ? "node-\(id).log" : "\(formation)-node-\(id).log")
    }

    /// The lab host node `id` runs on, if the cluster is in a lab.
    public func host(of id: PGNodeID) -> NetworkLab.Host? { lab.map { $0.hosts[(Int(id) - 1) % $0.hosts.count] } }

    /// The address node `id`'s postgres listens on.
    public func address(of id: PGNodeID) -> String { host(of: id)?.address ?? "127.0.0.1" }

    /// Runs `executable` on node `id`'s host (its lab namespace, or here).
    private func commandLine(on id: PGNodeID, _ executable: String, _ arguments: [String]) -> (String, [String]) {
        guard let lab, let host = host(of: id) else { return (executable, arguments) }
        return lab.command(on: host, executable, arguments)
    }

    /// Starts the witnesses, then creates and starts every node, the first one alone until it
    /// is the primary; returns once one primary and N-1 secondaries have converged.
    public func start() async throws {
        if !sharesWitnesses { try witnesses.startAll() }
        _ = try await witnesses.waitForLeader()
        for id in ids {
            try await create(id)
            try startManager(id)
            if id == 1 { _ = try await waitFor("node 1 becomes the primary", timeout: .seconds(60)) { $0[1]?.reached == .single } }
        }
        _ = try await waitForHealthy(timeout: .seconds(120))
    }

    /// `pgquorum node create` for node `id`, on its host: it registers with the witnesses.
    public func create(_ id: PGNodeID) async throws {
        let clients = lab?.network ?? "127.0.0.1/32"
        let arguments =
            [
                "node", "create", "--dir", directory(of: id), "--formation", formation, "--name", "node\(id)", "--host",
                registeredByName.contains(id) ? host(of: id)!.name : address(of: id), "--port",
                "\(port(of: id))", "--postgres-settings", "fsync=off", "--client-networks", clients, "--client-auth", "trust",
                "--http", "\(address(of: id)):\(httpPort(of: id))",
            ] + (nodeArguments[id] ?? []) + ["--witnesses", witnesses.endpoints.map(\.description).joined(separator: ","),
                "--credentials", try witnesses.nodeCredentialsPath("node\(id)", hosts: [address(of: id)] + (host(of: id).map { [$0.name] } ?? []))]
        let (program, fullArguments) = commandLine(on: id, executable, arguments)
        let result = try await onOwnThread { try runCommand(program, fullArguments, timeout: .seconds(60), check: false) }
        guard result.termination == .exited(code: 0) else { throw TestSupportError("node create \(id) failed: \(result.output)") }
        // Created one after the other, the nodes get ids 1, 2, 3… from the formation.
        guard result.output.hasPrefix("node \(id) (node\(id)) registered") else {
            throw TestSupportError("node create was expected to assign id \(id): \(result.output)")
        }
    }

    /// Waits until one node is primary and every other one secondary, all converged.
    @discardableResult
    public func waitForHealthy(timeout: Duration = .seconds(60)) async throws -> ClusterState {
        try await waitFor("one primary and \(nodeCount - 1) secondaries", timeout: timeout) { state in
            let reached = state.sortedNodes.map(\.reached)
            return state.sortedNodes.count == self.nodeCount && state.sortedNodes.allSatisfy(\.isConverged)
                && reached.filter { $0 == .primary }.count == 1 && reached.filter { $0 == .secondary }.count == self.nodeCount - 1
        }
    }

    /// Starts node `id`'s manager (`environment`: variables added to the test's, not in a lab).
    public func startManager(_ id: PGNodeID, environment: [String: String] = [:]) throws {
        let arguments = ["node", "run", "--dir", directory(of: id)]
        let process: ChildProcess
        if let lab, let host = host(of: id) {
            process = try lab.spawn(on: host, executable, arguments, output: .file(path: logPath(of: id)))
        } else {
            let merged = environment.isEmpty ? nil : ProcessInfo.processInfo.environment.merging(environment) { $1 }
            process = try ChildProcess.spawn(executable, arguments, environment: merged, output: .file(path: logPath(of: id)), parentDeathSignal: "KILL")
        }
        state.withLock { $0[id]!.manager = process }
    }

    /// SIGKILL of the manager; its postgres dies with it (parent-death signal).
    public func killManager(_ id: PGNodeID) async {
        guard let process = state.withLock({ $0[id]!.manager }) else { return }
        state.withLock { $0[id]!.manager = nil }
        _ = await process.stop(signal: SIGKILL, grace: .seconds(5))
    }

    public func isManagerRunning(_ id: PGNodeID) -> Bool { state.withLock { $0[id]!.manager }?.isRunning ?? false }

    /// The manager process of node `id`, if the fixture started one (running or ended).
    public func manager(of id: PGNodeID) -> ChildProcess? { state.withLock { $0[id]!.manager } }

    /// The postmaster's pid, from postmaster.pid.
    public func postgresPID(of id: PGNodeID) -> pid_t? {
        guard let text = try? String(contentsOfFile: directory(of: id) + "/data/postmaster.pid", encoding: .utf8),
            let first = text.split(separator: "\n").first, let pid = pid_t(first), kill(pid, 0) == 0
        else { return nil }
        return pid
    }

    public func client(timeout: Duration = .seconds(10)) -> WitnessClient {
        witnesses.client(timeout: timeout)
    }

    /// The state replayed from the log.
    public func clusterState() async throws -> ClusterState {
        // Generous: a test process that shares two cores with postgres, witnesses and managers
        // can be slow to read; this measures nothing.
        let client = self.client(timeout: .seconds(15))
        defer { client.close() }
        return try await ClusterLog.load(from: client, formation: formation)
    }

    public func waitFor(
        _ description: String, timeout: Duration = .seconds(60), _ condition: @escaping (ClusterState) -> Bool
    ) async throws -> ClusterState {
        let deadline = ContinuousClock.now + timeout
        var last: ClusterState?
        while ContinuousClock.now < deadline {
            if let state = try? await clusterState() {
                last = state
                if condition(state) { return state }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let table = last.map { state in
            state.sortedNodes.map { "node \($0.id): reached \($0.reached.rawValue) goal \($0.goal.rawValue) health \(state.healthWord($0))" }
                .joined(separator: "; ")
        }
        throw TestSupportError("timed out after \(timeout): \(description) (last state: \(table ?? "unknown"))")
    }

    /// The formation's multi-host URI, as `pgquorum show uri` prints it: TLS, checked against the cluster's CA.
    public func uri() async throws -> String { try await clusterState().connectionURI(caFile: witnesses.credentials.caFile) }

    /// Runs SQL on one node (trust from the client network) and returns the first column of
    /// each row.
    public func sql(on id: PGNodeID, _ statement: String) throws -> [String?] {
        var options = PostgresConnectionOptions(host: address(of: id), port: port(of: id), user: "postgres", database: "postgres")
        options.connectTimeoutSeconds = 3
        let connection = try PostgresConnection(options)
        defer { connection.close() }
        return try connection.query(statement).rows.map { $0.first ?? nil }
    }

    public func destroy() async {
        let managers = state.withLock { table in
            defer { for id in table.keys { table[id]!.manager = nil } }
            return table.values.compactMap(\.manager)
        }
        for manager in managers { _ = await manager.stop(signal: SIGKILL, grace: .seconds(5)) }
        // Postgres dies with its manager; wait for it so the folder can go.
        for id in ids {
            for _ in 0..<100 where postgresPID(of: id) != nil { try? await Task.sleep(for: .milliseconds(50)) }
        }
        if !sharesWitnesses { await witnesses.destroy() }
    }

    public func logs() -> String {
        witnesses.logs() + "\n"
            + ids.map { "--- node \($0)\n" + logTail((try? String(contentsOfFile: logPath(of: $0), encoding: .utf8)) ?? "", lines: 40) }
            .joined(separator: "\n")
    }
}

/// Runs `body` with a cluster and always destroys it; a failure carries the logs.
public func withPGCluster(
    nodes: Int = 3, nodeArguments: [PGNodeID: [String]] = [:], lab: NetworkLab? = nil, registeredByName: Set<PGNodeID> = [],
    witnessMetrics: Bool = false, _ body: (PGClusterFixture) async throws -> Void
) async throws {
    let cluster = try PGClusterFixture(nodes: nodes, nodeArguments: nodeArguments, lab: lab, registeredByName: registeredByName, witnessMetrics: witnessMetrics)
    do {
        try await cluster.start()
        try await body(cluster)
    } catch {
        let logs = cluster.logs()
        // PGQUORUM_KEEP_FAILED=1 leaves a failed cluster running for a look (stop it by hand).
        if ProcessInfo.processInfo.environment["PGQUORUM_KEEP_FAILED"] == "1" {
            throw TestSupportError("\(error)\nkept in \(cluster.witnesses.folder.path)\n\(logs)")
        }
        await cluster.destroy()
        throw TestSupportError("\(error)\n\(logs)")
    }
    await cluster.destroy()
}

/// A client that inserts rows 1, 2, 3… through the multi-host URI on a thread of its own,
/// reconnecting after errors; a row counts as acknowledged only when its COMMIT returned.
///
/// `cancelAfter` makes a writer that cancels a statement still running after that long, as
/// impatient clients and poolers do: a commit cancelled while it waits for the synchronous
/// standbys is acknowledged, committed locally only, with a WARNING (PostgreSQL's cancel
/// hazard; `statement_timeout` would not do it, it ends before the commit). `settings` are
/// sent at connection start (`synchronous_commit = local`: never wait for a standby).
/// `namespace` runs it inside a lab host (its sockets are that host's).
public final class RowWriter: Sendable {
    private let state = Mutex<(acknowledged: [Int], errors: [ContinuousClock.Instant], stop: Bool, times: [ContinuousClock.Instant])>(([], [], false, []))
    private let done = Mutex<Bool>(false)
    private let setupFailure = Mutex<String?>(nil)
    private let warnedCount = Mutex(0)
    /// The table it inserts into.
    public let table: String
    /// Why the writer could not start (it then writes nothing).
    public var failure: String? { setupFailure.withLock { $0 } }
    /// Acknowledged rows that came with the WARNING that the commit was cancelled while it
    /// waited for the standbys ("committed locally, but might not have been replicated").
    public var acknowledgedWithWarning: Int { warnedCount.withLock { $0 } }

    public init(
        uri: String, table: String = "acked", settings: [String: String] = [:], cancelAfter: Duration? = nil, namespace: String? = nil
    ) {
        self.table = table
        // The statement running now: its canceller and when it started.
        let running = Mutex<(canceller: PostgresCanceller?, since: ContinuousClock.Instant?)>((nil, nil))
        if let cancelAfter {
            Thread.detachNewThread { [self] in
                if let namespace { try? NetworkLab.enterNetwork(of: namespace) }
                while !done.withLock({ $0 }) {
                    let overdue = running.withLock { running -> PostgresCanceller? in
                        guard let since = running.since, ContinuousClock.now - since >= cancelAfter else { return nil }
                        running.since = nil
                        return running.canceller
                    }
                    overdue?.cancel()
                    Thread.sleep(forTimeInterval: 0.02)
                }
            }
        }
        Thread.detachNewThread { [self] in
            if let namespace {
                do { try NetworkLab.enterNetwork(of: namespace) } catch {
                    setupFailure.withLock { $0 = "\(error)" }
                    done.withLock { $0 = true }
                    return
                }
            }
            var next = 1
            var connection: PostgresConnection?
            while !state.withLock({ $0.stop }) {
                do {
                    if connection == nil {
                        var options = PostgresConnectionOptions(uri: uri, user: "postgres")
                        options.connectTimeoutSeconds = 2
                        options.settings = settings
                        connection = try PostgresConnection(options)
                        let canceller = connection!.canceller()
                        running.withLock { $0.canceller = canceller }
                    }
                    running.withLock { $0.since = ContinuousClock.now }
                    defer { running.withLock { $0.since = nil } }
                    _ = try connection!.query("INSERT INTO \(table) (id) VALUES ($1)", [String(next)])
                    if connection!.takeNotices().contains(where: { $0.contains("committed locally") }) { warnedCount.withLock { $0 += 1 } }
                    let id = next
                    state.withLock { state in
                        state.acknowledged.append(id)
                        state.times.append(ContinuousClock.now)
                    }
                    next += 1
                } catch {
                    connection?.close()
                    connection = nil
                    state.withLock { $0.errors.append(ContinuousClock.now) }
                    next += 1  // the failed row may or may not be there; it is not counted
                    Thread.sleep(forTimeInterval: 0.05)
                }
            }
            connection?.close()
            done.withLock { $0 = true }
        }
    }

    public var acknowledged: [Int] { state.withLock { $0.acknowledged } }
    public var count: Int { state.withLock { $0.acknowledged.count } }
    public var errors: Int { state.withLock { $0.errors.count } }

    /// Stops and waits for the writer thread.
    public func stop() async {
        state.withLock { $0.stop = true }
        while !done.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(20)) }
    }

    /// The first acknowledgment after `instant`, if any.
    public func firstAck(after instant: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        state.withLock { $0.times.first { $0 > instant } }
    }

    /// How long writes were unavailable after a fault at `fault`: until the first
    /// acknowledgment after the first error the fault caused (zero if none failed); nil while
    /// writes have not come back.
    public func outage(after fault: ContinuousClock.Instant) -> Duration? {
        state.withLock { state in
            guard let firstError = state.errors.first(where: { $0 > fault }) else {
                return state.times.contains { $0 > fault } ? .zero : nil
            }
            return state.times.first { $0 > firstError }.map { $0 - fault }
        }
    }

    /// How long writes were unavailable after a fault at `fault`, once things settled: until
    /// the first acknowledgment after the last error since the fault (zero without errors).
    /// A killed postmaster's backends may go on committing for a while before they notice.
    public func recovery(after fault: ContinuousClock.Instant) -> Duration? {
        state.withLock { state in
            guard let lastError = state.errors.last(where: { $0 > fault }) else { return .zero }
            return state.times.first { $0 > lastError }.map { $0 - fault }
        }
    }

    /// The longest time without an acknowledgment between `start` and `end`.
    public func longestGap(from start: ContinuousClock.Instant, to end: ContinuousClock.Instant) -> Duration {
        state.withLock { state in
            let inside = [start] + state.times.filter { $0 > start && $0 < end } + [end]
            return zip(inside, inside.dropFirst()).map { $1 - $0 }.max() ?? .zero
        }
    }
}
