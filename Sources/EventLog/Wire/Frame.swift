/// One unit on a witness connection (peer or client): a length prefix, then a format
/// version, a kind, the payload and a CRC32C of everything after the length:
///
///     length u32 | version u8 | kind u8 | payload | CRC32C u32
///
/// The length counts the bytes after itself. A frame longer than `Frame.bytesMax`, of an
/// unknown version, or with a wrong checksum is refused and the connection closed
/// (DESIGN §5 rule 5).
public struct Frame: Sendable, Equatable {
    public static let version: UInt8 = 1
    /// The largest frame either side sends or accepts (a snapshot travels in one frame).
    public static let bytesMax = 64 << 20
    /// Version, kind and checksum around the payload.
    static let overheadBytes = 6

    public var kind: UInt8
    public var payload: [UInt8]

    public init(kind: UInt8, payload: [UInt8]) {
        self.kind = kind
        self.payload = payload
    }

    /// The frame's bytes, length prefix included.
    public func encoded() -> [UInt8] {
        precondition(payload.count + Self.overheadBytes <= Self.bytesMax, "frame of \(payload.count) bytes exceeds \(Self.bytesMax)")
        var body = ByteWriter(capacity: payload.count + 16)
        body.write(Self.version)
        body.write(kind)
        body.writeRaw(payload)
        body.appendChecksum()
        var framed = ByteWriter(capacity: body.bytes.count + 4)
        framed.write(UInt32(body.bytes.count))
        framed.writeRaw(body.bytes)
        return framed.bytes
    }
}

/// Why a connection's byte stream was refused.
public enum FrameError: Error, Equatable, CustomStringConvertible {
    case oversized(bytes: Int, maximum: Int)
    case tooShort(bytes: Int)
    case malformed(DecodingError)

    public var description: String {
        switch self {
        case .oversized(let bytes, let maximum): return "frame of \(bytes) bytes exceeds the maximum of \(maximum)"
        case .tooShort(let bytes): return "frame of \(bytes) bytes is shorter than its header"
        case .malformed(let error): return "malformed frame: \(error)"
        }
    }
}

/// Splits a byte stream into frames as bytes arrive, whatever the chunking.
public struct FrameDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0
    public let bytesMax: Int

    public init(bytesMax: Int = Frame.bytesMax) {
        self.bytesMax = bytesMax
    }

    /// Bytes received and not yet part of a returned frame.
    public var bufferedBytes: Int { buffer.count - start }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole frame, nil when more bytes are needed. After an error the stream is
    /// unusable: close the connection.
    public mutating func next() throws(FrameError) -> Frame? {
        guard bufferedBytes >= 4 else { return nil }
        let length = Int(buffer[start..<(start + 4)].reduce(UInt32(0)) { ($0 << 8) | UInt32($1) })
        // Refuse before buffering: a peer cannot make us hold more than one maximal frame.
        guard length <= bytesMax else { throw .oversized(bytes: length, maximum: bytesMax) }
        guard length >= Frame.overheadBytes else { throw .tooShort(bytes: length) }
        guard bufferedBytes >= 4 + length else { return nil }
        let body = Array(buffer[(start + 4)..<(start + 4 + length)])
        start += 4 + length
        do throws(DecodingError) {
            var reader = try ByteReader(checksummed: body)
            let version = try reader.readUInt8("frame version")
            guard version == Frame.version else { throw .unknownVersion(version, supported: Frame.version) }
            let kind = try reader.readUInt8("frame kind")
            return Frame(kind: kind, payload: reader.readRest())
        } catch {
            throw .malformed(error)
        }
    }
}
