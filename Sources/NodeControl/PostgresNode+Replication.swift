import Synchronization
import Foundation

/// How far a pg_basebackup has come.
public struct CopyProgress: Sendable, Equatable {
    public var copiedBytes: UInt64
    public var totalBytes: UInt64
    public var percent: Int
}

/// What `rewind` did to bring the old primary back.
public enum RewindOutcome: Sendable, Equatable {
    /// pg_rewind replayed the new primary's history onto our data directory.
    case rewound
    /// pg_rewind could not work, so the data directory was cloned afresh; `reason` says why.
    case recloned(reason: String)
}

extension PostgresNode {
    /// The libpq connection string to `source` as the replication role; the password comes
    /// from the passfile, never from this string. With TLS, `verify-full` against the CA.
    func replicationConninfo(_ source: ReplicationSource, database: String? = nil) -> String {
        var parts = [
            "host=\(source.host)", "port=\(source.port)", "user=\(configuration.replicationUser)",
            "passfile=\(passfilePath)", "application_name=\(configuration.applicationName)",
            "connect_timeout=\(configuration.peerConnectTimeoutSeconds)", "keepalives_idle=5", "keepalives_interval=2",
            "keepalives_count=3",
            // The WAL receiver connects asynchronously, and libpq ignores connect_timeout
            // there: a connect begun while the path was cut would sit in SYN back-off for up to
            // two minutes. TCP_USER_TIMEOUT bounds the SYN retries too (and unacknowledged data).
            "tcp_user_timeout=\(configuration.peerConnectTimeoutSeconds * 1000)",
        ]
        // The other node proves it holds a certificate of the cluster's CA for the host it is
        // registered at; no password goes out before that.
        // It presents this node's certificate in turn: libpq would otherwise look for one in
        // the home folder, which may be root's (unreadable to the server user).
        if configuration.tls != nil {
            parts += ["sslmode=verify-full", "sslrootcert=\(tlsCAPath)", "sslcert=\(tlsCertificatePath)", "sslkey=\(tlsKeyPath)"]
        }
        if let database { parts.append("dbname=\(database)") }
        return parts.joined(separator: " ")
    }

    /// Clones `source` into our (missing or empty) data directory with pg_basebackup through
    /// the replication slot `slot`, reporting progress, then configures it as a standby of
    /// `source`. The copy goes to a side folder first, so a failure leaves no half cluster.
    public func basebackup(
        from source: ReplicationSource, slot: String?, progress: @escaping @Sendable (CopyProgress) -> Void = { _ in }
    ) throws(NodeControlError) {
        if isNonEmptyDirectory(dataDirectory) {
            throw .dataDirectoryNotEmpty(path: dataDirectory)
        }
        if let slot, !isSQLIdentifier(slot) { throw .invalidConfiguration("slot name \(slot) must be lower-case letters, digits and _") }
        try prepareRunDirectory()
        try writeTLSFiles()
        let staging = dataDirectory + ".pgquorum-basebackup"
        try removeItem(staging)
        try makeDirectory(staging, mode: 0o700)
        var arguments = ["-D", staging, "-d", replicationConninfo(source), "-X", "stream", "-c", "fast", "--progress", "--no-password"]
        if let slot { arguments += ["-S", slot] }
        let parser = ProgressParser(report: progress)
        do {
            try runServerProgram(
                "pg_basebackup", arguments, operation: "pg_basebackup from \(source)", timeout: configuration.copyTimeout,
                onOutput: { parser.consume($0) })
        } catch {
            try? removeItem(staging)
            throw error
        }
        try removeItem(dataDirectory)
        try moveItem(staging, to: dataDirectory)
        try resetCopiedState()
        try writeSettings()
        try configureStandby(upstream: source, slot: slot)
    }

    /// A clone (or a rewind) carries the source's `ALTER SYSTEM` settings and its server
    /// logs. The node keeps its own `ALTER SYSTEM` settings (saved by `saveOwnSettings` before
    /// its data directory was replaced; a node cloned for the first time takes the source's),
    /// without the ones pgquorum sets through `ALTER SYSTEM` itself
    /// (`alterSystemOwned`: the source's `synchronous_standby_names` above all). The source's
    /// log lines would read as this node's own (`upstreamLacksWAL`): they go.
    func resetCopiedState() throws(NodeControlError) {
        let autoFile = dataDirectory + "/postgresql.auto.conf"
        let own = fileExists(savedSettingsPath) ? try readFile(savedSettingsPath) : fileExists(autoFile) ? try readFile(autoFile) : ""
        try writeFile(autoFile, Self.withoutOwnedSettings(own), mode: 0o600)
        try removeItem(savedSettingsPath)
        try removeItem(logDirectory)
    }

    /// The settings pgquorum makes with `ALTER SYSTEM` itself: never carried from one node to
    /// another, never kept across a clone.
    public static let alterSystemOwned: Set<String> = ["synchronous_standby_names", "default_transaction_read_only"]

    /// Where the node's own `ALTER SYSTEM` settings wait while its data directory is replaced.
    var savedSettingsPath: String { configuration.runDirectory + "/postgresql.auto.conf.own" }

    /// Saves the node's own `ALTER SYSTEM` settings before its data directory is replaced
    /// (a clone or a rewind); `resetCopiedState` puts them back. Nothing to save: nothing
    /// happens (an earlier save that was not put back yet stays).
    public func saveOwnSettings() throws(NodeControlError) {
        let autoFile = dataDirectory + "/postgresql.auto.conf"
        guard fileExists(autoFile) else { return }
        try prepareRunDirectory()
        try writeFile(savedSettingsPath, try readFile(autoFile), mode: 0o600)
    }

    /// `postgresql.auto.conf` text without the lines of `alterSystemOwned` parameters.
    static func withoutOwnedSettings(_ text: String) -> String {
        let header = "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n"
        let kept = text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { return false }
            let name = trimmed.prefix { $0 != "=" && $0 != " " && $0 != "\t" }.lowercased()
            return !alterSystemOwned.contains(name)
        }
        return header + kept.map { $0 + "\n" }.joined()
    }

    /// Makes the data directory a standby of `upstream` (standby.signal, `primary_conninfo`,
    /// `primary_slot_name`, `recovery_target_timeline = latest`), or a standby without upstream
    /// when nil. A running postgres picks the change up by reload.
    public func configureStandby(upstream: ReplicationSource?, slot: String?) throws(NodeControlError) {
        var lines = [Self.standbySettingsHeader]
        if let upstream {
            lines.append("primary_conninfo = '\(escapeConfValue(replicationConninfo(upstream)))'")
            if let slot { lines.append("primary_slot_name = '\(escapeConfValue(slot))'") }
        }
        try writeFile(standbySettingsFile, lines.joined(separator: "\n") + "\n", mode: 0o600)
        try writeFile(dataDirectory + "/standby.signal", "", mode: 0o600)
        if isRunning { try reload() }
    }

    /// The standby settings file's first lines, the same for a primary: a
    /// `recovery_target_timeline` that came and went would leave a promoted postgres
    /// "pending restart" for a parameter nobody changed.
    static let standbySettingsHeader = "# Written by pgquorum: standby settings.\nrecovery_target_timeline = 'latest'"

    /// Removes the standby settings (after promotion, or for a primary).
    public func clearStandbySettings() throws(NodeControlError) {
        try writeFile(standbySettingsFile, Self.standbySettingsHeader + "\n", mode: 0o600)
        try removeItem(dataDirectory + "/standby.signal")
        if isRunning { try reload() }
    }

    /// Promotes a running standby and waits (up to `timeoutSeconds`) until it takes writes
    /// (`pg_promote`); a node that is already a primary is left alone.
    public func promote(timeoutSeconds: Int = 60) throws(NodeControlError) {
        let promoted = try withConnection("promote \(dataDirectory)") { connection throws(PostgresError) -> Bool in
            guard try connection.scalar("SELECT pg_is_in_recovery()") == "t" else { return true }
            return try connection.scalar("SELECT pg_promote(true, $1::int)", [String(timeoutSeconds)]) == "t"
        }
        guard promoted else { throw .promotionFailed(dataDirectory: dataDirectory, reason: "not promoted within \(timeoutSeconds) s") }
        try clearStandbySettings()
    }

    /// Sets `default_transaction_read_only` through ALTER SYSTEM and reload: new transactions
    /// are read-only (and `target_session_attrs=read-write` clients skip this node) while on.
    public func setReadOnly(_ readOnly: Bool) throws(NodeControlError) {
        try withConnection("set default_transaction_read_only on \(dataDirectory)") { connection throws(PostgresError) in
            try connection.query("ALTER SYSTEM SET default_transaction_read_only = \(readOnly ? "on" : "off")")
            try connection.query("SELECT pg_reload_conf()")
        }
    }

    /// Applies `synchronous_standby_names` through ALTER SYSTEM and reload.
    public func setSynchronousStandbyNames(_ value: String) throws(NodeControlError) {
        try withConnection("set synchronous_standby_names on \(dataDirectory)") { connection throws(PostgresError) in
            let statement = try connection.scalar("SELECT format('ALTER SYSTEM SET synchronous_standby_names = %L', $1::text)", [value]) ?? ""
            try connection.query(statement)
            try connection.query("SELECT pg_reload_conf()")
        }
    }

    public func checkpoint() throws(NodeControlError) {
        try withConnection("CHECKPOINT on \(dataDirectory)") { connection throws(PostgresError) in
            try connection.query("CHECKPOINT")
        }
    }

    /// Drops a replication slot that no WAL sender uses; a missing one is fine.
    public func dropSlot(_ name: String) throws(NodeControlError) {
        guard isSQLIdentifier(name) else { throw .invalidConfiguration("slot name \(name) must be lower-case letters, digits and _") }
        try withConnection("drop replication slot \(name)") { connection throws(PostgresError) in
            try connection.query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active", [name])
        }
    }

    /// Moves a slot forward to `lsn` (never back; on a standby, at most to what it replayed),
    /// so that it holds no WAL its node already has.
    public func advanceSlot(_ name: String, to lsn: UInt64) throws(NodeControlError) {
        try withConnection("advance replication slot \(name)") { connection throws(PostgresError) in
            try connection.query(
                """
                SELECT pg_replication_slot_advance(slot_name, least($2::pg_lsn,
                    CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END))
                FROM pg_replication_slots WHERE slot_name = $1 AND NOT active AND restart_lsn IS NOT NULL AND restart_lsn < $2::pg_lsn
                """,
                [name, LSNFormat.format(lsn)])
        }
    }

    /// Creates a physical replication slot that reserves WAL at once; an existing one is kept.
    public func createSlot(_ name: String) throws(NodeControlError) {
        guard isSQLIdentifier(name) else { throw .invalidConfiguration("slot name \(name) must be lower-case letters, digits and _") }
        try withConnection("create replication slot \(name)") { connection throws(PostgresError) in
            try connection.query(
                "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                [name])
        }
    }

    /// The names of this node's replication slots.
    public func slots() throws(NodeControlError) -> [String] {
        try withConnection("list replication slots") { connection throws(PostgresError) in
            try connection.query("SELECT slot_name FROM pg_replication_slots ORDER BY slot_name").rows.compactMap { $0[0] }
        }
    }

    /// Brings a stopped old primary back as a standby of `source`: pg_rewind, or — when
    /// rewind cannot work and `recloneOnFailure` — a fresh pg_basebackup through `slot`.
    public func rewind(
        from source: ReplicationSource, slot: String?, recloneOnFailure: Bool,
        progress: @escaping @Sendable (CopyProgress) -> Void = { _ in }
    ) async throws(NodeControlError) -> RewindOutcome {
        try requireDataDirectory()
        await stop(.fast)
        return try await blocking { () throws(NodeControlError) -> RewindOutcome in
            try self.rewindStopped(from: source, slot: slot, recloneOnFailure: recloneOnFailure, progress: progress)
        }
    }

    /// `rewind` once postgres is stopped: pg_rewind, or the clone that replaces it.
    private func rewindStopped(
        from source: ReplicationSource, slot: String?, recloneOnFailure: Bool, progress: @escaping @Sendable (CopyProgress) -> Void
    ) throws(NodeControlError) -> RewindOutcome {
        do {
            try writeTLSFiles()
            try saveOwnSettings()
            // pg_rewind flushes what it wrote to disk before it returns (a crash right after a
            // rewind must not leave a torn data directory), unless the node runs without fsync
            // anyway (tests).
            let noSync = configuration.extraSettings["fsync"] == "off" ? ["--no-sync"] : []
            try runServerProgram(
                "pg_rewind", ["-D", dataDirectory, "--source-server=\(replicationConninfo(source, database: "postgres"))"] + noSync,
                operation: "pg_rewind of \(dataDirectory) from \(source)", timeout: configuration.copyTimeout)
        } catch {
            guard recloneOnFailure else { throw .rewindFailed(dataDirectory: dataDirectory, reason: String(describing: error)) }
            let reason: String
            if case .commandFailed(_, .failed(_, _, let outputTail)) = error {
                reason = outputTail
            } else {
                reason = String(describing: error)
            }
            let aside = dataDirectory + ".pgquorum-old"
            try removeItem(aside)
            try moveItem(dataDirectory, to: aside)
            do {
                try basebackup(from: source, slot: slot, progress: progress)
            } catch {
                // Put the old data back rather than leave nothing.
                if !fileExists(dataDirectory) { try? moveItem(aside, to: dataDirectory) }
                throw error
            }
            try removeItem(aside)
            return .recloned(reason: reason)
        }
        try resetCopiedState()
        try writeSettings()
        try configureStandby(upstream: source, slot: slot)
        return .rewound
    }
}

/// Turns pg_basebackup's `--progress` lines ("12345/67890 kB (18%), 0/1 tablespace") into
/// `CopyProgress` reports.
final class ProgressParser: Sendable {
    private let report: @Sendable (CopyProgress) -> Void
    private let pending = Mutex("")

    init(report: @escaping @Sendable (CopyProgress) -> Void) {
        self.report = report
    }

    func consume(_ chunk: String) {
        let lines: [Substring] = pending.withLock { buffer in
            buffer += chunk
            let parts = buffer.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\r" || $0 == "\n" })
            buffer = String(parts.last ?? "")
            return Array(parts.dropLast())
        }
        for line in lines {
            if let progress = Self.parse(line) { report(progress) }
        }
    }

    static func parse(_ line: Substring) -> CopyProgress? {
        // "<copied>/<total> kB (<percent>%)"
        guard let slash = line.firstIndex(of: "/"), let kilobytes = line.range(of: " kB ("),
            let percentEnd = line.range(of: "%)")
        else { return nil }
        let copiedText = line[..<slash].trimmingCharacters(in: .whitespaces)
        let totalText = line[line.index(after: slash)..<kilobytes.lowerBound]
        let percentText = line[kilobytes.upperBound..<percentEnd.lowerBound]
        guard let copied = UInt64(copiedText), let total = UInt64(totalText), let percent = Int(percentText) else { return nil }
        return CopyProgress(copiedBytes: copied * 1024, totalBytes: total * 1024, percent: percent)
    }
}
