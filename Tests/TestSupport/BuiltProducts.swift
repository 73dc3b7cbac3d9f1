import Foundation

/// Executables SwiftPM built beside the test binary (`.build/<triple>/<configuration>/`).
public enum BuiltProducts {
    /// The path of the executable `name`, or an error saying where it was looked for.
    public static func path(of name: String) throws -> String {
        let testBinary = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var folder = URL(fileURLWithPath: testBinary).deletingLastPathComponent()
        while folder.path != "/" {
            let candidate = folder.appendingPathComponent(name).path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            folder.deleteLastPathComponent()
        }
        throw TestSupportError("the executable \(name) was not found in the folders above \(testBinary); run `swift build --build-tests`")
    }
}
