import Raft

/// The frame kinds on a witness connection. A connection is TLS 1.3 with a certificate on
/// each side (`TLSCredentials`); inside it, it starts with the handshake (the witness speaks
/// first), then carries Raft messages (peer connections) or requests, responses and stream
/// pushes (client connections).
public enum WitnessFrameKind: UInt8, Sendable, CaseIterable {
    /// Witness → connector: its cluster id and its witness id.
    case challenge = 1
    /// Connector → witness: the cluster id it expects, and whether it is a peer (with its
    /// witness id) or a client.
    case hello = 2
    /// Witness → connector: the connection is open.
    case welcome = 3
    /// Either side: why the connection is refused, just before closing it.
    case refused = 4
    /// Peer → peer: one Raft message.
    case raftMessage = 10
    /// Peer → peer: one chunk of a Raft message too large for a frame (`MessageChunks`).
    case raftMessageChunk = 11
    /// Client → witness: a request with its id.
    case request = 20
    /// Witness → client: the answer to a request (or one push of a stream).
    case response = 21
}

/// The handshake inside TLS: both sides check the cluster id, and each checks that the other's
/// certificate fits the part it claims (DESIGN §5 rule 5): a peer connection only between
/// witnesses, each presenting its own id's certificate; a client connection only to a witness.
public enum WitnessHandshake {
    /// Who opens a connection.
    public enum Role: UInt8, Sendable {
        case client = 0
        case peer = 1
    }

    public struct Challenge: Sendable, Equatable {
        public var clusterID: String
        public var witnessID: NodeID

        public init(clusterID: String, witnessID: NodeID) {
            self.clusterID = clusterID
            self.witnessID = witnessID
        }
    }

    public struct Hello: Sendable, Equatable {
        public var clusterID: String
        public var role: Role
        /// The connecting witness's id (peers); zero for clients.
        public var peerID: NodeID

        public init(clusterID: String, role: Role, peerID: NodeID) {
            self.clusterID = clusterID
            self.role = role
            self.peerID = peerID
        }
    }

    /// The witness's check of a hello from the holder of `certificate`; the refusal is what
    /// both sides see.
    public static func refusal(of hello: Hello, from certificate: ClusterIdentity, to challenge: Challenge) -> String? {
        guard hello.clusterID == challenge.clusterID else {
            return "cluster id mismatch: this witness serves cluster \(challenge.clusterID), the connection expected \(hello.clusterID)"
        }
        guard hello.role == .peer else { return nil }
        guard let id = certificate.witnessID else {
            return "\(certificate) may not carry Raft messages: only a witness certificate may"
        }
        guard id == hello.peerID else {
            return "a peer connection claims witness \(hello.peerID), but its certificate is witness \(id)'s"
        }
        return nil
    }

    /// The connector's check of the witness it reached: its certificate must be a witness's,
    /// the one named in its challenge, and (on a peer link) the one the link was dialled for.
    public static func refusal(of challenge: Challenge, from certificate: ClusterIdentity, clusterID: String, expectedWitness: NodeID?) -> String? {
        guard challenge.clusterID == clusterID else {
            return "cluster id mismatch: the witness serves cluster \(challenge.clusterID), expected \(clusterID)"
        }
        guard let id = certificate.witnessID else { return "the server presented \(certificate)'s certificate, not a witness's" }
        guard id == challenge.witnessID else {
            return "the server says it is witness \(challenge.witnessID), but its certificate is witness \(id)'s"
        }
        if let expectedWitness, expectedWitness != id {
            return "expected witness \(expectedWitness) at this address, found witness \(id)"
        }
        return nil
    }
}

extension WitnessHandshake.Challenge {
    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(clusterID)
        writer.write(witnessID)
        return writer.bytes
    }

    init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        clusterID = try reader.readString("cluster id")
        witnessID = try reader.readUInt64("witness id")
        try reader.finish()
    }
}

extension WitnessHandshake.Hello {
    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(clusterID)
        writer.write(role.rawValue)
        writer.write(peerID)
        return writer.bytes
    }

    init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        clusterID = try reader.readString("cluster id")
        let roleByte = try reader.readUInt8("role")
        guard let role = WitnessHandshake.Role(rawValue: roleByte) else { throw .unknownKind(field: "role", value: roleByte) }
        self.role = role
        peerID = try reader.readUInt64("peer id")
        try reader.finish()
    }
}

/// A membership change an operator asks the leader for.
public enum MembershipRequest: Sendable, Equatable {
    /// Add witness `id`, reachable at `address`: as a learner, promoted to voter once it has
    /// caught up; answered after the promotion.
    case add(id: NodeID, address: String)
    case remove(id: NodeID)
}

/// What a client asks a witness.
public enum WitnessRequest: Sendable, Equatable {
    /// Append an event (leader only); answered once committed. The record's stamp is ignored:
    /// the leader stamps it.
    case append(EventRecord)
    /// A node's heartbeat (leader only); answered with the index of the coalesced entry that
    /// holds it, once that entry commits.
    case report(formation: String, NodeReport)
    /// Committed entries from `from` on (any witness). Linearizable unless `stale`: the
    /// witness answers once it has applied a read index the leader confirmed after the request
    /// arrived (Raft thesis §6.4), or `noQuorum` when it cannot within an election timeout. A
    /// `stale` read answers at once from what this witness applied (for diagnosis).
    ///
    /// With a `formation` other than the default one, only the entries a reader of that
    /// formation needs come back (`EventRecord.concerns`), as `.filtered` with the index the
    /// scan reached; the default formation's readers need every entry.
    case read(from: UInt64, maxEntries: UInt32, stale: Bool = false, formation: String? = nil)
    /// Committed entries from `from` on, pushed as they commit (any witness). The first push
    /// comes once a read index is confirmed, as for a read; the witness confirms again every
    /// half election timeout (pushing an empty batch when nothing new committed) and ends the
    /// stream with `noQuorum` as soon as a confirmation fails. With a `formation`, filtered as
    /// a read is: pushes are `.filtered`, and a push that would hold nothing is not sent.
    case subscribe(from: UInt64, formation: String? = nil)
    /// The latest snapshot (any witness). Not confirmed: a snapshot is only a starting point,
    /// and the reads that continue from it are.
    case snapshot
    /// This witness's view of the cluster.
    case status
    /// A membership change (leader only); answered once committed.
    case changeMembership(MembershipRequest)
}

/// One committed position of the log as clients see it.
public struct CommittedEntry: Sendable, Equatable {
    public enum Payload: Sendable, Equatable {
        /// An event record.
        case event(EventRecord)
        /// A Raft membership change.
        case membership(MembershipChange)
        /// The empty entry a new leader appends; it carries nothing.
        case empty
    }

    public var index: UInt64
    public var term: UInt64
    public var payload: Payload

    public init(index: UInt64, term: UInt64, payload: Payload) {
        self.index = index
        self.term = term
        self.payload = payload
    }

    /// Interprets a Raft entry; an event that does not decode is an error naming its index.
    public init(_ entry: Entry) throws(DecodingError) {
        index = entry.index
        term = entry.term
        switch entry.kind {
        case .membershipChange:
            guard let change = MembershipChange(encoded: entry.data) else {
                throw .invalidValue(field: "membership change at index \(entry.index)", reason: "undecodable")
            }
            payload = .membership(change)
        case .normal:
            payload = entry.data.isEmpty ? .empty : .event(try EventRecord(decoding: entry.data))
        }
    }

    /// The entry as the reducer consumes it; nil for Raft's own entries.
    public var logEntry: LogEntry? {
        guard case .event(let record) = payload else { return nil }
        return LogEntry(index: index, term: term, record: record)
    }
}

/// The latest snapshot a witness holds: the application state at `index` plus the witness
/// address book in force there.
public struct WitnessSnapshot: Sendable, Equatable {
    public var index: UInt64
    public var term: UInt64
    public var voters: [NodeID]
    public var addresses: [WitnessMember]
    /// The application's serialized state (the cluster state); empty before any snapshot.
    public var application: [UInt8]

    public init(index: UInt64, term: UInt64, voters: [NodeID], addresses: [WitnessMember], application: [UInt8]) {
        self.index = index
        self.term = term
        self.voters = voters
        self.addresses = addresses
        self.application = application
    }
}

/// One witness's view of the control plane.
public struct WitnessStatus: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        public var id: NodeID
        public var address: String
        /// On the leader: the highest log index known to be on this member. Nil elsewhere.
        public var match: UInt64?
        /// A learner catching up: it counts for no quorum until it is promoted.
        public var isLearner: Bool

        public init(id: NodeID, address: String, match: UInt64?, isLearner: Bool = false) {
            self.id = id
            self.address = address
            self.match = match
            self.isLearner = isLearner
        }
    }

    public var id: NodeID
    public var clusterID: String
    public var term: UInt64
    public var role: String
    public var leader: NodeID?
    public var leaderAddress: String?
    public var commit: UInt64
    public var applied: UInt64
    public var firstIndex: UInt64
    public var lastIndex: UInt64
    public var members: [Member]

    public init(
        id: NodeID, clusterID: String, term: UInt64, role: String, leader: NodeID?, leaderAddress: String?, commit: UInt64,
        applied: UInt64, firstIndex: UInt64, lastIndex: UInt64, members: [Member]
    ) {
        self.id = id
        self.clusterID = clusterID
        self.term = term
        self.role = role
        self.leader = leader
        self.leaderAddress = leaderAddress
        self.commit = commit
        self.applied = applied
        self.firstIndex = firstIndex
        self.lastIndex = lastIndex
        self.members = members
    }
}

/// Why a witness did not do what was asked.
public struct WitnessFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: UInt8, Sendable {
        /// Only the leader does this; `leaderAddress` says where it is, when known.
        case notLeader = 1
        /// The entries asked for were compacted; fetch the snapshot at `snapshotIndex`.
        case compacted = 2
        /// The request is valid but cannot be done now (the reason says why).
        case refused = 3
        /// The request is malformed or not allowed from a client.
        case badRequest = 4
        /// The outcome is unknown (the leader changed before the entry committed): retry.
        case unavailable = 5
        /// This witness could not confirm within an election timeout that it is in touch with
        /// a quorum (cut off, or no leader): ask another witness.
        case noQuorum = 6
        /// The connection's certificate does not allow this request (`WitnessAccess`).
        case forbidden = 7
    }

    public var code: Code
    public var message: String
    public var leaderAddress: String?
    public var snapshotIndex: UInt64

    public init(_ code: Code, _ message: String, leaderAddress: String? = nil, snapshotIndex: UInt64 = 0) {
        self.code = code
        self.message = message
        self.leaderAddress = leaderAddress
        self.snapshotIndex = snapshotIndex
    }

    public var description: String { message }
}

/// What a witness answers.
public enum WitnessResponse: Sendable, Equatable {
    /// The entry holding the request committed at `index` in `term`.
    case committed(index: UInt64, term: UInt64)
    /// Raw committed entries (a read, or one push of a stream); decode with `CommittedEntry`.
    case entries([Entry])
    /// The entries of a formation's read or push, and the index up to which the witness
    /// looked: every entry up to `through` that is not here concerns other formations only.
    case filtered([Entry], through: UInt64)
    case snapshot(WitnessSnapshot)
    case status(WitnessStatus)
    case failure(WitnessFailure)
}

/// Wire encodings of requests and responses: `request id u64 | tag u8 | fields`.
extension WitnessRequest {
    public static let readEntriesMax: UInt32 = 10_000

    public func encoded(id: UInt64) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(id)
        switch self {
        case .append(let record):
            writer.write(UInt8(1))
            writer.writeBlob(record.encoded())
        case .report(let formation, let report):
            // Tag 2 carried reports of format 1, tag 10 of format 2, tag 11 of format 3.
            writer.write(UInt8(12))
            writer.write(formation)
            writer.write(report)
        case .read(let from, let maxEntries, let stale, let formation?) where formation != EventRecord.defaultFormation:
            writer.write(UInt8(13))
            writer.write(from)
            writer.write(maxEntries)
            writer.write(stale)
            writer.write(formation)
        case .read(let from, let maxEntries, let stale, _):
            writer.write(UInt8(stale ? 9 : 3))
            writer.write(from)
            writer.write(maxEntries)
        case .subscribe(let from, let formation?) where formation != EventRecord.defaultFormation:
            writer.write(UInt8(14))
            writer.write(from)
            writer.write(formation)
        case .subscribe(let from, _):
            writer.write(UInt8(4))
            writer.write(from)
        case .snapshot:
            writer.write(UInt8(5))
        case .status:
            writer.write(UInt8(6))
        case .changeMembership(.add(let id, let address)):
            writer.write(UInt8(7))
            writer.write(id)
            writer.write(address)
        case .changeMembership(.remove(let id)):
            writer.write(UInt8(8))
            writer.write(id)
        }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(DecodingError) -> (id: UInt64, request: WitnessRequest) {
        var reader = ByteReader(bytes)
        let id = try reader.readUInt64("request id")
        let tag = try reader.readUInt8("request kind")
        let request: WitnessRequest
        switch tag {
        case 1: request = .append(try EventRecord(decoding: try reader.readBlob("record", maxCount: Frame.bytesMax)))
        case 2, 10, 11, 12:
            let formation = try reader.readString("formation")
            request = .report(formation: formation, try reader.readReport(format: tag == 2 ? 1 : tag == 10 ? 2 : tag == 11 ? 3 : 4))
        case 3, 9:
            let from = try reader.readUInt64("from index")
            request = .read(from: from, maxEntries: try reader.readUInt32("max entries"), stale: tag == 9)
        case 13:
            let from = try reader.readUInt64("from index")
            let maxEntries = try reader.readUInt32("max entries")
            let stale = try reader.readBool("stale")
            request = .read(from: from, maxEntries: maxEntries, stale: stale, formation: try reader.readFormationFilter())
        case 4: request = .subscribe(from: try reader.readUInt64("from index"))
        case 14:
            let from = try reader.readUInt64("from index")
            request = .subscribe(from: from, formation: try reader.readFormationFilter())
        case 5: request = .snapshot
        case 6: request = .status
        case 7:
            let member = try reader.readUInt64("witness id")
            guard member != 0 else { throw .invalidValue(field: "witness id", reason: "zero") }
            request = .changeMembership(.add(id: member, address: try reader.readString("address")))
        case 8:
            let member = try reader.readUInt64("witness id")
            guard member != 0 else { throw .invalidValue(field: "witness id", reason: "zero") }
            request = .changeMembership(.remove(id: member))
        default: throw .unknownKind(field: "request kind", value: tag)
        }
        try reader.finish()
        return (id, request)
    }
}

extension WitnessResponse {
    public func encoded(id: UInt64) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(id)
        switch self {
        case .committed(let index, let term):
            writer.write(UInt8(1))
            writer.write(index)
            writer.write(term)
        case .entries(let entries):
            writer.write(UInt8(2))
            writer.write(entries)
        case .filtered(let entries, let through):
            writer.write(UInt8(6))
            writer.write(entries)
            writer.write(through)
        case .snapshot(let snapshot):
            writer.write(UInt8(3))
            writer.write(snapshot.index)
            writer.write(snapshot.term)
            writer.write(UInt32(snapshot.voters.count))
            for voter in snapshot.voters { writer.write(voter) }
            writer.write(snapshot.addresses)
            writer.writeBlob(snapshot.application)
        case .status(let status):
            writer.write(UInt8(4))
            writer.write(status.id)
            writer.write(status.clusterID)
            writer.write(status.term)
            writer.write(status.role)
            writer.write(status.leader ?? 0)
            writer.write(status.leaderAddress ?? "")
            writer.write(status.commit)
            writer.write(status.applied)
            writer.write(status.firstIndex)
            writer.write(status.lastIndex)
            writer.write(UInt32(status.members.count))
            for member in status.members {
                writer.write(member.id)
                writer.write(member.address)
                writer.write(member.match != nil)
                writer.write(member.match ?? 0)
                writer.write(member.isLearner)
            }
        case .failure(let failure):
            writer.write(UInt8(5))
            writer.write(failure.code.rawValue)
            writer.write(failure.message)
            writer.write(failure.leaderAddress ?? "")
            writer.write(failure.snapshotIndex)
        }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(DecodingError) -> (id: UInt64, response: WitnessResponse) {
        var reader = ByteReader(bytes)
        let id = try reader.readUInt64("request id")
        let tag = try reader.readUInt8("response kind")
        let response: WitnessResponse
        switch tag {
        case 1:
            let index = try reader.readUInt64("index")
            response = .committed(index: index, term: try reader.readUInt64("term"))
        case 2:
            response = .entries(try reader.readEntries())
        case 6:
            let entries = try reader.readEntries()
            let through = try reader.readUInt64("filtered through")
            guard entries.last.map({ $0.index <= through }) ?? true else {
                throw .invalidValue(field: "filtered through", reason: "\(through) is before the last entry \(entries.last!.index)")
            }
            response = .filtered(entries, through: through)
        case 3:
            let index = try reader.readUInt64("snapshot index")
            let term = try reader.readUInt64("snapshot term")
            let count = try reader.readCount("voter count", maxCount: EventRecord.witnessesMax)
            var voters: [NodeID] = []
            for _ in 0..<count { voters.append(try reader.readUInt64("voter")) }
            let addresses = try reader.readWitnessMembers()
            response = .snapshot(
                WitnessSnapshot(
                    index: index, term: term, voters: voters, addresses: addresses,
                    application: try reader.readBlob("application state", maxCount: Frame.bytesMax)))
        case 4:
            let witness = try reader.readUInt64("witness id")
            let clusterID = try reader.readString("cluster id")
            let term = try reader.readUInt64("term")
            let role = try reader.readString("role")
            let leader = try reader.readUInt64("leader")
            let leaderAddress = try reader.readString("leader address")
            let commit = try reader.readUInt64("commit")
            let applied = try reader.readUInt64("applied")
            let first = try reader.readUInt64("first index")
            let last = try reader.readUInt64("last index")
            let count = try reader.readCount("member count", maxCount: EventRecord.witnessesMax)
            var members: [WitnessStatus.Member] = []
            for _ in 0..<count {
                let member = try reader.readUInt64("member id")
                let address = try reader.readString("member address")
                let hasMatch = try reader.readBool("has match")
                let match = try reader.readUInt64("match")
                let isLearner = try reader.readBool("learner")
                members.append(WitnessStatus.Member(id: member, address: address, match: hasMatch ? match : nil, isLearner: isLearner))
            }
            response = .status(
                WitnessStatus(
                    id: witness, clusterID: clusterID, term: term, role: role, leader: leader == 0 ? nil : leader,
                    leaderAddress: leaderAddress.isEmpty ? nil : leaderAddress, commit: commit, applied: applied,
                    firstIndex: first, lastIndex: last, members: members))
        case 5:
            let codeByte = try reader.readUInt8("failure code")
            guard let code = WitnessFailure.Code(rawValue: codeByte) else { throw .unknownKind(field: "failure code", value: codeByte) }
            let message = try reader.readString("failure message")
            let leaderAddress = try reader.readString("leader address")
            response = .failure(
                WitnessFailure(
                    code, message, leaderAddress: leaderAddress.isEmpty ? nil : leaderAddress,
                    snapshotIndex: try reader.readUInt64("snapshot index")))
        default: throw .unknownKind(field: "response kind", value: tag)
        }
        try reader.finish()
        return (id, response)
    }
}

/// The witness's own part of a Raft snapshot: its address book and request sessions, around the
/// application's state, so that a witness restored from a snapshot still knows where its peers
/// are and which requests it applied. Version 1 (no sessions) still loads.
struct WitnessSnapshotData: Equatable {
    static let version: UInt8 = 2
    var addresses: [WitnessMember]
    var requests: RequestSessions
    var application: [UInt8]

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.write(Self.version)
        writer.write(addresses)
        writer.write(requests)
        writer.writeBlob(application)
        writer.appendChecksum()
        return writer.bytes
    }

    init(addresses: [WitnessMember], requests: RequestSessions = RequestSessions(), application: [UInt8]) {
        self.addresses = addresses
        self.requests = requests
        self.application = application
    }

    init(decoding bytes: [UInt8]) throws(DecodingError) {
        var reader = try ByteReader(checksummed: bytes)
        let version = try reader.readUInt8("snapshot version")
        guard version == 1 || version == Self.version else { throw .unknownVersion(version, supported: Self.version) }
        addresses = try reader.readWitnessMembers()
        requests = version >= 2 ? try reader.readRequestSessions() : RequestSessions()
        application = try reader.readBlob("application state", maxCount: LMDBRaftStorage.snapshotBytesMax)
        try reader.finish()
    }
}

extension ByteWriter {
    mutating func write(_ members: [WitnessMember]) {
        write(UInt32(members.count))
        for member in members {
            write(member.id)
            write(member.address)
        }
    }
}

extension ByteReader {
    mutating func readWitnessMembers() throws(DecodingError) -> [WitnessMember] {
        let count = try readCount("witness count", maxCount: EventRecord.witnessesMax)
        var members: [WitnessMember] = []
        for _ in 0..<count {
            let id = try readUInt64("witness id")
            members.append(WitnessMember(id: id, address: try readString("witness address")))
        }
        return members
    }
}

extension ByteReader {
    /// A formation filter's name: not empty, and not the default formation (whose readers
    /// need every entry, and ask without a filter).
    mutating func readFormationFilter() throws(DecodingError) -> String {
        let formation = try readString("formation")
        guard !formation.isEmpty, formation != EventRecord.defaultFormation else {
            throw .invalidValue(field: "formation", reason: formation.isEmpty ? "empty name" : "the default formation is read without a filter")
        }
        return formation
    }
}
