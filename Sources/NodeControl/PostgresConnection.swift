import CLibPQ

#if canImport(Glibc)
import Glibc
#endif

/// The rows of a query result, in text format, copied out of libpq.
public struct PostgresResult: Sendable, Equatable {
    public var columns: [String]
    public var rows: [[String?]]
    /// The number of rows a command affected (`PQcmdTuples`), when it reports one.
    public var affectedRows: Int?

    /// The value of `column` in row `row`; nil for SQL NULL or a column that does not exist.
    public func value(_ row: Int, _ column: String) -> String? {
        guard row < rows.count, let index = columns.firstIndex(of: column) else { return nil }
        return rows[row][index]
    }
}

/// One blocking libpq connection. Not thread-safe: use it from one task at a time.
public final class PostgresConnection {
    private var handle: OpaquePointer?
    public let options: PostgresConnectionOptions
    /// Lives as long as the connection: libpq's notice processor writes into it.
    private let noticeBox = NoticeBox()

    private final class NoticeBox {
        static let kept = 100
        var notices: [String] = []
    }

    /// Connects, waiting at most `options.connectTimeoutSeconds`.
    public init(_ options: PostgresConnectionOptions) throws(PostgresError) {
        self.options = options
        let pairs = options.keywordValues()
        let keywords = pairs.map { strdup($0.0) } + [nil]
        let values = pairs.map { strdup($0.1) } + [nil]
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        let connection = keywords.map { UnsafePointer($0) }.withUnsafeBufferPointer { keywordPointer in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { valuePointer in
                PQconnectdbParams(keywordPointer.baseAddress, valuePointer.baseAddress, options.uri == nil ? 0 : 1)
            }
        }
        guard let connection else {
            throw .connectionFailed(target: options.description, message: "libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = options.redact(Self.errorText(PQerrorMessage(connection)))
            PQfinish(connection)
            throw .connectionFailed(target: options.description, message: message)
        }
        self.handle = connection
        // Notices (WARNINGs such as the cancel hazard's) are kept for `takeNotices`, not
        // printed on stderr as libpq does by default.
        PQsetNoticeProcessor(
            connection,
            { context, message in
                guard let context, let message else { return }
                let box = Unmanaged<NoticeBox>.fromOpaque(context).takeUnretainedValue()
                if box.notices.count < NoticeBox.kept { box.notices.append(String(cString: message)) }
            }, Unmanaged.passUnretained(noticeBox).toOpaque())
    }

    /// The notices the server sent since the last call (at most 100), and forgets them.
    public func takeNotices() -> [String] {
        defer { noticeBox.notices = [] }
        return noticeBox.notices
    }

    deinit {
        close()
    }

    /// Closes the connection. Calling it twice is harmless.
    public func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    /// A handle that cancels what this connection is running, from any thread; nil when closed.
    public func canceller() -> PostgresCanceller? {
        handle.flatMap(PostgresCanceller.init)
    }

    /// True while the connection is open and libpq has not seen it break.
    public var isOpen: Bool {
        guard let handle else { return false }
        return PQstatus(handle) == CONNECTION_OK
    }

    /// Runs one statement with `$1…$n` parameters sent separately from the SQL text (never
    /// interpolated), and returns its rows in text format.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) throws(PostgresError) -> PostgresResult {
        guard let handle else {
            throw .queryFailed(target: options.description, sqlState: nil, message: "the connection is closed", query: sql)
        }
        let values = parameters.map { $0.map { strdup($0) } ?? nil }
        defer { values.forEach { free($0) } }
        let result = values.map { UnsafePointer($0) }.withUnsafeBufferPointer { valuePointer in
            PQexecParams(handle, sql, Int32(parameters.count), nil, valuePointer.baseAddress, nil, nil, 0)
        }
        guard let result else {
            throw .queryFailed(
                target: options.description, sqlState: nil,
                message: options.redact(Self.errorText(PQerrorMessage(handle))), query: sql)
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return Self.copy(result)
        default:
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            throw .queryFailed(
                target: options.description, sqlState: state,
                message: options.redact(Self.errorText(PQresultErrorMessage(result))), query: sql)
        }
    }

    /// Runs several statements without parameters in one round trip (one simple query: they
    /// run in one implicit transaction, and a failing one skips the rest), and returns their
    /// results in order. For reads that are made together often, such as an observation.
    public func queries(_ statements: [String]) throws(PostgresError) -> [PostgresResult] {
        let sql = statements.joined(separator: ";\n")
        guard let handle else {
            throw .queryFailed(target: options.description, sqlState: nil, message: "the connection is closed", query: sql)
        }
        guard PQsendQuery(handle, sql) == 1 else {
            throw .queryFailed(
                target: options.description, sqlState: nil,
                message: options.redact(Self.errorText(PQerrorMessage(handle))), query: sql)
        }
        var results: [PostgresResult] = []
        var failure: PostgresError?
        // Every result is read, to the end, whatever failed: the connection is then ready for
        // its next query.
        while let result = PQgetResult(handle) {
            defer { PQclear(result) }
            guard failure == nil else { continue }
            switch PQresultStatus(result) {
            case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
                results.append(Self.copy(result))
            default:
                let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
                failure = .queryFailed(
                    target: options.description, sqlState: state,
                    message: options.redact(Self.errorText(PQresultErrorMessage(result))), query: sql)
            }
        }
        if let failure { throw failure }
        guard results.count == statements.count else {
            throw .queryFailed(
                target: options.description, sqlState: nil,
                message: options.redact(Self.errorText(PQerrorMessage(handle))), query: sql)
        }
        return results
    }

    /// Runs a query expected to return exactly one row and one column, and returns that value.
    public func scalar(_ sql: String, _ parameters: [String?] = []) throws(PostgresError) -> String? {
        let result = try query(sql, parameters)
        guard result.rows.count == 1, result.columns.count == 1 else {
            throw .unexpectedResult(
                target: options.description, query: sql,
                message: "expected one row of one column, got \(result.rows.count) rows of \(result.columns.count) columns")
        }
        return result.rows[0][0]
    }

    private static func copy(_ result: OpaquePointer) -> PostgresResult {
        let columnCount = Int(PQnfields(result))
        let rowCount = Int(PQntuples(result))
        let columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        var rows: [[String?]] = []
        rows.reserveCapacity(rowCount)
        for row in 0..<rowCount {
            rows.append(
                (0..<columnCount).map { column in
                    PQgetisnull(result, Int32(row), Int32(column)) == 1
                        ? nil : String(cString: PQgetvalue(result, Int32(row), Int32(column)))
                })
        }
        let tuples = String(cString: PQcmdTuples(result))
        return PostgresResult(columns: columns, rows: rows, affectedRows: Int(tuples))
    }

    private static func errorText(_ pointer: UnsafePointer<CChar>?) -> String {
        guard let pointer else { return "unknown libpq error" }
        let text = String(cString: pointer)
        return text.split(whereSeparator: \.isNewline).joined(separator: " ")
    }
}

/// Cancels the statement a connection is running (libpq's `PQcancel`), from any thread: it
/// opens a connection of its own to the server, from the calling thread. A commit cancelled
/// while it waits for synchronous standbys stays committed locally and is acknowledged with a
/// WARNING (PostgreSQL's cancel hazard).
public final class PostgresCanceller: @unchecked Sendable {
    private let cancelObject: OpaquePointer

    init?(_ connection: OpaquePointer) {
        guard let object = PQgetCancel(connection) else { return nil }
        cancelObject = object
    }

    deinit { PQfreeCancel(cancelObject) }

    /// Sends the cancel request; true when the server received it (it may still have had
    /// nothing to cancel).
    @discardableResult
    public func cancel() -> Bool {
        var message = [CChar](repeating: 0, count: 256)
        return PQcancel(cancelObject, &message, Int32(message.count)) == 1
    }
}
