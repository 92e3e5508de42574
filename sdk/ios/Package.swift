// swift-tools-version:5.9
// The Causality SDK for iOS: a Swift layer (Sources/CausalitySDK) over the Go
// SDK bound by gomobile. `make mobile-ios` (macOS with Xcode) writes
// Causality.xcframework next to this file.
import PackageDescription

let package = Package(
    name: "CausalitySDK",
    platforms: [.iOS(.v13)],
    products: [.library(name: "CausalitySDK", targets: ["CausalitySDK"])],
    targets: [
        .binaryTarget(name: "Causality", path: "Causality.xcframework"),
        .target(name: "CausalitySDK", dependencies: ["Causality"]),
    ]
)
