import Raft

/// The on-disk records of `LMDBRaftStorage`, each `version u8 | fields | CRC32C u32`.
enum StorageRecords {
    static let version: UInt8 = 1
    /// The most voters a stored snapshot's membership lists.
    static let votersMax = 64

    static func encode(_ entry: Entry) -> [UInt8] {
        var writer = ByteWriter(capacity: entry.data.count + 24)
        writer.write(version)
        writer.write(entry.index)
        writer.write(entry.term)
        writer.write(entry.kind.rawValue)
        writer.writeRaw(entry.data)
        writer.appendChecksum()
        return writer.bytes
    }

    /// Decodes an entry record and checks that it sits under its own index.
    static func decodeEntry(_ bytes: [UInt8], key: [UInt8]) throws -> Entry {
        do {
            var reader = try ByteReader(checksummed: bytes)
            try readVersion(&reader)
            let index = try reader.readUInt64("entry index")
            let term = try reader.readUInt64("entry term")
            let kindByte = try reader.readUInt8("entry kind")
            guard let kind = EntryKind(rawValue: kindByte) else { throw DecodingError.unknownKind(field: "entry kind", value: kindByte) }
            guard LMDBKey.uint64(index) == key else {
                throw DecodingError.invalidValue(field: "entry index", reason: "record \(index) is stored under another key")
            }
            return Entry(term: term, index: index, kind: kind, data: reader.readRest())
        } catch let error as DecodingError {
            throw StorageCorruption.record(error)
        }
    }

    static func encode(_ hardState: HardState) -> [UInt8] {
        var writer = ByteWriter(capacity: 32)
        writer.write(version)
        writer.write(hardState.term)
        writer.write(hardState.vote ?? 0)
        writer.write(hardState.commit)
        writer.appendChecksum()
        return writer.bytes
    }

    static func decodeHardState(_ bytes: [UInt8]) throws -> HardState {
        do {
            var reader = try ByteReader(checksummed: bytes)
            try readVersion(&reader)
            let term = try reader.readUInt64("term")
            let vote = try reader.readUInt64("vote")
            let commit = try reader.readUInt64("commit")
            try reader.finish()
            return HardState(term: term, vote: vote == 0 ? nil : vote, commit: commit)
        } catch {
            throw StorageCorruption.record(error)
        }
    }

    /// A snapshot record with learners is version 2 (they follow the voters); one without any
    /// stays version 1, as written before learners existed.
    static let snapshotWithLearnersVersion: UInt8 = 2

    static func encode(_ snapshot: Snapshot) -> [UInt8] {
        var writer = ByteWriter(capacity: snapshot.data.count + 64)
        let membership = snapshot.metadata.membership
        writer.write(membership.learners.isEmpty ? version : snapshotWithLearnersVersion)
        writer.write(snapshot.metadata.index)
        writer.write(snapshot.metadata.term)
        precondition(membership.members.count <= votersMax, "\(membership.members.count) members in a snapshot")
        writer.write(UInt32(membership.voters.count))
        for voter in membership.voters.sorted() { writer.write(voter) }
        if !membership.learners.isEmpty {
            writer.write(UInt32(membership.learners.count))
            for learner in membership.learners.sorted() { writer.write(learner) }
        }
        writer.writeBlob(snapshot.data)
        writer.appendChecksum()
        return writer.bytes
    }

    static func decodeSnapshot(_ bytes: [UInt8]) throws -> Snapshot {
        do throws(DecodingError) {
            var reader = try ByteReader(checksummed: bytes)
            let found = try reader.readUInt8("record version")
            guard found == version || found == snapshotWithLearnersVersion else {
                throw DecodingError.unknownVersion(found, supported: snapshotWithLearnersVersion)
            }
            let index = try reader.readUInt64("snapshot index")
            let term = try reader.readUInt64("snapshot term")
            let voters = try reader.readMemberSet("voter")
            let learners = found == snapshotWithLearnersVersion ? try reader.readMemberSet("learner") : []
            let data = try reader.readBlob("snapshot data", maxCount: LMDBRaftStorage.snapshotBytesMax)
            try reader.finish()
            return Snapshot(
                metadata: SnapshotMetadata(index: index, term: term, membership: Membership(voters: voters, learners: learners)), data: data)
        } catch {
            throw StorageCorruption.record(error)
        }
    }

    private static func readVersion(_ reader: inout ByteReader) throws(DecodingError) {
        let found = try reader.readUInt8("record version")
        guard found == version else { throw .unknownVersion(found, supported: version) }
    }
}
