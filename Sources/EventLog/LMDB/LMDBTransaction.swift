import CLMDB

#if canImport(Glibc)
import Glibc
#endif

/// One LMDB transaction, valid only inside the closure passed to `LMDBEnvironment.read` or
/// `LMDBEnvironment.write`. It cannot be copied out of that closure.
///
/// Every value it returns is copied out of the memory map, so it stays valid after the
/// transaction ends.
public struct LMDBTransaction: ~Copyable {
    let handle: OpaquePointer
    let context: String

    /// Opens a named database, creating it in a write transaction if it does not exist.
    public func openDatabase(_ name: String) throws -> LMDBDatabase {
        var dbi: MDB_dbi = 0
        try lmdbCheck(mdb_dbi_open(handle, name, UInt32(MDB_CREATE), &dbi), "mdb_dbi_open", "\(context) database \(name)")
        return LMDBDatabase(handle: dbi, name: name)
    }

    /// The value stored under `key`, or nil.
    public func get(_ database: LMDBDatabase, _ key: [UInt8]) throws -> [UInt8]? {
        try key.withUnsafeBytes { keyBytes in
            var keyVal = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
            var dataVal = MDB_val()
            let code = mdb_get(handle, database.handle, &keyVal, &dataVal)
            if code == MDB_NOTFOUND { return nil }
            try lmdbCheck(code, "mdb_get", "\(context) database \(database.name)")
            return Self.copy(dataVal)
        }
    }

    /// Stores `value` under `key`, replacing what was there.
    public func put(_ database: LMDBDatabase, _ key: [UInt8], _ value: [UInt8]) throws {
        try key.withUnsafeBytes { keyBytes in
            try value.withUnsafeBytes { valueBytes in
                var keyVal = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
                var dataVal = MDB_val(
                    mv_size: valueBytes.count, mv_data: UnsafeMutableRawPointer(mutating: valueBytes.baseAddress))
                try lmdbCheck(
                    mdb_put(handle, database.handle, &keyVal, &dataVal, 0), "mdb_put", "\(context) database \(database.name)")
            }
        }
    }

    /// Deletes `key`; returns false when it was not there.
    @discardableResult
    public func delete(_ database: LMDBDatabase, _ key: [UInt8]) throws -> Bool {
        try key.withUnsafeBytes { keyBytes in
            var keyVal = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
            let code = mdb_del(handle, database.handle, &keyVal, nil)
            if code == MDB_NOTFOUND { return false }
            try lmdbCheck(code, "mdb_del", "\(context) database \(database.name)")
            return true
        }
    }

    /// Deletes every key of the database, keeping the database itself.
    public func removeAll(_ database: LMDBDatabase) throws {
        try lmdbCheck(mdb_drop(handle, database.handle, 0), "mdb_drop", "\(context) database \(database.name)")
    }

    /// The number of keys in the database.
    public func count(_ database: LMDBDatabase) throws -> Int {
        var stat = MDB_stat()
        try lmdbCheck(mdb_stat(handle, database.handle, &stat), "mdb_stat", "\(context) database \(database.name)")
        return stat.ms_entries
    }

    /// The first key-value pair in key order, or nil when the database is empty.
    public func first(_ database: LMDBDatabase) throws -> (key: [UInt8], value: [UInt8])? {
        try withCursor(database) { cursor in try step(cursor, MDB_FIRST, database) }
    }

    /// The last key-value pair in key order, or nil when the database is empty.
    public func last(_ database: LMDBDatabase) throws -> (key: [UInt8], value: [UInt8])? {
        try withCursor(database) { cursor in try step(cursor, MDB_LAST, database) }
    }

    /// Visits pairs in key order from the first key at or after `start` (from the first key when
    /// nil) while `body` returns true.
    public func forEach(
        _ database: LMDBDatabase, from start: [UInt8]? = nil,
        _ body: (_ key: [UInt8], _ value: [UInt8]) throws -> Bool
    ) throws {
        try withCursor(database) { cursor in
            var pair: (key: [UInt8], value: [UInt8])?
            if let start {
                pair = try start.withUnsafeBytes { startBytes in
                    var keyVal = MDB_val(
                        mv_size: startBytes.count, mv_data: UnsafeMutableRawPointer(mutating: startBytes.baseAddress))
                    var dataVal = MDB_val()
                    let code = mdb_cursor_get(cursor, &keyVal, &dataVal, MDB_SET_RANGE)
                    if code == MDB_NOTFOUND { return nil }
                    try lmdbCheck(code, "mdb_cursor_get", "\(context) database \(database.name)")
                    return (Self.copy(keyVal), Self.copy(dataVal))
                }
            } else {
                pair = try step(cursor, MDB_FIRST, database)
            }
            while let (key, value) = pair {
                guard try body(key, value) else { return }
                pair = try step(cursor, MDB_NEXT, database)
            }
        }
    }

    /// Deletes every key from `start` on, up to and including `last` when given; returns how
    /// many were deleted.
    @discardableResult
    public func deleteRange(_ database: LMDBDatabase, from start: [UInt8], through last: [UInt8]? = nil) throws -> Int {
        try withCursor(database) { cursor in
            var deleted = 0
            var found = try start.withUnsafeBytes { startBytes -> Bool in
                var keyVal = MDB_val(mv_size: startBytes.count, mv_data: UnsafeMutableRawPointer(mutating: startBytes.baseAddress))
                var dataVal = MDB_val()
                let code = mdb_cursor_get(cursor, &keyVal, &dataVal, MDB_SET_RANGE)
                if code == MDB_NOTFOUND { return false }
                try lmdbCheck(code, "mdb_cursor_get", "\(context) database \(database.name)")
                return last.map { Self.compare(keyVal, $0) <= 0 } ?? true
            }
            while found {
                try lmdbCheck(mdb_cursor_del(cursor, 0), "mdb_cursor_del", "\(context) database \(database.name)")
                deleted += 1
                var keyVal = MDB_val()
                var dataVal = MDB_val()
                // After a delete, MDB_NEXT returns the record that followed the deleted one.
                let code = mdb_cursor_get(cursor, &keyVal, &dataVal, MDB_NEXT)
                if code == MDB_NOTFOUND { break }
                try lmdbCheck(code, "mdb_cursor_get", "\(context) database \(database.name)")
                found = last.map { Self.compare(keyVal, $0) <= 0 } ?? true
            }
            return deleted
        }
    }

    /// Bytewise comparison of a key in the map with `other`, as LMDB's default order.
    private static func compare(_ key: MDB_val, _ other: [UInt8]) -> Int {
        let bytes = UnsafeRawBufferPointer(start: key.mv_data, count: key.mv_size)
        for (a, b) in zip(bytes, other) where a != b { return a < b ? -1 : 1 }
        return key.mv_size == other.count ? 0 : (key.mv_size < other.count ? -1 : 1)
    }

    private func withCursor<T>(_ database: LMDBDatabase, _ body: (OpaquePointer) throws -> T) throws -> T {
        var cursor: OpaquePointer?
        try lmdbCheck(mdb_cursor_open(handle, database.handle, &cursor), "mdb_cursor_open", "\(context) database \(database.name)")
        guard let cursor else { throw LMDBError.from(ENOMEM, function: "mdb_cursor_open", context: context) }
        defer { mdb_cursor_close(cursor) }
        return try body(cursor)
    }

    private func step(_ cursor: OpaquePointer, _ op: MDB_cursor_op, _ database: LMDBDatabase) throws -> (key: [UInt8], value: [UInt8])? {
        var keyVal = MDB_val()
        var dataVal = MDB_val()
        let code = mdb_cursor_get(cursor, &keyVal, &dataVal, op)
        if code == MDB_NOTFOUND { return nil }
        try lmdbCheck(code, "mdb_cursor_get", "\(context) database \(database.name)")
        return (Self.copy(keyVal), Self.copy(dataVal))
    }

    private static func copy(_ val: MDB_val) -> [UInt8] {
        guard val.mv_size > 0, let data = val.mv_data else { return [] }
        return Array(UnsafeRawBufferPointer(start: data, count: val.mv_size))
    }
}

/// Keys that sort numerically in LMDB's default (bytewise) order: 8 bytes, big-endian.
public enum LMDBKey {
    public static func uint64(_ value: UInt64) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    /// Decodes a key made by `uint64(_:)`; nil when it is not 8 bytes long.
    public static func uint64(from bytes: [UInt8]) -> UInt64? {
        guard bytes.count == 8 else { return nil }
        return bytes.reduce(0) { ($0 << 8) | UInt64($1) }
    }
}
