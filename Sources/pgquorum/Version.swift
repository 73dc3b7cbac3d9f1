/// The version printed by `pgquorum --version`.
enum PGQuorumVersion {
    static let current = "0.1.0"
}
