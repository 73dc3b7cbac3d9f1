import CLMDB

#if canImport(Glibc)
import Glibc
#endif

/// An operating error from LMDB or from opening its files.
///
/// Every case reads as one sentence with the failing call, LMDB's own `mdb_strerror` text and
/// the path or database it concerned.
public enum LMDBError: Error, Equatable, CustomStringConvertible {
    /// The environment's directory does not exist; LMDB never creates it.
    case directoryMissing(path: String)
    /// The path exists but is not a directory.
    case notADirectory(path: String)
    /// An LMDB call returned a non-zero code.
    case call(function: String, code: Int32, message: String, context: String)
    /// The map would have to grow beyond `LMDBConfiguration.mapSizeBytesMax`.
    case mapSizeLimitReached(mapSizeBytesMax: Int, context: String)

    /// Builds the `.call` case from an LMDB return code, with `mdb_strerror` text.
    static func from(_ code: Int32, function: String, context: String) -> LMDBError {
        .call(function: function, code: code, message: String(cString: mdb_strerror(code)), context: context)
    }

    /// The LMDB or errno code, when the error came from a call.
    public var code: Int32? {
        if case .call(_, let code, _, _) = self { return code }
        return nil
    }

    public var description: String {
        switch self {
        case .directoryMissing(let path):
            return "LMDB directory \(path) does not exist; create it before opening the store"
        case .notADirectory(let path):
            return "LMDB path \(path) is not a directory"
        case .call(let function, let code, let message, let context):
            return "LMDB \(function) failed on \(context): \(message) (code \(code))"
        case .mapSizeLimitReached(let maximum, let context):
            return "LMDB map of \(context) is full at its configured maximum of \(maximum) bytes"
        }
    }
}

/// Throws an `LMDBError` when an LMDB call did not return `MDB_SUCCESS`.
@inline(__always)
func lmdbCheck(_ code: Int32, _ function: String, _ context: @autoclosure () -> String) throws(LMDBError) {
    if code != MDB_SUCCESS {
        throw LMDBError.from(code, function: function, context: context())
    }
}
