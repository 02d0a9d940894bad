"""Development tooling (never shipped in the wheel or the image): deploy checks, and the demo,
benchmarks and embedded servers once they move out of the package."""
