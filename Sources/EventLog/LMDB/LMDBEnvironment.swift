import CLMDB

#if canImport(Glibc)
import Glibc
#endif

/// How an LMDB environment is opened.
public struct LMDBConfiguration: Sendable {
    /// The map size the environment starts with. It doubles on `MDB_MAP_FULL`.
    public var mapSizeBytes: Int = 64 << 20
    /// The map never grows beyond this; a write that needs more fails with `mapSizeLimitReached`.
    public var mapSizeBytesMax: Int = 256 << 30
    /// How many named databases the environment may hold.
    public var databasesMax: UInt32 = 16
    /// How many concurrent read transactions (reader slots) the environment allows.
    public var readersMax: UInt32 = 126
    /// The permission bits of the data and lock files.
    public var fileMode: UInt32 = 0o600

    public init() {}

    /// Checks that the numbers make sense together.
    public func validate() throws(LMDBConfigurationError) {
        guard mapSizeBytes > 0, mapSizeBytes <= mapSizeBytesMax else {
            throw LMDBConfigurationError(
                message: "mapSizeBytes (\(mapSizeBytes)) must be positive and at most mapSizeBytesMax (\(mapSizeBytesMax))")
        }
        guard databasesMax > 0, readersMax > 0 else {
            throw LMDBConfigurationError(message: "databasesMax and readersMax must be positive")
        }
    }
}

/// A configuration that `LMDBConfiguration.validate()` refused.
public struct LMDBConfigurationError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { "invalid LMDB configuration: \(message)" }
}

/// A named database inside an environment.
public struct LMDBDatabase: Sendable, Hashable {
    let handle: MDB_dbi
    public let name: String
}

/// An open LMDB environment: one directory holding `data.mdb` and `lock.mdb`.
///
/// Durability: the environment is opened without `MDB_NOSYNC`, so a write transaction that
/// returned from `write` is on disk. It is opened with `MDB_NOTLS`, so a read transaction is
/// not tied to the thread that began it. Stale reader slots left by dead processes are cleared
/// at open.
///
/// Contract: transactions are scoped to the closure given to `read` or `write`, whose bodies
/// are synchronous, so no transaction can stay open across an `await`. Do not begin a
/// transaction inside another one on the same environment.
public final class LMDBEnvironment: @unchecked Sendable {
    // Safety of @unchecked Sendable: `env` is set once and LMDB allows concurrent transactions
    // from several threads with MDB_NOTLS; `mapSizeBytes` and resizing are guarded by `resizeLock`.
    private let env: OpaquePointer
    public let directory: String
    public let configuration: LMDBConfiguration
    /// Shared by every transaction; held exclusively while the map is resized, because
    /// `mdb_env_set_mapsize` requires that no transaction of this process is active.
    private let resizeLock: UnsafeMutablePointer<pthread_rwlock_t>
    private var currentMapSizeBytes: Int
    private var closed = false

    /// Opens (creating the files if needed) the environment in an existing directory.
    public init(directory: String, configuration: LMDBConfiguration = LMDBConfiguration()) throws {
        try configuration.validate()
        var info = stat()
        guard stat(directory, &info) == 0 else {
            if errno == ENOENT { throw LMDBError.directoryMissing(path: directory) }
            throw LMDBError.call(
                function: "stat", code: errno, message: String(cString: strerror(errno)), context: directory)
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { throw LMDBError.notADirectory(path: directory) }

        var env: OpaquePointer?
        try lmdbCheck(mdb_env_create(&env), "mdb_env_create", directory)
        guard let env else { throw LMDBError.from(ENOMEM, function: "mdb_env_create", context: directory) }
        do {
            try lmdbCheck(mdb_env_set_mapsize(env, configuration.mapSizeBytes), "mdb_env_set_mapsize", directory)
            try lmdbCheck(mdb_env_set_maxdbs(env, configuration.databasesMax), "mdb_env_set_maxdbs", directory)
            try lmdbCheck(mdb_env_set_maxreaders(env, configuration.readersMax), "mdb_env_set_maxreaders", directory)
            try lmdbCheck(
                mdb_env_open(env, directory, UInt32(MDB_NOTLS), mode_t(configuration.fileMode)), "mdb_env_open",
                directory)
            var deadReaders: Int32 = 0
            try lmdbCheck(mdb_reader_check(env, &deadReaders), "mdb_reader_check", directory)
        } catch {
            mdb_env_close(env)
            throw error
        }
        self.env = env
        self.directory = directory
        self.configuration = configuration
        self.resizeLock = .allocate(capacity: 1)
        pthread_rwlock_init(resizeLock, nil)
        var envInfo = MDB_envinfo()
        mdb_env_info(env, &envInfo)
        self.currentMapSizeBytes = envInfo.me_mapsize
    }

    deinit {
        close()
        pthread_rwlock_destroy(resizeLock)
        resizeLock.deallocate()
    }

    /// Closes the environment. Every transaction must have ended. Calling it twice is harmless.
    public func close() {
        pthread_rwlock_wrlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        guard !closed else { return }
        closed = true
        mdb_env_close(env)
    }

    /// The current size of the memory map in bytes.
    public var mapSizeBytes: Int {
        pthread_rwlock_rdlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        return currentMapSizeBytes
    }

    /// Opens a named database, creating it if it does not exist.
    public func openDatabase(_ name: String) throws -> LMDBDatabase {
        try write { txn in try txn.openDatabase(name) }
    }

    /// Runs `body` in a read-only transaction that sees one consistent snapshot of the store.
    @discardableResult
    public func read<T>(_ body: (borrowing LMDBTransaction) throws -> T) throws -> T {
        try withTransaction(readOnly: true) { txn in
            defer { mdb_txn_abort(txn.handle) }
            return try body(txn)
        }
    }

    /// Runs `body` in a write transaction and commits it durably when `body` returns.
    ///
    /// If `body` throws, the transaction is aborted and nothing it wrote is kept. If the map is
    /// full, the transaction is aborted, the map doubles (up to `mapSizeBytesMax`) and `body`
    /// runs again from the start, so `body` must not have effects outside the transaction.
    @discardableResult
    public func write<T>(_ body: (borrowing LMDBTransaction) throws -> T) throws -> T {
        while true {
            do {
                return try withTransaction(readOnly: false) { txn in
                    let result: T
                    do {
                        result = try body(txn)
                    } catch {
                        mdb_txn_abort(txn.handle)
                        throw error
                    }
                    // mdb_txn_commit frees the transaction whether or not it succeeds.
                    try lmdbCheck(mdb_txn_commit(txn.handle), "mdb_txn_commit", self.directory)
                    return result
                }
            } catch let error as LMDBError where error.code == MDB_MAP_FULL {
                try growMap()
            }
        }
    }

    private func withTransaction<T>(readOnly: Bool, _ body: (borrowing LMDBTransaction) throws -> T) throws -> T {
        while true {
            pthread_rwlock_rdlock(resizeLock)
            precondition(!closed, "LMDB environment \(directory) used after close")
            var handle: OpaquePointer?
            let code = mdb_txn_begin(env, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &handle)
            if code == MDB_MAP_RESIZED {
                // Another process grew the map: adopt its size and begin again.
                pthread_rwlock_unlock(resizeLock)
                try adoptForeignMapSize()
                continue
            }
            defer { pthread_rwlock_unlock(resizeLock) }
            try lmdbCheck(code, "mdb_txn_begin", directory)
            guard let handle else { throw LMDBError.from(ENOMEM, function: "mdb_txn_begin", context: directory) }
            let txn = LMDBTransaction(handle: handle, context: directory)
            return try body(txn)
        }
    }

    private func growMap() throws {
        pthread_rwlock_wrlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        guard currentMapSizeBytes < configuration.mapSizeBytesMax else {
            throw LMDBError.mapSizeLimitReached(mapSizeBytesMax: configuration.mapSizeBytesMax, context: directory)
        }
        let next = min(currentMapSizeBytes * 2, configuration.mapSizeBytesMax)
        try lmdbCheck(mdb_env_set_mapsize(env, next), "mdb_env_set_mapsize", directory)
        currentMapSizeBytes = next
    }

    private func adoptForeignMapSize() throws {
        pthread_rwlock_wrlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        try lmdbCheck(mdb_env_set_mapsize(env, 0), "mdb_env_set_mapsize", directory)
        var envInfo = MDB_envinfo()
        mdb_env_info(env, &envInfo)
        currentMapSizeBytes = envInfo.me_mapsize
    }
}
