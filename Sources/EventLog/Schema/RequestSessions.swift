/// A client's identity for one request, so that a retried request is applied once (Raft thesis
/// §6.3). `client` is chosen at random by each client process; `sequence` counts its requests
/// from 1. A retry carries the same values. `firstOutstanding` is the lowest sequence number
/// the client still waits for (or gave up on) when it sent this one: everything below it was
/// answered, will never be retried, and may be forgotten.
public struct RequestID: Sendable, Hashable, CustomStringConvertible {
    public var client: UInt64
    public var sequence: UInt64
    public var firstOutstanding: UInt64

    public init(client: UInt64, sequence: UInt64, firstOutstanding: UInt64? = nil) {
        self.client = client
        self.sequence = sequence
        self.firstOutstanding = min(firstOutstanding ?? sequence, sequence)
    }

    public var description: String { "\(String(client, radix: 16))/\(sequence)" }
}

/// The requests applied lately, per client, as replicated state: every replica and every reader
/// that replays the log keeps the same table, so all agree on which entry is a duplicate. Time
/// is the entries' wall-time stamp, so expiry is deterministic too.
///
/// Each applied sequence number is remembered, with the index that applied it, until the
/// client says it no longer waits for it (`firstOutstanding` passed it), so requests in flight
/// together may apply in any order. A client with more than `windowMax` remembered requests has
/// its oldest forgotten. A sequence number at or below what was forgotten is not applied: its
/// client stopped waiting for it, and applying it late would surprise everyone.
public struct RequestSessions: Sendable, Equatable {
    public static let windowMax = 1_024
    public static let clientsMax = 4_096
    /// A client not heard from for this long (log wall time) is forgotten.
    public static let idleExpiryMillis: Int64 = 3_600_000

    public enum Admission: Sendable, Equatable {
        /// The first time: apply it.
        case new
        /// Applied before, at `index`: skip it.
        case duplicate(ofIndex: UInt64)
        /// Older than what the session remembers: skip it; its outcome is unknown.
        case expired
    }

    struct Session: Sendable, Equatable {
        /// Sequence number → the index that applied it, for those the client may still retry.
        var applied: [UInt64: UInt64] = [:]
        /// Every sequence number at or below this was answered or given up by its client.
        var floor: UInt64 = 0
        var lastSeenMillis: Int64
    }

    private(set) var sessions: [UInt64: Session] = [:]

    public init() {}

    /// What to do with the request `id` committed at `index`, stamped `wallTimeMillis`.
    /// Records it when it is new.
    public mutating func admit(_ id: RequestID, index: UInt64, wallTimeMillis: Int64) -> Admission {
        // A session idle for too long counts as gone, whether or not it was removed yet: the
        // answer depends on the log alone, never on when a replica happened to clean up.
        var session = sessions[id.client].flatMap { isExpired($0, nowMillis: wallTimeMillis) ? nil : $0 } ?? Session(lastSeenMillis: wallTimeMillis)
        session.lastSeenMillis = max(session.lastSeenMillis, wallTimeMillis)
        if sessions[id.client] == nil && sessions.count >= Self.clientsMax { makeRoom(nowMillis: wallTimeMillis) }
        defer { sessions[id.client] = session }
        if let original = session.applied[id.sequence] { return .duplicate(ofIndex: original) }
        if id.sequence <= session.floor { return .expired }
        if id.firstOutstanding > session.floor + 1 {
            session.floor = id.firstOutstanding - 1
            session.applied = session.applied.filter { $0.key > session.floor }
        }
        session.applied[id.sequence] = index
        if session.applied.count > Self.windowMax, let oldest = session.applied.keys.min() {
            session.applied.removeValue(forKey: oldest)
            session.floor = max(session.floor, oldest)
        }
        return .new
    }

    /// Where request `id` was applied, if this table still remembers it.
    public func appliedIndex(of id: RequestID) -> UInt64? {
        sessions[id.client]?.applied[id.sequence]
    }

    private func isExpired(_ session: Session, nowMillis: Int64) -> Bool {
        nowMillis - session.lastSeenMillis > Self.idleExpiryMillis
    }

    /// The table is full: drop the idle sessions, or else the least recently seen one.
    private mutating func makeRoom(nowMillis: Int64) {
        sessions = sessions.filter { !isExpired($0.value, nowMillis: nowMillis) }
        guard sessions.count >= Self.clientsMax else { return }
        if let oldest = sessions.min(by: { ($0.value.lastSeenMillis, $0.key) < ($1.value.lastSeenMillis, $1.key) })?.key {
            sessions.removeValue(forKey: oldest)
        }
    }
}

extension ByteWriter {
    public mutating func write(_ table: RequestSessions) {
        write(UInt32(table.sessions.count))
        for client in table.sessions.keys.sorted() {
            let session = table.sessions[client]!
            write(client)
            write(session.floor)
            write(session.lastSeenMillis)
            write(UInt32(session.applied.count))
            for sequence in session.applied.keys.sorted() {
                write(sequence)
                write(session.applied[sequence]!)
            }
        }
    }
}

extension ByteReader {
    public mutating func readRequestSessions() throws(DecodingError) -> RequestSessions {
        var table = RequestSessions()
        let count = try readCount("session count", maxCount: RequestSessions.clientsMax)
        for _ in 0..<count {
            let client = try readUInt64("session client")
            var session = RequestSessions.Session(lastSeenMillis: 0)
            session.floor = try readUInt64("session floor")
            session.lastSeenMillis = try readInt64("session last seen")
            let applied = try readCount("session requests", maxCount: RequestSessions.windowMax)
            for _ in 0..<applied {
                let sequence = try readUInt64("request sequence")
                session.applied[sequence] = try readUInt64("request index")
            }
            table.restore(client: client, session: session)
        }
        return table
    }
}

extension RequestSessions {
    fileprivate mutating func restore(client: UInt64, session: Session) {
        sessions[client] = session
    }
}
