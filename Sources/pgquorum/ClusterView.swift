import EventLog
import Foundation
import Manager
import NodeControl

/// How the read commands print the derived cluster state, for people and as JSON.
enum ClusterView {
    static func lsn(_ value: UInt64) -> String { LSNFormat.format(value) }

    /// Bytes of WAL a node is behind the primary, as their last reports say.
    static func lag(_ node: NodeRecord, in state: ClusterState) -> String {
        state.lagBytes(of: node).map(String.init) ?? "-"
    }

    static func statusTable(_ state: ClusterState) -> String {
        let rows = state.sortedNodes.map { node -> [String] in
            [
                "\(node.id)", node.registration.name, "\(node.registration.host):\(node.registration.port)",
                "\(node.timeline):\(lsn(node.lsn))", node.reached.rawValue, node.goal.rawValue, state.healthWord(node),
                lag(node, in: state), state.slotRetainedBytes(of: node).map { $0 == .max ? "lost" : "\($0)" } ?? "-",
                "\(node.registration.candidatePriority)",
                node.registration.replicationQuorum ? "sync" : "async",
            ]
        }
        var text = formatTable(
            header: ["NODE", "NAME", "HOST:PORT", "TLI:LSN", "REACHED", "GOAL", "HEALTH", "LAG", "SLOT", "PRIORITY", "REPLICATION"], rows: rows)
        if rows.isEmpty { text = "no node registered in formation \(state.formation)" }
        for node in state.sortedNodes where !node.isConverged {
            text += "\nnode \(node.id) (\(node.registration.name)): \(node.reached.rawValue) -> \(node.goal.rawValue): \(node.goalReason)"
        }
        for node in state.sortedNodes where node.lastReport?.pendingRestart == true {
            text += "\nnode \(node.id) (\(node.registration.name)): pending restart: a changed parameter takes effect when postgres restarts (`pgquorum pg restart`)"
        }
        if let waiting = state.waitingReason { text += "\nwaiting: \(waiting)" }
        return text
    }

    static func statusJSON(_ state: ClusterState) -> String { JSONDocument.line(StatusDocument(state)) }

    static func settingsLines(_ settings: FormationSettings) -> [(key: String, value: String)] {
        SettingKey.allCases.map { ($0.rawValue, $0.display(settings)) }
    }
}

/// The formation settings an operator may change, with their valid ranges.
enum SettingKey: String, CaseIterable {
    case numberSyncStandbys = "number_sync_standbys"
    case strictSyncMode = "strict_sync_mode"
    case heartbeatInterval = "heartbeat_interval"
    case nodeUnhealthyTimeout = "node_unhealthy_timeout"
    case postgresRestartTimeout = "postgres_restart_timeout"
    case primaryLease = "primary_lease"
    case maxSlotWALKeepSize = "max_slot_wal_keep_size"

    /// Milliseconds allowed for a duration setting.
    var range: ClosedRange<UInt32>? {
        switch self {
        case .numberSyncStandbys, .strictSyncMode, .maxSlotWALKeepSize: return nil
        case .heartbeatInterval: return 100...60_000
        case .nodeUnhealthyTimeout: return 500...600_000
        case .postgresRestartTimeout: return 1_000...600_000
        case .primaryLease: return 200...600_000
        }
    }

    func display(_ settings: FormationSettings) -> String {
        switch self {
        case .numberSyncStandbys: return "\(settings.numberSyncStandbys)"
        case .strictSyncMode: return "\(settings.strictSyncMode)"
        case .heartbeatInterval: return "\(settings.heartbeatIntervalMillis)ms"
        case .nodeUnhealthyTimeout: return "\(settings.nodeUnhealthyTimeoutMillis)ms"
        case .postgresRestartTimeout: return "\(settings.postgresRestartTimeoutMillis)ms"
        case .primaryLease: return "\(settings.primaryLeaseMillis)ms"
        case .maxSlotWALKeepSize: return settings.maxSlotWALKeepSizeMB == 0 ? "unlimited" : "\(settings.maxSlotWALKeepSizeMB)MB"
        }
    }

    /// `settings` with this key set to `text`; errors say the valid values.
    func applying(_ text: String, to settings: FormationSettings, quorumStandbys: Int) throws -> FormationSettings {
        var updated = settings
        switch self {
        case .numberSyncStandbys:
            guard let value = UInt8(text), Int(value) <= quorumStandbys else {
                throw CommandFailure(
                    "\(rawValue) must be a whole number from 0 to \(quorumStandbys) (the formation has \(quorumStandbys) quorum standbys)")
            }
            updated.numberSyncStandbys = value
        case .strictSyncMode:
            switch text.lowercased() {
            case "true", "on", "yes", "1": updated.strictSyncMode = true
            case "false", "off", "no", "0": updated.strictSyncMode = false
            default: throw CommandFailure("\(rawValue) must be true or false")
            }
        case .maxSlotWALKeepSize:
            guard let megabytes = parseMegabytes(text) else {
                throw CommandFailure("\(rawValue) must be a size like 512MB, 4GB or 1TB (at most 4095TB), or unlimited")
            }
            updated.maxSlotWALKeepSizeMB = megabytes
        case .heartbeatInterval, .nodeUnhealthyTimeout, .postgresRestartTimeout, .primaryLease:
            let range = self.range!
            guard let millis = parseMillis(text), range.contains(millis) else {
                throw CommandFailure("\(rawValue) must be a duration from \(range.lowerBound)ms to \(range.upperBound)ms (for example 500ms or 2.5s)")
            }
            switch self {
            case .heartbeatInterval: updated.heartbeatIntervalMillis = millis
            case .nodeUnhealthyTimeout: updated.nodeUnhealthyTimeoutMillis = millis
            case .postgresRestartTimeout: updated.postgresRestartTimeoutMillis = millis
            default: updated.primaryLeaseMillis = millis
            }
        }
        do { try updated.validate() } catch { throw CommandFailure("refused: \(error)") }
        return updated
    }
}

/// `512MB`, `4GB`, `1TB` (a plain number is MB) as megabytes; `unlimited` (or -1, 0) as 0.
func parseMegabytes(_ text: String) -> UInt32? {
    let lowered = text.lowercased()
    if ["unlimited", "-1", "0"].contains(lowered) { return 0 }
    let units: [(suffix: String, factor: Double)] = [("mb", 1), ("gb", 1_024), ("tb", 1_048_576)]
    for unit in units where lowered.hasSuffix(unit.suffix) {
        guard let number = Double(lowered.dropLast(unit.suffix.count)), number > 0 else { return nil }
        let megabytes = (number * unit.factor).rounded()
        return megabytes >= 1 && megabytes < Double(UInt32.max) ? UInt32(megabytes) : nil
    }
    return UInt32(lowered).flatMap { $0 > 0 ? $0 : nil }
}

/// `500`, `500ms`, `2.5s`, `1m` as milliseconds.
func parseMillis(_ text: String) -> UInt32? {
    let units: [(suffix: String, factor: Double)] = [("ms", 1), ("s", 1_000), ("m", 60_000)]
    for unit in units where text.hasSuffix(unit.suffix) {
        guard let number = Double(text.dropLast(unit.suffix.count)), number >= 0 else { return nil }
        let millis = number * unit.factor
        return millis <= Double(UInt32.max) ? UInt32(millis) : nil
    }
    return UInt32(text)
}

/// `10m`, `2h`, `30s`, `1d` ago, or an ISO 8601 time, as milliseconds since 1970.
func parseTimeBound(_ text: String, now: Date = Date()) throws -> Int64 {
    let units: [(suffix: String, seconds: Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3_600), ("d", 86_400)]
    for unit in units where text.hasSuffix(unit.suffix) {
        if let number = Double(text.dropLast(unit.suffix.count)), number >= 0 {
            return Int64((now.timeIntervalSince1970 - number * unit.seconds) * 1000)
        }
    }
    let formatter = ISO8601DateFormatter()
    for options: ISO8601DateFormatter.Options in [[.withInternetDateTime, .withFractionalSeconds], [.withInternetDateTime]] {
        formatter.formatOptions = options
        if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
    }
    throw CommandFailure("\"\(text)\" is neither a duration like 10m, 2h, 30s nor a time like 2026-11-26T10:00:00Z")
}
