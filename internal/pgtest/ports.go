package pgtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Ports the servers listen on are chosen below the kernel's ephemeral
// range. A port the kernel hands out for ":0" is also the pool it takes
// outgoing connections' local ports from, and the tests open thousands of
// connections: one of them can take the port in the moment between the
// check here and the server's bind ("Address already in use"). Below the
// range only another listener can, and picking at random makes that rare
// between test processes running side by side.
const lowestPort = 10000

// freePort returns a TCP port on 127.0.0.1, below the ephemeral range,
// that nothing listened on a moment ago.
func freePort() (int, error) {
	high := ephemeralLow()
	if high-lowestPort < 1000 {
		return anyFreePort()
	}
	for i := 0; i < 100; i++ {
		port := lowestPort + rand.IntN(high-lowestPort)
		free, err := portFree(port)
		if err != nil {
			return 0, err
		}
		if free {
			return port, nil
		}
	}
	return 0, errors.New("pgtest: find a free port: 100 ports below the ephemeral range were taken")
}

// portFree reports whether a listener could bind 127.0.0.1:port just now.
func portFree(port int) (bool, error) {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false, nil
	}
	if err := l.Close(); err != nil {
		return false, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	return true, nil
}

// anyFreePort lets the kernel pick.
func anyFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	return port, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range: Linux's
// ip_local_port_range, or the IANA range's 49152 where that cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil {
				return low
			}
		}
	}
	return 49152
}

// FreeAddr returns "127.0.0.1:port" for a server a test starts that can
// only be given an address, not a listener: a port below the ephemeral
// range (see freePort).
func FreeAddr(t testing.TB) string {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(port)
}
