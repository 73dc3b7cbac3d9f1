/// A Raft message too large for one frame (a snapshot of a big formation) travels as chunks:
///
///     message id u64 | chunk index u32 | chunk count u32 | bytes
///
/// The receiver reassembles the chunks of one connection in order; a chunk out of order, a
/// count that changes, or a message larger than `messageBytesMax` is refused, and the partial
/// message is dropped (Raft sends the snapshot again).
public enum MessageChunks {
    /// The bytes of message one chunk carries (well under `Frame.bytesMax`).
    public static let chunkBytes = 16 << 20
    /// The largest message reassembled: the largest snapshot plus room for its header.
    public static let messageBytesMax = LMDBRaftStorage.snapshotBytesMax + (1 << 20)
    static let headerBytes = 16

    /// Splits an encoded message into chunk payloads.
    public static func split(_ payload: [UInt8], messageID: UInt64) -> [[UInt8]] {
        precondition(payload.count <= messageBytesMax, "a message of \(payload.count) bytes exceeds \(messageBytesMax)")
        let count = (payload.count + chunkBytes - 1) / chunkBytes
        return (0..<count).map { position in
            var writer = ByteWriter(capacity: headerBytes + chunkBytes)
            writer.write(messageID)
            writer.write(UInt32(position))
            writer.write(UInt32(count))
            writer.writeRaw(Array(payload[(position * chunkBytes)..<min(payload.count, (position + 1) * chunkBytes)]))
            return writer.bytes
        }
    }

    /// Reassembles the chunks arriving on one connection.
    public struct Assembler {
        private var messageID: UInt64 = 0
        private var count = 0
        private var received = 0
        private var bytes: [UInt8] = []

        public init() {}

        /// Adds one chunk; returns the whole message once its last chunk arrived.
        public mutating func add(_ chunk: [UInt8]) throws(DecodingError) -> [UInt8]? {
            var reader = ByteReader(chunk)
            let id = try reader.readUInt64("chunked message id")
            let position = Int(try reader.readUInt32("chunk index"))
            let total = Int(try reader.readUInt32("chunk count"))
            let data = Array(chunk[MessageChunks.headerBytes...])
            guard total > 0, total <= (MessageChunks.messageBytesMax + MessageChunks.chunkBytes - 1) / MessageChunks.chunkBytes else {
                throw .invalidValue(field: "chunk count", reason: "\(total) chunks")
            }
            if position == 0 {
                messageID = id
                count = total
                received = 0
                bytes = []
            }
            guard id == messageID, total == count, position == received else {
                self = Assembler()
                throw .invalidValue(field: "chunk", reason: "chunk \(position) of message \(id) out of order")
            }
            guard bytes.count + data.count <= MessageChunks.messageBytesMax else {
                self = Assembler()
                throw .invalidValue(field: "chunked message", reason: "larger than \(MessageChunks.messageBytesMax) bytes")
            }
            bytes += data
            received += 1
            guard received == count else { return nil }
            defer { self = Assembler() }
            return bytes
        }
    }
}
