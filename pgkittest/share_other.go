//go:build !unix

package pgkittest

import "context"

// runServer shares a server among the binaries of a go test run on Unix
// only; elsewhere each binary starts its own.
func runServer(context.Context) (string, bool) { return "", false }
