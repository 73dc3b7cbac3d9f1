import Crypto

/// HMAC-SHA-256 from swift-crypto, for the witness handshake: both sides prove they hold the
/// cluster's shared secret without sending it (DESIGN §5 rule 5), and for the replication
/// password derived from it.
public enum Hashing {
    /// The size of a SHA-256 digest, and so of an HMAC-SHA-256 proof.
    public static let digestBytes = SHA256.byteCount

    public static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    /// Whether two byte strings are equal, in a time that depends only on their lengths (a
    /// proof must not leak how many of its first bytes were right).
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
