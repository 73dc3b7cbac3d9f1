import ArgumentParser
import Dispatch
import EventLog
import Foundation
import Manager
import NodeControl
import Synchronization

/// `pgquorum demo`: a whole cluster on loopback — three witnesses and three PostgreSQL nodes.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run a local cluster: three witnesses and three PostgreSQL nodes on loopback.",
        discussion: """
            Everything lives in one folder (a new one under /tmp, or --dir): the cluster's CA \
            and the certificates of the witnesses, the nodes and an operator (pki/), each \
            witness's log, each node's data directory and logs. Progress is printed while \
            the cluster forms; then the status table, the connection URI and the environment \
            lines that point the other commands (status, log, switchover…) at this cluster. \
            Ctrl-C stops every process cleanly (and removes the folder unless --dir was given).
            """
    )

    @Option(help: ArgumentHelp("The folder to run in (kept at exit).", valueName: "dir"))
    var dir: String?

    @Option(help: "Seconds to wait for the cluster to form.")
    var timeout: Double = 300

    func run() async throws {
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let folder = try dir.map { try prepare($0) } ?? makeTemporaryFolder()
        let processes = DemoProcesses()
        let (stops, stopSink) = AsyncStream<String>.makeStream()
        let signals = forwardStopSignals(to: stopSink) { $0 }
        defer { signals.forEach { $0.cancel() } }
        let starting = Task { try await start(executable: executable, folder: folder, processes: processes) }
        let watcher = Task {
            _ = await starting.result
            stopSink.yield("started")
        }
        var events = stops.makeAsyncIterator()
        var reason = await events.next() ?? "end"
        var failure: (any Error)?
        if reason == "started" {
            if case .failure(let error) = await starting.result {
                failure = error
            } else {
                reason = await events.next() ?? "end"
            }
        } else {
            starting.cancel()
            watcher.cancel()
        }
        print("\nstopping (\(failure.map { "\($0)" } ?? reason))…")
        await processes.stopAll()
        if dir == nil { try? FileManager.default.removeItem(atPath: folder) }
        print("stopped every process" + (dir == nil ? " and removed \(folder)" : "; the files stay in \(folder)"))
        if let failure { throw failure }
    }

    private func prepare(_ path: String) throws -> String {
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        try FileManager.default.createDirectory(atPath: absolute, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        chmod(absolute, 0o755)
        return absolute
    }

    private func makeTemporaryFolder() throws -> String {
        var template = Array("/tmp/pgquorum-demo-XXXXXX".utf8CString)
        guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw CommandFailure("cannot create a folder under /tmp: \(String(cString: strerror(errno)))")
        }
        let path = String(cString: created)
        chmod(path, 0o755)
        return path
    }

    private func start(executable: String, folder: String, processes: DemoProcesses) async throws {
        print("pgquorum demo in \(folder)")
        // The cluster's CA and a certificate for each witness, each node and the demo's
        // operator, as `pgquorum pki init` and `pki issue` make them.
        let pki = PKIDirectory(path: folder + "/pki")
        if !FileManager.default.fileExists(atPath: pki.clusterFile) { try PKIDirectory.create(at: pki.path) }
        let holders = (1...3).map { ClusterIdentity.witness(UInt64($0)) } + (try (1...3).map { try ClusterIdentity(role: .node, name: "node\($0)") })
        for identity in holders where !FileManager.default.fileExists(atPath: pki.credentialsFile(of: identity)) {
            try pki.issue(identity, hosts: ["127.0.0.1", "localhost"])
        }
        let operatorIdentity = try ClusterIdentity(role: .operator, name: "demo")
        let credentialsPath = pki.credentialsFile(of: operatorIdentity)
        if !FileManager.default.fileExists(atPath: credentialsPath) { try pki.issue(operatorIdentity) }
        let credentials = try WitnessCredentials.load(from: credentialsPath)
        print("  certificates for 3 witnesses, 3 nodes and operator demo in \(pki.path) (TLS on every witness connection)")
        let witnessPorts = try (1...3).map { _ in try freePort() }
        let witnesses = witnessPorts.map { "127.0.0.1:\($0)" }
        let peers = witnesses.enumerated().map { "\($0.offset + 1)=\($0.element)" }.joined(separator: ",")
        for id in 1...3 {
            try processes.spawn(
                executable,
                [
                    "witness", "run", "--id", "\(id)", "--data", "\(folder)/witness-\(id)", "--listen", witnesses[id - 1], "--peers", peers,
                    "--credentials", pki.credentialsFile(of: .witness(UInt64(id))),
                ], log: "\(folder)/witness-\(id).log")
        }
        print("  started 3 witnesses on \(witnesses.joined(separator: ", "))")
        let client = try WitnessClient(
            endpoints: try witnesses.map { try WitnessEndpoint(parsing: $0) }, credentials: credentials, requestTimeout: .seconds(30),
            logger: quietLogger())
        defer { client.close() }
        var leader: UInt64?
        while leader == nil {
            leader = try await client.status().leader
            if leader == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        print("  witness quorum ready (leader: witness \(leader!))")

        let nodePorts = try (1...3).map { _ in try freePort() }
        let httpPorts = try (1...3).map { _ in try freePort() }
        for id in 1...3 {
            let result = try runCommand(
                executable,
                [
                    "node", "create", "--dir", "\(folder)/node-\(id)", "--name", "node\(id)", "--host", "127.0.0.1",
                    "--port", "\(nodePorts[id - 1])", "--http", "127.0.0.1:\(httpPorts[id - 1])", "--witnesses", witnesses.joined(separator: ","),
                    "--credentials", pki.credentialsFile(of: try ClusterIdentity(role: .node, name: "node\(id)")),
                    "--client-networks", "127.0.0.1/32", "--client-auth", "trust",
                ], timeout: .seconds(60), check: false)
            guard result.termination == .exited(code: 0) else { throw CommandFailure("node create failed: \(result.output)") }
            try processes.spawn(executable, ["node", "run", "--dir", "\(folder)/node-\(id)"], log: "\(folder)/node-\(id).log")
            print("  started node\(id) on 127.0.0.1:\(nodePorts[id - 1]) (HTTP endpoints on 127.0.0.1:\(httpPorts[id - 1]): /primary, /replica, /health, /cluster)")
        }

        // Progress: each state a node reaches, until one primary and two secondaries.
        var seen: [PGNodeID: NodeState] = [:]
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        var state = ClusterState()
        while true {
            try Task.checkCancellation()
            state = try await ClusterLog.load(from: client)
            for node in state.sortedNodes where seen[node.id] != node.reached {
                seen[node.id] = node.reached
                print("  \(node.registration.name): \(node.reached.rawValue)")
            }
            let reached = state.sortedNodes.map(\.reached)
            if state.sortedNodes.allSatisfy(\.isConverged), reached.filter({ $0 == .primary }).count == 1,
                reached.filter({ $0 == .secondary }).count == 2
            {
                break
            }
            guard ContinuousClock.now < deadline else {
                throw CommandFailure("the cluster did not form within \(Int(timeout)) s; see the logs in \(folder)")
            }
            try await Task.sleep(for: .milliseconds(300))
        }
        print("\n" + ClusterView.statusTable(state))
        let uri = state.connectionURI(caFile: credentials.caFile)
        print("\nconnection URI (TLS; clients from 127.0.0.1 connect as any role without a password):\n  \(uri)")
        print("  for example: psql '\(uri)' -U postgres")
        print("\nto use the other commands on this cluster:")
        print("  export PGQUORUM_WITNESSES=\(witnesses.joined(separator: ","))")
        print("  export PGQUORUM_CREDENTIALS=\(credentialsPath)")
        print("  \(executable) status    # also: log, show uri, switchover, maintenance, --help")
        print("\nrunning; press Ctrl-C to stop")
        fflush(nil)
    }

    private func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw CommandFailure("no free port on 127.0.0.1") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// The demo's child processes, stopped in reverse order (nodes, then witnesses) by pid. Each
/// receives SIGTERM when the demo ends in any other way (SIGKILL included), so none outlives it.
final class DemoProcesses: Sendable {
    private let children = Mutex<[ChildProcess]>([])

    func spawn(_ executable: String, _ arguments: [String], log: String) throws {
        let child = try ChildProcess.spawn(executable, arguments, output: .file(path: log), parentDeathSignal: "TERM")
        children.withLock { $0.append(child) }
    }

    func stopAll() async {
        let all = children.withLock { children in
            defer { children = [] }
            return children
        }
        for child in all.reversed() { _ = await child.stop(signal: SIGTERM, grace: .seconds(30)) }
    }
}
