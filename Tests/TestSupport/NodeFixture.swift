import Foundation
import NodeControl

/// A `PostgresNode` in its own temporary folder on a free port, for NodeControl tests.
/// `destroy()` stops postgres (by pid) and removes the folder.
public final class NodeFixture: @unchecked Sendable {
    // Safety of @unchecked Sendable: every property is immutable.
    public let folder: TemporaryDirectory
    public let node: PostgresNode
    public let name: String

    /// The replication password every fixture of a test shares.
    public static let password = "test-password-\(UInt32.random(in: 0...UInt32.max))"

    public init(name: String, port: Int? = nil, tls: PostgresTLS? = nil) throws {
        self.name = name
        folder = try TemporaryDirectory(prefix: "pgquorum-\(name)")
        var configuration = PostgresNodeConfiguration(
            dataDirectory: folder.appending("data"), runDirectory: folder.appending("run"), port: try port ?? FreePort.next(),
            applicationName: name)
        // Tests need no crash safety from postgres, and fsync slows them down.
        configuration.extraSettings = ["fsync": "off", "synchronous_commit": "on", "full_page_writes": "on"]
        configuration.startTimeout = .seconds(30)
        configuration.stopTimeout = .seconds(20)
        configuration.peerConnectTimeoutSeconds = 2
        configuration.tls = tls
        node = try PostgresNode(configuration)
        try node.writeReplicationPassword(Self.password)
    }

    public var source: ReplicationSource { ReplicationSource(host: "127.0.0.1", port: node.configuration.port) }

    /// initdb, start, and create the replication role: a running primary.
    public func startPrimary() async throws {
        let node = node
        try await blocking { () throws(NodeControlError) in try node.initialize(peers: ["127.0.0.1"]) }
        try await node.start()
        try await blocking { () throws(NodeControlError) in try node.createReplicationRole(password: Self.password) }
    }

    public func destroy() async {
        await node.stop(.immediate)
        folder.remove()
    }

    /// Runs one SQL statement on the node and returns the first column of the first row.
    @discardableResult
    public func sql(_ statement: String, _ parameters: [String?] = []) throws -> String? {
        let connection = try node.connect("test query")
        defer { connection.close() }
        return try connection.query(statement, parameters).rows.first?.first ?? nil
    }
}

/// Waits until `condition` holds, polling, or fails after `timeout` with `message`.
public func waitUntil(
    _ message: @autoclosure () -> String, timeout: Duration = .seconds(30), _ condition: () throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while true {
        if (try? condition()) == true { return }
        if clock.now >= deadline { throw TestSupportError("timed out after \(timeout): \(message())") }
        try await Task.sleep(for: .milliseconds(50))
    }
}
