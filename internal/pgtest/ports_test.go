package pgtest

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// Ports come from below the ephemeral range, where no outgoing connection
// can take one before the server binds it, and they are free to listen on.
func TestFreePortIsBelowTheEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	seen := map[int]bool{}
	for i := 0; i < 50; i++ {
		port, err := freePort()
		require.NoError(t, err)
		require.GreaterOrEqual(t, port, lowestPort)
		require.Less(t, port, low, "port %d is in the ephemeral range from %d", port, low)
		seen[port] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		require.NoError(t, err)
		require.NoError(t, l.Close())
	}
	require.Greater(t, len(seen), 40, "ports are spread so that parallel test processes rarely pick the same one")
}
