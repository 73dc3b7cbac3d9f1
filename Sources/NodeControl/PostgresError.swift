/// An error talking to PostgreSQL. Descriptions never contain the password.
public enum PostgresError: Error, Equatable, CustomStringConvertible {
    /// The connection could not be established.
    case connectionFailed(target: String, message: String)
    /// The server rejected a statement, or the connection broke while running it.
    case queryFailed(target: String, sqlState: String?, message: String, query: String)
    /// A result did not have the shape the caller expected.
    case unexpectedResult(target: String, query: String, message: String)

    /// The SQLSTATE code, when the server sent one.
    public var sqlState: String? {
        if case .queryFailed(_, let state, _, _) = self { return state }
        return nil
    }

    public var description: String {
        switch self {
        case .connectionFailed(let target, let message):
            return "could not connect to PostgreSQL at \(target): \(message)"
        case .queryFailed(let target, let state, let message, let query):
            let code = state.map { " [SQLSTATE \($0)]" } ?? ""
            return "PostgreSQL at \(target) refused \(abbreviate(query)): \(message)\(code)"
        case .unexpectedResult(let target, let query, let message):
            return "PostgreSQL at \(target) answered \(abbreviate(query)) unexpectedly: \(message)"
        }
    }
}

private func abbreviate(_ query: String) -> String {
    let oneLine = query.split(whereSeparator: \.isNewline).joined(separator: " ")
    return oneLine.count <= 120 ? "\"\(oneLine)\"" : "\"\(oneLine.prefix(117))...\""
}
