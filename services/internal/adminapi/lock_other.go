//go:build !unix

package adminapi

// lockFile is a no-op where flock is missing: the store's mutex still
// serializes writes within one process.
func lockFile(string) (func(), error) { return func() {}, nil }
