import Raft

/// The payload of a peer frame carrying one Raft message (frame kind `peerMessage`).
/// Every field is checked on decoding; entry and byte counts have named maxima.
extension Message {
    /// The most entries one append message carries on the wire.
    public static let wireEntriesMax = 65_536

    public func wireEncoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 64 + entries.reduce(0) { $0 + $1.data.count + 24 })
        writer.write(kind.rawValue)
        writer.write(from)
        writer.write(to)
        writer.write(term)
        writer.write(logTerm)
        writer.write(index)
        writer.write(commit)
        writer.write(reject)
        writer.write(rejectHint)
        writer.write(force)
        writer.write(context)
        precondition(entries.count <= Self.wireEntriesMax, "\(entries.count) entries in one message")
        writer.write(entries)
        writer.write(snapshot != nil)
        if let snapshot {
            writer.write(snapshot.metadata.index)
            writer.write(snapshot.metadata.term)
            for members in [snapshot.metadata.membership.voters, snapshot.metadata.membership.learners] {
                writer.write(UInt32(members.count))
                for member in members.sorted() { writer.write(member) }
            }
            writer.writeBlob(snapshot.data)
        }
        return writer.bytes
    }

    public init(wireDecoding bytes: [UInt8]) throws(DecodingError) {
        var reader = ByteReader(bytes)
        let kindByte = try reader.readUInt8("message kind")
        guard let kind = MessageKind(rawValue: kindByte) else { throw .unknownKind(field: "message kind", value: kindByte) }
        let from = try reader.readUInt64("sender")
        let to = try reader.readUInt64("receiver")
        guard from != 0, to != 0 else { throw .invalidValue(field: "sender or receiver", reason: "replica id 0") }
        self.init(kind: kind, from: from, to: to, term: try reader.readUInt64("term"))
        logTerm = try reader.readUInt64("log term")
        index = try reader.readUInt64("index")
        commit = try reader.readUInt64("commit")
        reject = try reader.readBool("reject")
        rejectHint = try reader.readUInt64("reject hint")
        force = try reader.readBool("force")
        context = try reader.readUInt64("context")
        entries = try reader.readEntries()
        if try reader.readBool("has snapshot") {
            let index = try reader.readUInt64("snapshot index")
            let term = try reader.readUInt64("snapshot term")
            let voters = try reader.readMemberSet("voter")
            let learners = try reader.readMemberSet("learner")
            let data = try reader.readBlob("snapshot data", maxCount: LMDBRaftStorage.snapshotBytesMax)
            snapshot = Snapshot(metadata: SnapshotMetadata(index: index, term: term, membership: Membership(voters: voters, learners: learners)), data: data)
        }
        try reader.finish()
    }
}

/// Raft entries as peers and clients exchange them: a count, then term, index, kind and data.
extension ByteWriter {
    mutating func write(_ entries: [Entry]) {
        write(UInt32(entries.count))
        for entry in entries {
            write(entry.term)
            write(entry.index)
            write(entry.kind.rawValue)
            writeBlob(entry.data)
        }
    }
}

extension ByteReader {
    /// A count, then that many replica ids in ascending order (one encoding per set), as Raft
    /// messages and stored snapshots carry voters and learners.
    mutating func readMemberSet(_ field: String) throws(DecodingError) -> Set<NodeID> {
        let count = try readCount("\(field) count", maxCount: StorageRecords.votersMax)
        var members: Set<NodeID> = []
        var previous: NodeID = 0
        for _ in 0..<count {
            let member = try readUInt64(field)
            guard member > previous else { throw .invalidValue(field: field, reason: "\(field)s not in ascending order") }
            previous = member
            members.insert(member)
        }
        return members
    }

    mutating func readEntries() throws(DecodingError) -> [Entry] {
        let count = try readCount("entry count", maxCount: Message.wireEntriesMax)
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        for _ in 0..<count {
            let term = try readUInt64("entry term")
            let index = try readUInt64("entry index")
            let kindByte = try readUInt8("entry kind")
            guard let kind = EntryKind(rawValue: kindByte) else { throw .unknownKind(field: "entry kind", value: kindByte) }
            entries.append(Entry(term: term, index: index, kind: kind, data: try readBlob("entry data", maxCount: Frame.bytesMax)))
        }
        return entries
    }
}
