import EventLog

/// PostgreSQL parameters managed through the log (`pgquorum pg set`): every reader derives
/// the same values at the same index, and each node's manager writes them into a file of its
/// own that postgres includes (DESIGN §6, parameters).
public enum ManagedParameters {
    /// The parameters pgquorum sets itself, each with why an operator may not: a change to
    /// them would break replication, fencing, the log reader or the manager's own view.
    public static let owned: [String: String] = {
        var owned: [String: String] = [:]
        for name in ["listen_addresses", "port", "unix_socket_directories", "unix_socket_permissions", "unix_socket_group"] {
            owned[name] = "the node's address is registered in the log and set by `pgquorum node create`"
        }
        for name in [
            "wal_level", "wal_log_hints", "max_wal_senders", "max_replication_slots", "hot_standby", "hot_standby_feedback",
            "wal_receiver_status_interval", "wal_sender_timeout", "wal_receiver_timeout", "primary_conninfo", "primary_slot_name",
            "recovery_target_timeline", "promote_trigger_file",
        ] {
            owned[name] = "pgquorum configures replication, and failover and pg_rewind depend on it"
        }
        owned["synchronous_standby_names"] = "pgquorum derives it from the log (`pgquorum settings set number_sync_standbys`, `node set … replication-quorum`)"
        owned["default_transaction_read_only"] = "pgquorum uses it to fence an old primary"
        owned["max_slot_wal_keep_size"] = "it is a formation setting: `pgquorum settings set max_slot_wal_keep_size SIZE`"
        for name in ["ssl", "ssl_cert_file", "ssl_key_file", "ssl_ca_file", "password_encryption"] {
            owned[name] = "pgquorum sets up TLS and the replication role's password (`pgquorum pki`)"
        }
        for name in ["logging_collector", "log_directory", "log_filename", "log_rotation_age", "log_rotation_size", "log_truncate_on_rotation"] {
            owned[name] = "the manager reads the server log where it puts it (`pgquorum node logs`)"
        }
        for name in ["cluster_name"] { owned[name] = "it names the node in its replication connections" }
        for name in ["data_directory", "config_file", "hba_file", "ident_file", "include", "include_if_exists", "include_dir"] {
            owned[name] = "the node's files are where `pgquorum node create` put them"
        }
        return owned
    }()

    /// Values of `synchronous_commit` with which a commit would be acknowledged before a
    /// synchronous standby flushed it: a failover could then lose it.
    public static let unsafeSynchronousCommit: Set<String> = ["off", "local", "remote_write", "false", "no", "0"]

    /// Why `name = value` may not be managed through the log, or nil when it may. Names are
    /// case-insensitive, as postgres treats them.
    public static func refusal(name: String, value: String?) -> String? {
        let name = name.lowercased()
        if let reason = owned[name] { return "\(name) is set by pgquorum: \(reason)" }
        if name == "synchronous_commit", let value, unsafeSynchronousCommit.contains(value.lowercased()) {
            return "synchronous_commit = \(value) acknowledges commits no synchronous standby flushed; a failover would lose them (use on or remote_apply)"
        }
        return nil
    }
}

extension ClusterState {
    /// The parameters `node`'s postgres runs with through the log: the formation's, then its
    /// own on top.
    public func parameters(for node: PGNodeID) -> [String: String] {
        parameters.merging(nodes[node]?.parameters ?? [:]) { $1 }
    }

    /// `pgquorum pg set|reset NAME [VALUE] [--node N]`. The value was checked by the CLI
    /// against the server's own rules; what only the log can know (a parameter pgquorum owns,
    /// an unknown node) is checked here too, so that no client can get it past.
    mutating func setParameter(_ name: String, to value: String?, node id: PGNodeID?) {
        let name = name.lowercased()
        if let reason = ManagedParameters.refusal(name: name, value: value) {
            waitingReason = "parameter change refused: \(reason)"
            return
        }
        if let id {
            guard nodes[id] != nil else {
                waitingReason = "parameter change ignored: node \(id) is not registered"
                return
            }
            let current = nodes[id]!.parameters
            guard value == nil || current[name] != nil || current.count < parametersMax else {
                waitingReason = "parameter change refused: node \(id) already has \(parametersMax) parameters"
                return
            }
            nodes.update(id) { $0.parameters[name] = value }
        } else {
            guard value == nil || parameters[name] != nil || parameters.count < parametersMax else {
                waitingReason = "parameter change refused: the formation already has \(parametersMax) parameters"
                return
            }
            parameters[name] = value
        }
        waitingReason = nil
    }
}
