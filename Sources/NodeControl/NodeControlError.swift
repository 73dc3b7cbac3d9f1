/// An operation on a PostgreSQL instance failed. Each case names the instance and what was
/// tried; none prints a password.
public enum NodeControlError: Error, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    case dataDirectoryMissing(path: String)
    case notADataDirectory(path: String)
    case dataDirectoryNotEmpty(path: String)
    case startFailed(dataDirectory: String, reason: String, logTail: String)
    case notRunning(dataDirectory: String)
    case commandFailed(operation: String, error: ProcessError)
    case postgres(operation: String, error: PostgresError)
    case fileOperationFailed(operation: String, path: String, message: String)
    case promotionFailed(dataDirectory: String, reason: String)
    case rewindFailed(dataDirectory: String, reason: String)
    case unexpectedState(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let reason): return "invalid PostgreSQL node configuration: \(reason)"
        case .dataDirectoryMissing(let path): return "PostgreSQL data directory \(path) does not exist"
        case .notADataDirectory(let path): return "\(path) is not a PostgreSQL data directory (no PG_VERSION)"
        case .dataDirectoryNotEmpty(let path): return "\(path) already holds files; refusing to overwrite them"
        case .startFailed(let dataDirectory, let reason, let logTail):
            return "postgres in \(dataDirectory) did not start: \(reason)" + (logTail.isEmpty ? "" : "\n\(logTail)")
        case .notRunning(let dataDirectory): return "postgres in \(dataDirectory) is not running"
        case .commandFailed(let operation, let error): return "\(operation) failed: \(error)"
        case .postgres(let operation, let error): return "\(operation) failed: \(error)"
        case .fileOperationFailed(let operation, let path, let message): return "could not \(operation) \(path): \(message)"
        case .promotionFailed(let dataDirectory, let reason): return "promotion of \(dataDirectory) failed: \(reason)"
        case .rewindFailed(let dataDirectory, let reason): return "pg_rewind of \(dataDirectory) failed: \(reason)"
        case .unexpectedState(let reason): return reason
        }
    }
}
