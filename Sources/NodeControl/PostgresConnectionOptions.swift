import Foundation

/// Where and how to connect to a PostgreSQL server through libpq.
///
/// Its `description` never shows the password; use it in logs and errors.
public struct PostgresConnectionOptions: Sendable, Equatable, CustomStringConvertible {
    /// A host name, an IP address, or an absolute path to the folder holding the Unix socket.
    public var host: String
    public var port: Int
    public var user: String
    public var database: String
    public var password: String?
    /// libpq's `connect_timeout`: how long to wait for the connection, in seconds.
    public var connectTimeoutSeconds: Int = 5
    /// Shown in `pg_stat_activity.application_name` and, on a standby, in `pg_stat_replication`.
    public var applicationName: String = "pgquorum"
    /// Server settings sent at connection start, such as `statement_timeout`.
    public var settings: [String: String] = [:]
    /// Opens a physical replication connection (`replication=true`) instead of a normal one.
    public var replication: Bool = false
    /// A connection URI (`postgresql://h1:p1,h2:p2/db?target_session_attrs=read-write`) that
    /// libpq expands; its settings win over host, port and database.
    public var uri: String?

    public init(host: String, port: Int, user: String, database: String, password: String? = nil) {
        self.host = host
        self.port = port
        self.user = user
        self.database = database
        self.password = password
    }

    /// Connects through a URI, e.g. the formation's multi-host URI.
    public init(uri: String, user: String, password: String? = nil) {
        self.init(host: "", port: 0, user: user, database: "", password: password)
        self.uri = uri
    }

    /// The libpq keyword/value pairs, in a stable order. With a URI, `dbname` carries it and
    /// comes first (libpq expands it, then later keywords override).
    func keywordValues() -> [(String, String)] {
        var pairs: [(String, String)] =
            uri.map { [("dbname", $0)] } ?? [("host", host), ("port", String(port)), ("dbname", database)]
        pairs += [
            ("user", user),
            ("connect_timeout", String(connectTimeoutSeconds)),
            ("application_name", applicationName),
        ]
        if let password { pairs.append(("password", password)) }
        if replication { pairs.append(("replication", "true")) }
        if !settings.isEmpty {
            let options = settings.sorted { $0.key < $1.key }
                .map { "-c \($0.key)=\(escapeOptionValue($0.value))" }
                .joined(separator: " ")
            pairs.append(("options", options))
        }
        return pairs
    }

    public var description: String {
        (uri.map { "\($0) user=\(user)" } ?? "host=\(host) port=\(port) user=\(user) dbname=\(database)")
            + (password == nil ? "" : " password=********")
    }

    /// Replaces every occurrence of the password in `text`, for messages that might echo it.
    func redact(_ text: String) -> String {
        guard let password, !password.isEmpty else { return text }
        return text.replacingOccurrences(of: password, with: "********")
    }
}

/// libpq's `options` splits on spaces; a backslash escapes a space or a backslash.
private func escapeOptionValue(_ value: String) -> String {
    var escaped = ""
    for character in value {
        if character == " " || character == "\\" { escaped.append("\\") }
        escaped.append(character)
    }
    return escaped
}
