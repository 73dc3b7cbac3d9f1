import Foundation
import EventLog

extension ClusterState {
    /// The name a node's walreceiver uses (`application_name`), as listed in
    /// `synchronous_standby_names`.
    public static func applicationName(of node: PGNodeID) -> String { "pgquorum_\(node)" }

    /// The name of the replication slot every other node keeps for `node` (its application
    /// name).
    public static func slotName(of node: PGNodeID) -> String { applicationName(of: node) }

    /// The node an application name belongs to (the inverse of `applicationName(of:)`).
    public static func node(ofApplicationName name: String) -> PGNodeID? {
        guard name.hasPrefix("pgquorum_"), let id = PGNodeID(name.dropFirst("pgquorum_".count)), id != 0 else { return nil }
        return id
    }

    /// `synchronous_standby_names` for `node` if it is the primary: `ANY k (…)` over the quorum
    /// standbys while its goal is primary (or apply_settings) and k ≥ 1; empty otherwise.
    public func synchronousStandbyNames(for node: PGNodeID) -> String {
        guard let record = nodes[node], [.primary, .applySettings].contains(record.goal), settings.numberSyncStandbys > 0 else { return "" }
        let names = quorumStandbys(excluding: node).map { Self.applicationName(of: $0.id) }
        guard !names.isEmpty else { return "" }
        return "ANY \(settings.numberSyncStandbys) (\(names.joined(separator: ", ")))"
    }

    /// How many quorum standbys must hold the primary's writes before it reports synchronous
    /// replication on (the wait of `enableSyncReplication`): the k in force, or, if larger, the
    /// k under which writes were acknowledged since the primary was promoted
    /// (`electionSyncStandbys`). Turning k down to 0 while a narrower quorum waits does not
    /// end the wait: the writes the departed standby held still need a holder.
    public var standbysToHoldWrites: Int { Int(max(settings.numberSyncStandbys, electionSyncStandbys)) }

    /// Where a standby streams from: the most advanced standby while it fast-forwards, the
    /// primary otherwise; nil when it should follow nobody (report_lsn, no primary).
    public func upstream(of node: PGNodeID) -> NodeRegistration? {
        guard let record = nodes[node] else { return nil }
        if record.goal == .fastForward { return fastForwardSource?.registration }
        guard [.catchingUp, .secondary, .joinSecondary, .waitMaintenance].contains(record.goal),
            let primary = primaryNode, primary.id != node, Self.writableGoals.contains(primary.goal)
        else { return nil }
        return primary.registration
    }

    /// The client connection string: every node, the one accepting writes found by libpq
    /// (`target_session_attrs=read-write`), with timeouts so that a client whose primary was
    /// cut off by the network gives up in seconds, not when the kernel does.
    ///
    /// With `caFile`, the URI asks for TLS with the server's certificate checked against that
    /// CA and its host name (`sslmode=verify-full`): every node serves TLS with a certificate of
    /// the cluster's CA naming the host it registered.
    public func connectionURI(database: String = "postgres", caFile: String? = nil) -> String {
        let hosts = sortedNodes.filter { $0.goal != .dropped }.map { node -> String in
            let host = node.registration.host.contains(":") ? "[\(node.registration.host)]" : node.registration.host
            return "\(host):\(node.registration.port)"
        }
        var parameters = [
            "target_session_attrs=read-write", "connect_timeout=2", "tcp_user_timeout=5000",
            "keepalives=1", "keepalives_idle=2", "keepalives_interval=1", "keepalives_count=3",
        ]
        if let caFile {
            let encoded = caFile.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "&=?#"))) ?? caFile
            parameters += ["sslmode=verify-full", "sslrootcert=\(encoded)"]
        }
        return "postgresql://\(hosts.joined(separator: ","))/\(database)?\(parameters.joined(separator: "&"))"
    }

    /// The WAL the primary's replication slot for `node` holds back, as the primary's last
    /// report says (`UInt64.max`: the slot lost its WAL); nil for the primary itself, or when
    /// the report has no slot for it.
    public func slotRetainedBytes(of node: NodeRecord) -> UInt64? {
        guard let primary = primaryNode, primary.id != node.id else { return nil }
        return primary.lastReport?.slots.first { $0.node == node.id }?.retainedBytes
    }

    /// Bytes of WAL `node` is behind the primary, as their last reports say: 0 for the primary,
    /// nil before the node's first report.
    public func lagBytes(of node: NodeRecord) -> UInt64? {
        guard node.lastReport != nil else { return nil }
        guard let primary = primaryNode, primary.id != node.id else { return 0 }
        return primary.lsn > node.lsn ? primary.lsn - node.lsn : 0
    }
}
