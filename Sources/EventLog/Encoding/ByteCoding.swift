/// Why bytes could not be decoded. Every case names the field or offset involved.
public enum DecodingError: Error, Equatable, CustomStringConvertible {
    case truncated(field: String, needed: Int, available: Int)
    case unknownVersion(UInt8, supported: UInt8)
    case unknownKind(field: String, value: UInt8)
    case checksumMismatch(stored: UInt32, computed: UInt32)
    case invalidValue(field: String, reason: String)
    case trailingBytes(count: Int)

    public var description: String {
        switch self {
        case .truncated(let field, let needed, let available):
            return "record is truncated: \(field) needs \(needed) bytes, \(available) left"
        case .unknownVersion(let version, let supported):
            return "record has format version \(version); this build reads version \(supported)"
        case .unknownKind(let field, let value):
            return "record has unknown \(field) \(value)"
        case .checksumMismatch(let stored, let computed):
            return "record is corrupted: stored CRC32C \(hex(stored)), computed \(hex(computed))"
        case .invalidValue(let field, let reason):
            return "record has an invalid \(field): \(reason)"
        case .trailingBytes(let count):
            return "record has \(count) unexpected bytes at its end"
        }
    }
}

private func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
}

/// Appends fixed-width big-endian integers, length-prefixed strings and byte arrays.
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 64) {
        bytes.reserveCapacity(capacity)
    }

    public mutating func write(_ value: UInt8) { bytes.append(value) }
    public mutating func write(_ value: Bool) { bytes.append(value ? 1 : 0) }
    public mutating func write(_ value: UInt16) { writeInteger(value) }
    public mutating func write(_ value: UInt32) { writeInteger(value) }
    public mutating func write(_ value: UInt64) { writeInteger(value) }
    public mutating func write(_ value: Int64) { writeInteger(UInt64(bitPattern: value)) }

    private mutating func writeInteger<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// A string as a 16-bit length and UTF-8 bytes; longer strings are a programmer error.
    public mutating func write(_ value: String) {
        let utf8 = Array(value.utf8)
        precondition(utf8.count <= Int(UInt16.max), "string of \(utf8.count) bytes is too long to encode")
        write(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    /// Bytes as a 32-bit length and the bytes.
    public mutating func writeBlob(_ value: [UInt8]) {
        write(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func writeRaw(_ value: [UInt8]) { bytes.append(contentsOf: value) }

    /// Appends the CRC32C of everything written so far.
    public mutating func appendChecksum() {
        write(CRC32C.checksum(bytes))
    }
}

/// Reads what `ByteWriter` writes, refusing to read past the end.
public struct ByteReader {
    let bytes: [UInt8]
    public private(set) var position: Int
    let end: Int

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.position = 0
        self.end = bytes.count
    }

    /// Checks the CRC32C in the last four bytes against the rest, and reads only the rest.
    public init(checksummed bytes: [UInt8]) throws(DecodingError) {
        guard bytes.count >= 4 else { throw .truncated(field: "checksum", needed: 4, available: bytes.count) }
        let bodyCount = bytes.count - 4
        let stored = bytes[bodyCount...].reduce(UInt32(0)) { ($0 << 8) | UInt32($1) }
        let computed = CRC32C.checksum(bytes[..<bodyCount])
        guard stored == computed else { throw .checksumMismatch(stored: stored, computed: computed) }
        self.bytes = bytes
        self.position = 0
        self.end = bodyCount
    }

    public var remaining: Int { end - position }

    private mutating func take(_ count: Int, _ field: String) throws(DecodingError) -> ArraySlice<UInt8> {
        guard count <= remaining else { throw .truncated(field: field, needed: count, available: remaining) }
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    private mutating func readInteger<T: FixedWidthInteger>(_ field: String) throws(DecodingError) -> T {
        let size = MemoryLayout<T>.size
        guard size <= remaining else { throw .truncated(field: field, needed: size, available: remaining) }
        let value = bytes.withUnsafeBytes { T(bigEndian: $0.loadUnaligned(fromByteOffset: position, as: T.self)) }
        position += size
        return value
    }

    public mutating func readUInt8(_ field: String) throws(DecodingError) -> UInt8 { try take(1, field).first! }
    public mutating func readUInt16(_ field: String) throws(DecodingError) -> UInt16 { try readInteger(field) }
    public mutating func readUInt32(_ field: String) throws(DecodingError) -> UInt32 { try readInteger(field) }
    public mutating func readUInt64(_ field: String) throws(DecodingError) -> UInt64 { try readInteger(field) }
    public mutating func readInt64(_ field: String) throws(DecodingError) -> Int64 {
        Int64(bitPattern: try readInteger(field) as UInt64)
    }

    public mutating func readBool(_ field: String) throws(DecodingError) -> Bool {
        switch try readUInt8(field) {
        case 0: return false
        case 1: return true
        case let other: throw .invalidValue(field: field, reason: "boolean byte \(other)")
        }
    }

    public mutating func readString(_ field: String) throws(DecodingError) -> String {
        let count = Int(try readUInt16(field))
        let slice = try take(count, field)
        guard let string = String(validating: slice, as: UTF8.self) else {
            throw .invalidValue(field: field, reason: "not valid UTF-8")
        }
        return string
    }

    /// A length-prefixed byte array of at most `maxCount` bytes.
    public mutating func readBlob(_ field: String, maxCount: Int) throws(DecodingError) -> [UInt8] {
        let count = Int(try readUInt32(field))
        guard count <= maxCount else { throw .invalidValue(field: field, reason: "\(count) bytes exceed the maximum of \(maxCount)") }
        return Array(try take(count, field))
    }

    public mutating func readRest() -> [UInt8] {
        defer { position = end }
        return Array(bytes[position..<end])
    }

    /// An element count, refused beyond `maxCount` before anything is allocated.
    public mutating func readCount(_ field: String, maxCount: Int) throws(DecodingError) -> Int {
        let count = Int(try readUInt32(field))
        guard count <= maxCount else { throw .invalidValue(field: field, reason: "count \(count) exceeds the maximum of \(maxCount)") }
        return count
    }

    /// Fails when bytes are left over.
    public func finish() throws(DecodingError) {
        if remaining > 0 { throw .trailingBytes(count: remaining) }
    }
}
