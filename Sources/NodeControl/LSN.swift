/// PostgreSQL's `pg_lsn` text form `X/Y` (two hex numbers: high and low 32 bits).
public enum LSNFormat {
    /// Parses `16/B374D848`; nil for anything else.
    public static func parse(_ text: String) -> UInt64? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let high = UInt32(parts[0], radix: 16), let low = UInt32(parts[1], radix: 16) else { return nil }
        return UInt64(high) << 32 | UInt64(low)
    }

    public static func format(_ lsn: UInt64) -> String {
        String(UInt32(lsn >> 32), radix: 16, uppercase: true) + "/" + String(UInt32(truncatingIfNeeded: lsn), radix: 16, uppercase: true)
    }
}
