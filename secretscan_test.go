package pgkit

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// ReachableText is every text reachable from v, for the secrets scans: its
// %v, %+v and %#v; for an error, the same for each error of its chain (as
// errors.As walks it); and every string held anywhere in it, through
// pointers, interfaces, structs (exported fields or not), slices and maps.
// A secret kept in a field of an error deep in a chain, which %#v shows
// only as a pointer, cannot hide from it. Exported for pgkit_test.
func ReachableText(v any) string {
	var b strings.Builder
	var chain func(err error, depth int)
	chain = func(err error, depth int) {
		if err == nil || depth > 20 {
			return
		}
		fmt.Fprintf(&b, "%v\n%+v\n%#v\n", err, err, err)
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			chain(u.Unwrap(), depth+1)
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				chain(e, depth+1)
			}
		}
	}
	if err, ok := v.(error); ok {
		chain(err, 0)
	} else {
		fmt.Fprintf(&b, "%v\n%+v\n%#v\n", v, v, v)
	}
	seen := map[uintptr]bool{}
	var walk func(rv reflect.Value, depth int)
	walk = func(rv reflect.Value, depth int) {
		if !rv.IsValid() || depth > 16 {
			return
		}
		switch rv.Kind() {
		case reflect.String:
			b.WriteString(rv.String())
			b.WriteByte('\n')
		case reflect.Pointer:
			if rv.IsNil() || seen[rv.Pointer()] {
				return
			}
			seen[rv.Pointer()] = true
			walk(rv.Elem(), depth+1)
		case reflect.Interface:
			walk(rv.Elem(), depth+1)
		case reflect.Struct:
			for i := range rv.NumField() {
				walk(rv.Field(i), depth+1)
			}
		case reflect.Slice:
			if rv.Type().Elem().Kind() == reflect.Uint8 {
				b.Write(rv.Bytes())
				b.WriteByte('\n')
				return
			}
			fallthrough
		case reflect.Array:
			for i := range min(rv.Len(), 1000) {
				walk(rv.Index(i), depth+1)
			}
		case reflect.Map:
			for it := rv.MapRange(); it.Next(); {
				walk(it.Key(), depth+1)
				walk(it.Value(), depth+1)
			}
		}
	}
	walk(reflect.ValueOf(v), 0)
	return b.String()
}

func TestScrubEncode(t *testing.T) {
	require.Equal(t, `COPY from stdin failed: unable to encode ? into binary format for uuid (OID 2950)`,
		scrubEncode(`COPY from stdin failed: unable to encode "?" into binary format for uuid (OID 2950): cannot parse UUID not-a-uuid`))
	require.Equal(t, `failed to encode args[0]: unable to encode ? into text format for int4 (OID 23)`,
		scrubEncode(`failed to encode args[0]: unable to encode main.T{A:1234} into text format for int4 (OID 23): cannot find encode plan`))
	require.Equal(t, `unable to encode ?`, scrubEncode(`unable to encode 12345`), "an unknown shape keeps nothing after the head")
	require.Equal(t, `no encode error here`, scrubEncode(`no encode error here`))
}
