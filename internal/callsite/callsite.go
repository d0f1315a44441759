// Package callsite finds the line of a user's code that issued a statement:
// the first frame of the calling goroutine outside pgkit, pgx and the
// runtime.
package callsite

import (
	"runtime"
	"strconv"
	"strings"
)

// Of returns file:line of the first frame above skip (0 is Of's caller)
// that is neither pgkit's (its root package, internal packages, cache and
// pgkittest) nor pgx's nor the runtime's, sync's or testing's; "unknown"
// when every frame is.
func Of(skip int) string {
	var pcs [64]uintptr
	n := runtime.Callers(skip+2, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if !inLibrary(f.Function) {
			return f.File + ":" + strconv.Itoa(f.Line)
		}
		if !more {
			return "unknown"
		}
	}
}

var libraries = []string{"github.com/pgkit-dev/pgkit.", "github.com/pgkit-dev/pgkit/internal/", "github.com/pgkit-dev/pgkit/pgkittest.",
	"github.com/pgkit-dev/pgkit/cache.", "github.com/jackc/", "runtime.", "sync.", "testing.", "net/http."}

func inLibrary(fn string) bool {
	for _, p := range libraries {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}
