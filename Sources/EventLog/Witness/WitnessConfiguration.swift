import Raft

/// What the witness replicates besides the log: the state it snapshots when it compacts.
/// The witness calls it only from its Raft thread, in log order.
public protocol WitnessApplication: AnyObject {
    /// Applies one committed event (Raft's own entries are not passed).
    func apply(_ entry: LogEntry)
    /// The state after the last applied entry, serialized.
    func snapshotData() -> [UInt8]
    /// Replaces the state with a snapshot's (on start and when the leader sends one).
    func restore(from data: [UInt8]) throws
    /// The log time (`LogStamp.leaderClockNanos`) after the last applied entry at which the
    /// passage of time alone changes a decision (a node becoming unhealthy, say), if any: the
    /// leader then appends a tick at once instead of at its next tick interval. A tick decides
    /// nothing by itself, so a deadline that is wrong (from an earlier term's clock) costs one
    /// entry, never a decision.
    func nextDeadlineNanos() -> UInt64?
    /// The name node `node` of `formation` is registered with after the last applied entry;
    /// nil when no such node is registered. A node's certificate speaks for that name only
    /// (`WitnessAccess`).
    func registeredNodeName(formation: String, node: UInt32) -> String?
    /// How often the leader should flush the nodes' coalesced reports, if more often than its
    /// sequencer tick: the shortest heartbeat interval the applied settings ask of a node. A
    /// heartbeat held back longer than its interval would age the lease it renews.
    func reportFlushIntervalMillis() -> UInt32?
}

extension WitnessApplication {
    public func nextDeadlineNanos() -> UInt64? { nil }
    public func registeredNodeName(formation: String, node: UInt32) -> String? { nil }
    public func reportFlushIntervalMillis() -> UInt32? { nil }
}

/// A `host:port` address of a witness.
public struct WitnessEndpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (`[v6]:port` for IPv6 literals).
    public init(parsing text: String) throws(WitnessConfigurationError) {
        guard let colon = text.lastIndex(of: ":") else { throw .invalid("address \"\(text)\" has no :PORT") }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw .invalid("address \"\(text)\" has no host") }
        guard let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port) else {
            throw .invalid("address \"\(text)\" has no valid port (1-65535)")
        }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(Character(":")) ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses `1=HOST:PORT,2=HOST:PORT,…`.
    public static func parsePeers(_ text: String) throws(WitnessConfigurationError) -> [NodeID: WitnessEndpoint] {
        var peers: [NodeID: WitnessEndpoint] = [:]
        for item in text.split(separator: ",") {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let id = NodeID(parts[0].trimmingSpaces()), id != 0 else {
                throw .invalid("peer \"\(item)\" is not ID=HOST:PORT with a positive ID")
            }
            guard peers[id] == nil else { throw .invalid("witness \(id) is listed twice in --peers") }
            peers[id] = try WitnessEndpoint(parsing: String(parts[1]).trimmingSpaces())
        }
        return peers
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

public struct WitnessConfigurationError: Error, Equatable, CustomStringConvertible {
    public var description: String
    static func invalid(_ text: String) -> Self { Self(description: text) }
}

/// How one witness runs. Durations are in milliseconds.
public struct WitnessConfiguration: Sendable {
    public var id: NodeID
    public var dataDirectory: String
    public var listen: WitnessEndpoint
    /// The addresses of the witnesses, this one included; the log's address book wins over
    /// these once it names a witness (after `witness add|replace`).
    public var peers: [NodeID: WitnessEndpoint]
    public var credentials: WitnessCredentials
    /// Start without bootstrapping a cluster: wait to be added by `witness add`.
    public var join = false
    /// One Raft tick. Elections start after `electionTicks` to twice that without a leader
    /// (800 ms to 1.6 s by default). A witness wakes only for the ticks that act (heartbeats,
    /// flushes, election timeouts), and deadlines of the cluster state have timers of their
    /// own; reports are flushed every heartbeat interval of the formation (in whole ticks,
    /// rounded down).
    public var tickMillis = 100
    public var electionTicks = 8
    /// The leader's heartbeats: every 200 ms by default, four to an election timeout. Appends
    /// go out as they come (one sent to a follower since its last heartbeat stands in for the
    /// next), and a read that must be confirmed now sends a heartbeat of its own; the regular
    /// ones only keep followers from starting elections and carry the streams' periodic
    /// confirmations, so more would cost an idle cluster wakeups for nothing.
    public var heartbeatTicks = 2
    /// How often the leader flushes coalesced node reports (or every heartbeat interval of the
    /// log's settings, if shorter), or appends a tick when idle.
    public var sequencerTickMillis = 500
    /// A snapshot is taken every this many applied entries…
    public var snapshotEntries: UInt64 = 20_000
    /// …and the log compacted up to it once this many more entries were applied, so a
    /// follower a little behind still catches up from the log.
    public var keepEntries: UInt64 = 2_000
    /// A connection whose other side does not read for this long is closed.
    public var stallTimeoutMillis = 10_000
    public var handshakeTimeoutMillis = 5_000
    /// LMDB's map size limit.
    public var mapSizeMaxBytes = 8 << 30

    public init(id: NodeID, dataDirectory: String, listen: WitnessEndpoint, peers: [NodeID: WitnessEndpoint], credentials: WitnessCredentials) {
        self.id = id
        self.dataDirectory = dataDirectory
        self.listen = listen
        self.peers = peers
        self.credentials = credentials
    }

    public func validate() throws(WitnessConfigurationError) {
        guard id != 0 else { throw .invalid("--id must be positive") }
        guard !credentials.clusterID.isEmpty else { throw .invalid("the cluster id is empty") }
        if !join {
            guard peers[id] != nil else { throw .invalid("--peers does not name this witness (\(id)); add \(id)=\(listen)") }
        }
        guard peers.count <= EventRecord.witnessesMax else { throw .invalid("at most \(EventRecord.witnessesMax) witnesses") }
        guard tickMillis > 0, heartbeatTicks > 0, electionTicks > heartbeatTicks, sequencerTickMillis >= tickMillis else {
            throw .invalid("timing: need tick > 0, election ticks > heartbeat ticks > 0, sequencer tick >= tick")
        }
        guard snapshotEntries > 0 else { throw .invalid("snapshot entries must be positive") }
    }
}
